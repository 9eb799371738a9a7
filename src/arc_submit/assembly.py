"""From the journals to submission.json: one pure step, run before the first task, while the run goes on, at the
end, and by `arc-submit assemble` on a finished or killed run's folder.

    journals ─► collect (per task, per test input: every valid candidate) ─► select ─► fallback ─► submission

Reading the journals, not any process's memory, is what makes a killed run lose nothing already found: whatever
state the run died in, assembling its folder gives a complete, valid file holding every journaled answer.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .journal import ReadStats, TaskRecord, collect
from .select import Choice, select_attempts
from .submission import assemble, write_submission
from .tasks import Task

log = logging.getLogger(__name__)

SUBMISSION_NAME = "submission.json"


@dataclass(frozen=True)
class Assembly:
    submission: dict  # {task id: [{"attempt_1": grid, "attempt_2": grid}, ...]}: every task, valid
    choices: dict  # {task id: [[Choice, ...] per test input]}: where each attempt came from
    records: dict  # {task id: TaskRecord}: what the journals say
    read: ReadStats  # the journal lines and files that could not be used
    @property
    def answered(self) -> int:
        """Test inputs with at least one solver's answer (not only the fallback)."""
        return sum(bool(c) for per_test in self.choices.values() for c in per_test)


def choose(tasks: Mapping[str, Task], records: Mapping[str, TaskRecord], priority: Sequence[str],
           weights: Mapping[str, float] | None = None) -> dict:
    """{task id: [[Choice, ...] per test input]} from the journaled candidates."""
    return {tid: [select_attempts(records[tid].candidates.get(i, []), priority, weights=weights) if tid in records else []
                  for i in range(len(task.test))]
            for tid, task in tasks.items()}


def assemble_journals(tasks: Mapping[str, Task], journal_dir: str | os.PathLike, priority: Sequence[str],
                      weights: Mapping[str, float] | None = None) -> Assembly:
    stats = ReadStats()
    records = collect(journal_dir, tasks, stats)
    choices = choose(tasks, records, priority, weights)
    return Assembly(assemble(tasks, choices), choices, records, stats)


def write_assembly(out_dir: str | os.PathLike, tasks: Mapping[str, Task], priority: Sequence[str],
                   skipped: Mapping[str, list] | None = None, weights: Mapping[str, float] | None = None) -> Assembly:
    """Assemble the journals under out_dir and replace out_dir/submission.json atomically. `skipped`: entries for
    task ids the challenges file holds but no valid Task was made of (skip_invalid), so the file lists them all.

    The file's modification time is the moment the journals were read, not the (later) moment it was written:
    every line journaled before that time is in it; a line written during the assembly waits for the next one."""
    t0 = time.time()
    out_dir = Path(out_dir)
    result = assemble_journals(tasks, out_dir / "journals", priority, weights)
    write_submission(out_dir / SUBMISSION_NAME, {**result.submission, **(skipped or {})}, mtime=t0)
    log.info("submission.json assembled: %d tasks, %d of %d test inputs answered (%.2f s)", len(tasks),
             result.answered, sum(len(t.test) for t in tasks.values()), time.time() - t0)
    return result


class PeriodicAssembly:
    """Re-assembles when something new was journaled (a task settled, a solver emitted, icecuber answered), at
    most every `min_gap_s` (assembly reads every journal), and at least every `interval_s`. A failure is logged
    (the previous file stays in place) and never stops the run. `clock` is injectable for tests."""

    def __init__(self, out_dir, tasks, priority, interval_s: float, min_gap_s: float = 10.0, clock=time.time,
                 skipped=None, weights=None):
        self.out_dir, self.tasks, self.priority, self.clock, self.skipped = out_dir, tasks, priority, clock, skipped
        self.weights = weights
        self.interval_s, self.min_gap_s = interval_s, min(min_gap_s, interval_s)
        self.last_at = float("-inf")
        self.last_progress = None
        self.writes = 0

    def maybe(self, progress) -> bool:
        """progress: anything that changes when something new was journaled (a tuple of counters)."""
        since = self.clock() - self.last_at
        if since < self.interval_s and (progress == self.last_progress or since < self.min_gap_s):
            return False
        self.last_progress = progress
        self.now()
        return True

    def now(self) -> Assembly | None:
        self.last_at = self.clock()
        try:
            result = write_assembly(self.out_dir, self.tasks, self.priority, self.skipped, self.weights)
        except Exception:
            log.exception("assembling submission.json failed; the previous file stays in place")
            return None
        self.writes += 1
        return result
