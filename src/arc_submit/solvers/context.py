"""What a worker lends every solver it runs: `SolverContext`.

The worker builds one per process, after its engine loads, and hands it to each solver call with that call's
`emit`. What solvers learn about the worker's engine lives here and carries from task to task: how fast it
samples (the speed model), whether training still fits in memory, the warm program executor. Nothing of it is
module state, so two engines in one process (tests, benchmarks) never share it, and a solver runs alone on a CPU
with `SolverContext.for_engine(engine)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from ..execution import ExecutionSettings, Executor
from .sampling import SpeedModel

if TYPE_CHECKING:
    from ..candidates import Candidate
    from ..llm.engine import Engine

log = logging.getLogger(__name__)

OOM_STREAK_LIMIT = 2  # training that ran out of memory this many times in a row is not tried again


@dataclass
class TrainingHealth:
    """Training's record on this worker's engine: out-of-memory failures in a row and, once they repeat, why
    training is off for the rest of the worker's tasks (a training step that did not fit twice will not fit)."""
    oom_streak: int = 0
    off_reason: str | None = None

    def succeeded(self) -> None:
        self.oom_streak = 0

    def ran_out_of_memory(self) -> int:
        """Count one failure; returns the streak (training is off from OOM_STREAK_LIMIT on)."""
        self.oom_streak += 1
        if self.oom_streak >= OOM_STREAK_LIMIT:
            self.off_reason = f"training ran out of memory {self.oom_streak} times in a row on this worker"
        return self.oom_streak


class WarmExecutor:
    """The program executor a worker keeps warm across tasks (starting one costs ~0.2 s per process), replaced
    when a task asks for other settings, closed with the context."""

    def __init__(self) -> None:
        self._settings: ExecutionSettings | None = None
        self._executor: Executor | None = None

    def for_settings(self, settings: ExecutionSettings) -> Executor:
        if self._executor is not None and self._settings != settings:
            self.close()
        if self._executor is None:
            self._settings, self._executor = settings, Executor(settings)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
        self._settings = self._executor = None


def log_note(task_id: str, kind: str, text: str) -> None:
    log.info("task %s note (%s): %s", task_id, kind, text)


def ignore_candidates(per_test: list[list[Candidate]]) -> None:
    """The emit of a solver run on its own: nobody journals its candidates before it returns them."""


@dataclass(frozen=True)
class SolverContext:
    engine: Engine | None  # None with engine kind "none" (solvers that need no model)
    speed: SpeedModel | None  # the engine's sampling speed, probed at its first sampling and refitted after each call
    training: TrainingHealth = field(default_factory=TrainingHealth)
    programs: WarmExecutor = field(default_factory=WarmExecutor)
    # (task id, kind, text): something a task's journal should say that is not a candidate (training fell back to
    # the base model, ...); the worker journals it at once as a `note` event, which the report shows.
    note: Callable[[str, str, str], None] = log_note
    # A solver's candidates per test input, as soon as it has them (after each phase): the worker journals them,
    # so a task killed later, or a phase that raises, keeps them. A solver may emit any number of times; each
    # emission replaces the last.
    emit: Callable[[list[list[Candidate]]], None] = ignore_candidates

    @classmethod
    def for_engine(cls, engine: Engine | None, note: Callable[[str, str, str], None] = log_note,
                   emit: Callable[[list[list[Candidate]]], None] = ignore_candidates) -> "SolverContext":
        return cls(engine, SpeedModel.for_engine(engine) if engine is not None else None, note=note, emit=emit)

    def emitting_to(self, emit: Callable[[list[list[Candidate]]], None]) -> "SolverContext":
        """The same worker parts, with one solver call's emit."""
        return replace(self, emit=emit)

    def close(self) -> None:
        """Stop what the context started (the program executor); the engine is the worker's to close."""
        self.programs.close()
