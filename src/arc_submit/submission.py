"""submission.json: assemble it, validate it the way Kaggle's scorer needs, score it with the official metric.

Format: {task_id: [{"attempt_1": grid, "attempt_2": grid}, ... one per test input, in order]}.

Fallback, for a test input no solver answered (or answered only once): the test input itself, then a 1×1
black grid. Copying the input is right for a few tasks and costs nothing; the 1×1 grid keeps the two attempts
distinct and valid. The file is valid whatever the solvers did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .fileio import write_json_atomic
from .candidates import grid_key
from .select import Choice
from .tasks import Grid, Task, grid_problem

ATTEMPT_KEYS = ("attempt_1", "attempt_2")
FALLBACK_GRID = [[0]]


def fallback_attempts(test_input: Grid, have: Sequence[list]) -> list[list]:
    """Fill up to two attempts with the documented fallback (see module docstring), never repeating a grid."""
    out = list(have)
    for extra in (np.asarray(test_input).tolist(), FALLBACK_GRID):
        if len(out) >= 2:
            break
        if all(grid_key(extra) != grid_key(g) for g in out):
            out.append(extra)
    while len(out) < 2:  # the input is itself [[0]]: repeat it (both attempts must be present)
        out.append(FALLBACK_GRID)
    return out


def assemble(tasks: Mapping[str, Task], choices: Mapping[str, Sequence[Sequence[Choice]]]) -> dict:
    """Every task, one entry per test input, two attempts each; missing answers take the fallback."""
    submission = {}
    for task_id, task in tasks.items():
        per_test = choices.get(task_id, [])
        entries = []
        for i, ex in enumerate(task.test):
            picked = per_test[i] if i < len(per_test) else []
            grids = [np.asarray(c.grid).tolist() for c in picked[:2]]
            attempts = fallback_attempts(ex.input, grids)
            entries.append(dict(zip(ATTEMPT_KEYS, attempts)))
        submission[task_id] = entries
    return submission


def validate(submission, tasks: Mapping[str, Task], skipped: Mapping[str, int] | None = None,
             extra_allowed: bool = False) -> list[str]:
    """Every problem Kaggle's scorer would trip on, one line each; an empty list means valid. skipped: task ids
    the challenges hold but no Task was made of (skip_invalid) with their test input counts: their entries are
    checked too. extra_allowed: task ids beyond `tasks` are not problems (scoring a slice of a whole file)."""
    expected = {tid: len(task.test) for tid, task in tasks.items()}
    expected.update(skipped or {})
    return validate_shape(submission, expected, extra_allowed)


def validate_shape(submission, expected: Mapping[str, int], extra_allowed: bool = False) -> list[str]:
    """validate() against {task id: number of test inputs}: all Kaggle's rules need to know of the challenges."""
    if not isinstance(submission, dict):
        return [f"submission is a {type(submission).__name__}, not an object {{task_id: [...]}}"]
    problems = []
    for task_id in expected:
        if task_id not in submission:
            problems.append(f"task {task_id}: missing (every challenge task needs an entry)")
    if not extra_allowed:
        for task_id in submission:
            if task_id not in expected:
                problems.append(f"task {task_id}: not in the challenges (extra task ids are rejected)")
    for task_id, n_tests in expected.items():
        entries = submission.get(task_id)
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.append(f"task {task_id}: value is a {type(entries).__name__}, not a list of attempt objects")
            continue
        if len(entries) != n_tests:
            problems.append(f"task {task_id}: {len(entries)} entries for {n_tests} test inputs")
        for i, entry in enumerate(entries):
            where = f"task {task_id}: test {i}"
            if not isinstance(entry, dict):
                problems.append(f"{where}: entry is a {type(entry).__name__}, not an object with attempt_1/attempt_2")
                continue
            for key in ATTEMPT_KEYS:
                if key not in entry:
                    problems.append(f"{where}: missing {key}")
                    continue
                problem = grid_problem(entry[key])
                if problem:
                    problems.append(f"{where}: {key} {problem}")
            for key in entry:
                if key not in ATTEMPT_KEYS:
                    problems.append(f"{where}: unexpected key {key!r} (only attempt_1, attempt_2)")
    return problems


@dataclass(frozen=True)
class TaskScore:
    task_id: str
    solved: int  # test inputs where either attempt is exactly right
    total: int

    @property
    def fraction(self) -> float:
        return self.solved / self.total if self.total else 0.0


@dataclass(frozen=True)
class ScoreReport:
    score: float  # the official metric: mean over tasks of the fraction of test inputs solved
    tasks: tuple[TaskScore, ...]

    @property
    def tasks_fully_solved(self) -> int:
        return sum(t.solved == t.total for t in self.tasks)

    def table(self) -> str:
        lines = [f"{'task':<10} {'solved':>6} {'tests':>5} {'score':>6}"]
        for t in self.tasks:
            lines.append(f"{t.task_id:<10} {t.solved:>6} {t.total:>5} {t.fraction:>6.3f}")
        lines.append(f"score {self.score:.4f} over {len(self.tasks)} tasks "
                     f"({self.tasks_fully_solved} fully solved, sum {sum(t.fraction for t in self.tasks):.2f})")
        return "\n".join(lines)


def _same(attempt, truth: Grid) -> bool:
    if grid_problem(attempt) is not None:
        return False
    return grid_key(attempt) == grid_key(truth)


def score(submission: Mapping, solutions: Mapping[str, Sequence[Grid]]) -> ScoreReport:
    """Official metric. A task absent from the submission, or a malformed entry, scores 0 for what it misses."""
    results = []
    for task_id, truths in solutions.items():
        entries = submission.get(task_id) if isinstance(submission, Mapping) else None
        solved = 0
        for i, truth in enumerate(truths):
            entry = entries[i] if isinstance(entries, list) and i < len(entries) else None
            if isinstance(entry, dict) and any(_same(entry.get(k), truth) for k in ATTEMPT_KEYS):
                solved += 1
        results.append(TaskScore(task_id, solved, len(truths)))
    mean = sum(t.fraction for t in results) / len(results) if results else 0.0
    return ScoreReport(mean, tuple(results))


def write_submission(path: str | os.PathLike, submission: dict, mtime: float | None = None) -> Path:
    return write_json_atomic(path, submission, mtime=mtime)
