"""Append-only per-worker result log (JSONL). Assembly reads journals, never worker memory.

Each line is one event: about one task (`start`, `candidates`, `done`, `error`, `timeout`, `killed`, `skipped`, the
solver events), or about a worker or the run (`ready`, `load-failed`, `icecuber-failed`), whose task id is JSON
null, which no task id can be. A writer flushes and fsyncs every line, so a crash, an OOM kill or the deadline
loses at most the line being written.

Candidates are journaled as soon as they are known, often more than once for the same test input (a solver's
running answer after each phase, icecuber's answer file after each depth). A `candidates` line may carry a
`snapshot` name: a later line with the same (task, test input, snapshot) replaces the earlier one instead of
adding to it, so re-journaling a better list never double-counts votes. Lines without one always add. Every
`candidates` line names the test input it answers (`input`, a hash of the grid): answers are only ever used for
the input they were found for, whatever another challenges file with the same task ids says.

The reader is total: a line that is not a well-formed event (torn, garbled, a field missing or of the wrong type)
and a journal that cannot be read (a folder in its place) are skipped and counted in `ReadStats`, never raised, so
assembly always writes a file from what it can read.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping


from .candidates import Candidate, grid_key, valid_candidates

log = logging.getLogger(__name__)

JOURNAL_GLOB = "journal-*.jsonl"
FINAL_EVENTS = ("done", "error", "timeout", "killed", "skipped")  # the task's attempt ended
GIVEN_UP = ("error", "timeout")  # settled for good: a resumed run does not try again


def input_key(grid) -> str:
    """What a candidates line says it answers: a hash of the test input (shape and cells)."""
    shape, cells = grid_key(grid)
    return hashlib.sha256(repr(shape).encode() + cells).hexdigest()[:16]


class JournalError(OSError):
    """A journal that cannot be written (its path is a folder, or the folder is read-only); names path and fix."""


class Journal:
    """One writer per file: each worker (and the main process) owns its own journal.

    A relayed journal (folder None, relay given) writes no file: it hands each record to relay(record). A Ray actor
    journals that way, and its driver appends the records to the actor's file (`append`), so each file keeps one
    writer even when the worker runs on another machine."""

    def __init__(self, folder: str | os.PathLike | None, name: str, relay: Callable[[dict], None] | None = None):
        if (folder is None) == (relay is None):
            raise ValueError("a journal writes into a folder or hands its records to a relay: give exactly one")
        self._name, self._relay, self._file, self.path = name, relay, None, None
        self._lock = threading.Lock()  # icecuber journals from its supervisor thread and the main thread
        if folder is not None:
            self._open(Path(folder) / f"journal-{name}.jsonl")

    def _open(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A torn last line from a killed predecessor would glue onto our first line; start on a fresh line.
            needs_newline = False
            if path.exists() and path.stat().st_size:
                with open(path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    needs_newline = f.read(1) != b"\n"
            self._file = open(path, "a", buffering=1)
        except OSError as e:
            raise JournalError(f"journal {path}: cannot be written ({e.strerror or e}); it must be a file in a "
                               f"writable folder: remove what is in its place, or run into another --out") from None
        if needs_newline:
            self._file.write("\n")

    def write(self, event: str, task_id: str | None, **data) -> None:
        """One event about task_id, or about this worker or the run when task_id is None."""
        record = {"t": round(time.time(), 3), "worker": self._name, "event": event, "task_id": task_id, **data}
        if self._relay is not None:
            self._relay(record)
        else:
            self.append(record)

    def append(self, record: dict) -> None:
        """One record as it is, time stamp and worker name included: a relayed journal's line, written here."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def run_event(self, event: str, **data) -> None:
        """An event about this worker or the run, not about a task."""
        self.write(event, None, **data)

    def candidates(self, task_id: str, test_index: int, test_input, candidates: Iterable[Candidate],
                   snapshot: str | None = None, **data) -> None:
        """One test input's candidates (test_input: the grid they answer); a later line with the same snapshot
        name replaces this one."""
        if snapshot is not None:
            data["snapshot"] = snapshot
        self.write("candidates", task_id, test_index=test_index, input=input_key(test_input),
                   candidates=[c.to_json() for c in candidates], **data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class ReadStats:
    """What a reading of the journals skipped, for the log and the report."""
    skipped: Counter = field(default_factory=Counter)  # why -> lines
    unreadable: list[str] = field(default_factory=list)  # journal files that could not be read at all

    def count(self, why: str) -> None:
        self.skipped[why] += 1

    def describe(self) -> str:
        """'' when nothing was skipped, else one line saying what."""
        parts = [f"{n} {why}" for why, n in sorted(self.skipped.items())]
        parts += [f"unreadable journal {path}" for path in self.unreadable]
        return "; ".join(parts)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def event_problem(record) -> str | None:
    """Why a parsed line is not a well-formed event, or None: what the reader checks before anything uses it."""
    if not isinstance(record, dict):
        return "not an object"
    if not _is_number(record.get("t")):
        return "no time stamp"
    if not isinstance(record.get("worker"), str) or not isinstance(record.get("event"), str):
        return "no worker or event name"
    if "task_id" not in record or not (record["task_id"] is None or isinstance(record["task_id"], str)):
        return "no task id (a string, or null for a run event)"
    if record["event"] == "candidates":
        index = record.get("test_index")
        if record["task_id"] is None or isinstance(index, bool) or not isinstance(index, int) or index < 0:
            return "a candidates line without its task and test index"
        if not isinstance(record.get("candidates"), list) or not isinstance(record.get("input"), str):
            return "a candidates line without its list or the test input it answers"
        if not isinstance(record.get("snapshot", ""), str):
            return "a snapshot name that is not a string"
    if record["event"].startswith("solver-") and not isinstance(record.get("solver"), str):
        return "a solver event without the solver's name"
    return None


def read_events(folder: str | os.PathLike, stats: ReadStats | None = None) -> Iterator[dict]:
    """Every well-formed event of every journal in the folder, in time order; the rest is skipped and counted.

    Time order across journals matters: a task killed on one worker and retried on another has its attempts in
    two files, and the last final event or snapshot must be the latest one, not the one in the last file. Each
    journal's own line order is kept (a merge, not a sort), even if the clock stepped back while it was written.
    """
    stats = stats if stats is not None else ReadStats()
    return heapq.merge(*(_journal_events(path, stats) for path in sorted(Path(folder).glob(JOURNAL_GLOB))),
                       key=lambda e: e["t"])


def _journal_events(path: Path, stats: ReadStats) -> Iterator[dict]:
    try:
        f = open(path, "rb")
    except OSError as e:
        log.error("%s: cannot be read (%s); its events are left out", path, e.strerror or e)
        stats.unreadable.append(str(path))
        return
    with f:
        for n, raw in enumerate(f, 1):
            try:
                record = json.loads(raw)
                problem = event_problem(record)
            except (ValueError, RecursionError):  # torn, garbled, not UTF-8, absurd numbers or nesting
                problem = "torn or garbled"
            if problem is not None:
                log.warning("%s: line %d skipped: %s", path, n, problem)
                stats.count(f"line(s) skipped: {problem}")
                continue
            yield record


@dataclass
class TaskRecord:
    """What the journals say about one task."""
    task_id: str
    status: str = "pending"  # the last final event, or 'started' / 'pending'
    candidates: dict[int, list[Candidate]] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # summed from start to final event, over attempts
    workers: list[str] = field(default_factory=list)
    # Solvers that ran to the end on this task (`solver-done`) with their answer for every test input read back.
    finished_solvers: set[str] = field(default_factory=set)


def collect(folder: str | os.PathLike, tasks: Mapping, stats: ReadStats | None = None) -> dict[str, TaskRecord]:
    """What the journals say about each of `tasks` ({task id: Task}). Candidates are kept only for the test input
    they answer (index and grid hash); grids that break the ARC rules are dropped with a warning. Events of task
    ids not in `tasks` are left out. Never raises on what the files hold: see the module docstring."""
    stats = stats if stats is not None else ReadStats()
    if not Path(folder).is_dir():
        return {}
    keys = {tid: [input_key(ex.input) for ex in task.test] for tid, task in tasks.items()}
    records: dict[str, TaskRecord] = {}
    started: dict[str, float] = {}  # task id -> its attempt's start (the final event may come from the supervisor)
    snapshots: dict[str, dict[tuple, list[Candidate]]] = {}  # task id -> (test index, snapshot) -> candidates
    answered: dict[tuple[str, str], set[int]] = {}  # (worker, task id) -> test inputs answered by its current solver
    for n, e in enumerate(read_events(folder, stats)):
        task_id = e["task_id"]
        if task_id is None or task_id not in keys:  # a run event, or another challenges' task
            continue
        rec = records.setdefault(task_id, TaskRecord(task_id))
        rec.events.append(e)
        event = e["event"]
        if event == "start":
            started[task_id] = e["t"]
            if rec.status == "pending":
                rec.status = "started"
            if e["worker"] not in rec.workers:
                rec.workers.append(e["worker"])
        elif event == "solver-start":
            answered[(e["worker"], task_id)] = set()
        elif event == "candidates":
            index = e["test_index"]
            if index >= len(keys[task_id]) or e["input"] != keys[task_id][index]:
                stats.count("candidate line(s) for another test input (another challenges file) left out")
                continue
            where = f"task {task_id} test {index} from {e['worker']}"
            cands = valid_candidates(e["candidates"],
                                     lambda why: log.warning("%s: invalid candidate dropped: %s", where, why))
            # A snapshot replaces its predecessor (dict keys keep their first position: order stays stable).
            snapshots.setdefault(task_id, {})[(index, e.get("snapshot") or f"line-{n}")] = cands
            answered.setdefault((e["worker"], task_id), set()).add(index)
        elif event == "solver-done":
            if answered.pop((e["worker"], task_id), set()) >= set(range(len(keys[task_id]))):
                rec.finished_solvers.add(e["solver"])
        elif event in FINAL_EVENTS:
            rec.status = event
            t0 = started.pop(task_id, None)
            if t0 is not None:
                rec.seconds += e["t"] - t0
    for task_id, by_snapshot in snapshots.items():
        for (test_index, _), cands in by_snapshot.items():
            records[task_id].candidates.setdefault(test_index, []).extend(cands)
    if stats.describe():
        log.warning("journals in %s: %s", folder, stats.describe())
    return records


def finished_solvers(records: Mapping[str, TaskRecord]) -> dict[str, set[str]]:
    """Per task, the solvers that ran to the end on it with every answer read back, over every run in the folder."""
    return {tid: set(rec.finished_solvers) for tid, rec in records.items() if rec.finished_solvers}


def settled_task_ids(records: Mapping[str, TaskRecord], solvers: Iterable[str]) -> set[str]:
    """Tasks a resumed run need not solve again: given up on for good (error, timeout), or done with every solver
    in `solvers` finished and its answers read back (a task whose answer lines are garbled is solved again). A run
    with a solver added works on the tasks that lack it."""
    wanted = set(solvers)
    return {tid for tid, rec in records.items()
            if rec.status in GIVEN_UP or (rec.status == "done" and wanted <= rec.finished_solvers)}
