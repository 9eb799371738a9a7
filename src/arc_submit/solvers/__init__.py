"""Solvers: each turns tasks into ranked candidates per test input (arc_submit.select.Candidate)."""
