"""The global deadline and each task's share of what is left of it.

A task that starts gets `remaining_time × workers / remaining_tasks` (the tasks still to start, itself included),
capped by `max_task_s`. Time a solved task does not use is not lost: the next task's share is computed from the
clock, so it returns to the pool automatically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """An absolute wall-clock instant (time.time(), so it means the same in every process). The one deadline type
    of the package: solvers, sampling and the engines' training all take it; a float instant is turned into one
    at the edge (a worker's spawn arguments), never reconciled further in."""
    at: float

    def __post_init__(self):
        # A NaN instant never passes and an infinite one never comes: the overrun kill would never fire.
        if not math.isfinite(self.at):
            raise ValueError(f"a deadline must be a finite time.time() instant, got {self.at!r}")

    @classmethod
    def in_seconds(cls, seconds: float) -> "Deadline":
        return cls(time.time() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.time())

    def passed(self) -> bool:
        return time.time() >= self.at

    def earlier(self, other: "Deadline") -> "Deadline":
        return self if self.at <= other.at else other

    def within(self, seconds: float) -> "Deadline":
        """This deadline, or `seconds` from now if that comes first (a phase's share of what is left)."""
        return self.earlier(Deadline.in_seconds(seconds))


def run_deadline(time_limit_s: float, safety_margin_s: float, started_at: float | None = None) -> Deadline:
    """The notebook's wall-clock limit minus a margin for assembly, validation and the report."""
    if not (0 <= safety_margin_s < time_limit_s):  # also False for NaN
        raise ValueError(f"safety margin {safety_margin_s}s must be at least 0 and below the {time_limit_s}s limit")
    start = time.time() if started_at is None else started_at
    return Deadline(start + time_limit_s - safety_margin_s)


def allot_task_seconds(remaining_s: float, workers: int, remaining_tasks: int,
                       max_task_s: float | None = None, min_task_s: float = 0.0) -> float:
    """One task's share of the time left: remaining × workers / remaining_tasks, within [min, max]."""
    if remaining_tasks <= 0 or remaining_s <= 0:
        return 0.0
    share = remaining_s * workers / remaining_tasks
    # No single task may outlive the run, however few tasks are left.
    share = min(share, remaining_s)
    if max_task_s is not None:
        share = min(share, max_task_s)
    return max(share, min(min_task_s, remaining_s))


def allot_task_deadline(run: Deadline, workers: int, remaining_tasks: int,
                        max_task_s: float | None = None, min_task_s: float = 0.0) -> Deadline:
    seconds = allot_task_seconds(run.remaining(), workers, remaining_tasks, max_task_s, min_task_s)
    return Deadline(time.time() + seconds).earlier(run)
