"""Merge ranked candidates from any number of solvers into attempt_1 / attempt_2 for one test input: slots go by
evidence, not by turns.

A grid's evidence is the sum, over the solvers that proposed it, of weight[solver] × the solver's support for it:
the support the solver states (the share of its samples that gave the grid, or the share of train examples the
program behind it reproduces), else the grid's share of that solver's votes for this test input. So:
- agreement adds up: a grid two unrelated methods found outranks what either found alone at the same strength;
- a 1-vote grid out of 8 samples (support 0.125) cannot push out icecuber's runner-up (1/2 of its two answers),
  while a grid most samples agree on (6 of 8) can take attempt_1;
- scores on different scales (mean log-prob, train fit, icecuber's own score) are never compared across solvers:
  they only order grids within one solver.
Ties: more solvers, then the solver's place in `priority`, then its own score, then the grid's bytes, so the same
input always gives the same attempts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .candidates import Candidate, GridGroup, ranked_by_grid
from .tasks import Grid


@dataclass(frozen=True, eq=False)
class Choice:
    """A selected attempt and where it came from."""
    grid: Grid
    votes: int
    solvers: tuple[str, ...]  # every solver that proposed this grid, in priority order
    score: float  # best solver score among its proposers
    per_solver_votes: dict = field(default_factory=dict)
    evidence: float = 0.0  # see the module docstring


def _priority_index(priority: Sequence[str]):
    rank = {name: i for i, name in enumerate(priority)}
    # Unknown solvers come after the named ones, alphabetically, so the order never depends on input order.
    return lambda name: (rank.get(name, len(rank)), name)


@dataclass(frozen=True)
class _Tally:
    """One grid's proposals, per solver: votes, best own score, and the support it states (when it does)."""
    votes: dict[str, int]
    score: dict[str, float]
    support: dict[str, float]

    @classmethod
    def of(cls, group: GridGroup[Candidate]) -> "_Tally":
        votes: dict[str, int] = defaultdict(int)
        score: dict[str, float] = defaultdict(lambda: float("-inf"))
        support: dict[str, float] = {}
        for c in group.members:
            votes[c.solver] += max(int(c.count), 0)
            score[c.solver] = max(score[c.solver], float(c.score))
            if c.support is not None:
                support[c.solver] = max(support.get(c.solver, 0.0), float(c.support))
        return cls(dict(votes), dict(score), support)


def select_attempts(candidates: Iterable[Candidate], priority: Sequence[str] = (), k: int = 2,
                    weights: Mapping[str, float] | None = None) -> list[Choice]:
    """Up to k distinct grids, best evidence first (see the module docstring)."""
    candidates = list(candidates)
    totals: dict[str, int] = defaultdict(int)
    for c in candidates:
        totals[c.solver] += max(int(c.count), 0)
    order = _priority_index(priority)
    weights = weights or {}

    def evidence(t: _Tally) -> float:
        return sum(weights.get(s, 1.0) * t.support.get(s, v / totals[s] if totals[s] else 0.0)
                   for s, v in t.votes.items())

    def rank(group: GridGroup[Candidate]) -> tuple:
        t = _Tally.of(group)
        top = min(t.votes, key=order)
        return (-round(evidence(t), 9), -len(t.votes), order(top), -t.score[top])

    out = []
    for group in ranked_by_grid(((c.grid, c) for c in candidates), rank)[:k]:
        t = _Tally.of(group)
        out.append(Choice(group.grid, sum(t.votes.values()), tuple(sorted(t.votes, key=order)), max(t.score.values()),
                          t.votes, evidence(t)))
    return out
