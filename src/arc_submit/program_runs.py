"""`arc-submit execute`: run a JSONL file of generated programs on their tasks and journal the results.

Input lines: {"task_id": ..., "code": ...}. Each program runs on every train input, then every test input, of
its task. Output lines (written as each chunk of tasks finishes, so an interrupted run keeps what it did):
{"task_id", "line", "train": [grid or {"error", "message"}], "test": [...], "reproduces_train",
"reproduces_test" (null when the test outputs are unknown), "seconds"}.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .execution import OK, ERROR_CLASSES, Executor, ExecutionSettings, ProgramResult
from .tasks import Task, TaskFormatError

log = logging.getLogger(__name__)
TASKS_PER_CHUNK = 32


@dataclass(frozen=True)
class ProgramLine:
    line: int  # 1-based line number in the programs file
    task_id: str
    code: str


def read_programs(path: str | Path, tasks: dict[str, Task]) -> list[ProgramLine]:
    """Every line of a programs JSONL file, checked against the tasks; errors name the file, line and fix."""
    programs = []
    with open(path) as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise TaskFormatError(f"{path}: line {number}: not valid JSON ({e.msg}); each line must be "
                                      f'{{"task_id": ..., "code": ...}}') from None
            if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) \
                    or not isinstance(row.get("code"), str):
                raise TaskFormatError(f'{path}: line {number}: needs a string "task_id" and a string "code"')
            if row["task_id"] not in tasks:
                raise TaskFormatError(f"{path}: line {number}: task {row['task_id']} is not in the challenges; "
                                      f"pass the --challenges file or dataset the programs were written for")
            programs.append(ProgramLine(number, row["task_id"], row["code"]))
    return programs


@dataclass
class RunSummary:
    programs: int = 0
    seconds: float = 0.0
    classes: Counter = field(default_factory=Counter)  # "ok" or the first error class, per program
    reproduce_train: int = 0
    reproduce_all: int = 0  # train and test, counted only where the test outputs are known
    with_test_outputs: int = 0  # programs whose task has known test outputs

    def lines(self) -> list[str]:
        rate = self.programs / self.seconds if self.seconds else 0.0
        counts = ", ".join(f"{k}: {self.classes[k]}" for k in (OK, *ERROR_CLASSES) if self.classes[k])
        out = [f"{self.programs} programs in {self.seconds:.1f} s: {rate:.0f} program runs/s",
               f"outcomes (first error per program): {counts or 'none'}",
               f"reproduce all train outputs: {self.reproduce_train}"]
        if self.with_test_outputs:
            out.append(f"reproduce train and test outputs: {self.reproduce_all} "
                       f"(of {self.with_test_outputs} programs whose test outputs are known)")
        return out


def result_row(program: ProgramLine, task: Task, result: ProgramResult) -> dict:
    n_train = len(task.train)
    train_ok = result.matches([ex.output for ex in task.train] + [None] * len(task.test))
    test_known = task.has_solutions
    return {"task_id": program.task_id, "line": program.line,
            "train": [o.to_json() for o in result.outcomes[:n_train]],
            "test": [o.to_json() for o in result.outcomes[n_train:]],
            "reproduces_train": train_ok,
            "reproduces_test": result.matches([None] * n_train + [ex.output for ex in task.test])
            if test_known else None,
            "seconds": round(result.seconds, 4)}


def run_programs_file(programs_path: str | Path, tasks: dict[str, Task], out_path: str | Path,
                      settings: ExecutionSettings) -> RunSummary:
    programs = read_programs(programs_path, tasks)
    by_task: dict[str, list[ProgramLine]] = {}
    for p in programs:
        by_task.setdefault(p.task_id, []).append(p)
    task_ids = list(by_task)
    summary = RunSummary(programs=len(programs))
    started = time.monotonic()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with Executor(settings) as executor, open(out_path, "w") as out, \
            tqdm(total=len(programs), desc="programs", unit="prog", disable=None) as bar:
        for at in range(0, len(task_ids), TASKS_PER_CHUNK):
            chunk = task_ids[at: at + TASKS_PER_CHUNK]
            batches = [([p.code for p in by_task[tid]], [ex.input for ex in (*tasks[tid].train, *tasks[tid].test)])
                       for tid in chunk]
            per_task = executor.run_tasks(batches, on_result=lambda: bar.update(1))
            rows = []
            for tid, results in zip(chunk, per_task):
                for program, result in zip(by_task[tid], results):
                    row = result_row(program, tasks[tid], result)
                    summary.classes[result.error or OK] += 1
                    summary.reproduce_train += row["reproduces_train"]
                    if row["reproduces_test"] is not None:
                        summary.with_test_outputs += 1
                        summary.reproduce_all += row["reproduces_train"] and row["reproduces_test"]
                    rows.append(row)
            rows.sort(key=lambda r: r["line"])
            out.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
            out.flush()
    summary.seconds = time.monotonic() - started
    log.info("executed %d programs (%d distinct runs) in %.1f s, %d worker restarts", len(programs),
             executor.programs_run, summary.seconds, executor.restarts)
    return summary
