"""Append-only per-worker result log (JSONL). Assembly reads journals, never worker memory.

Each line is one event about one task: `start`, `candidates`, `done`, `error`, `timeout`, `killed`, `skipped`.
A writer flushes and fsyncs every line, so a crash, an OOM kill or the deadline loses at most the line being
written; readers skip a torn last line instead of failing.

Candidates are journaled as soon as they are known, often more than once for the same test input (a solver's
running answer after each phase, icecuber's answer file after each depth). A `candidates` line may carry a
`snapshot` name: a later line with the same (task, test input, snapshot) replaces the earlier one instead of
adding to it, so re-journaling a better list never double-counts votes. Lines without one always add.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .candidates import Candidate, valid_candidates

log = logging.getLogger(__name__)

JOURNAL_GLOB = "journal-*.jsonl"
FINAL_EVENTS = ("done", "error", "timeout", "killed", "skipped")  # the task is settled; a resume skips it


class Journal:
    """One writer per file: each worker (and the main process) owns its own journal."""

    def __init__(self, folder: str | os.PathLike, name: str):
        self.path = Path(folder) / f"journal-{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._name = name
        # A torn last line from a killed predecessor would glue onto our first line; start on a fresh line.
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        else:
            needs_newline = False
        self._file = open(self.path, "a", buffering=1)
        self._lock = threading.Lock()  # icecuber journals from its supervisor thread and the main thread
        if needs_newline:
            self._file.write("\n")

    def write(self, event: str, task_id: str, **data) -> None:
        record = {"t": round(time.time(), 3), "worker": self._name, "event": event, "task_id": task_id, **data}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def candidates(self, task_id: str, test_index: int, candidates: Iterable[Candidate],
                   snapshot: str | None = None, **data) -> None:
        """One test input's candidates; a later line with the same snapshot name replaces this one."""
        if snapshot is not None:
            data["snapshot"] = snapshot
        self.write("candidates", task_id, test_index=test_index,
                   candidates=[c.to_json() for c in candidates], **data)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_events(folder: str | os.PathLike) -> Iterator[dict]:
    """Every readable event of every journal in the folder, in time order. Torn or garbled lines are skipped.

    Time order across journals matters: a task killed on one worker and retried on another has its attempts in
    two files, and the last final event or snapshot must be the latest one, not the one in the last file. Each
    journal's own line order is kept (a merge, not a sort), even if the clock stepped back while it was written.
    """
    return heapq.merge(*(_journal_events(path) for path in sorted(Path(folder).glob(JOURNAL_GLOB))),
                       key=lambda e: e.get("t", 0.0))


def _journal_events(path: Path) -> Iterator[dict]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s: line %d is torn or garbled (a writer died mid-line); skipped", path, n)
                continue
            if isinstance(record, dict) and "event" in record and "task_id" in record:
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


def collect(folder: str | os.PathLike) -> dict[str, TaskRecord]:
    """What the journals say, per task. Candidates whose grid breaks the ARC rules are dropped with a warning."""
    records: dict[str, TaskRecord] = {}
    started: dict[str, float] = {}  # task id -> its attempt's start (the final event may come from the supervisor)
    snapshots: dict[str, dict[tuple, list[Candidate]]] = {}  # task id -> (test index, snapshot) -> candidates
    for n, e in enumerate(read_events(folder)):
        if e["task_id"] == "-":  # worker lifecycle events (ready), not about a task
            continue
        rec = records.setdefault(e["task_id"], TaskRecord(e["task_id"]))
        rec.events.append(e)
        event = e["event"]
        if event == "start":
            started[e["task_id"]] = e["t"]
            if rec.status == "pending":
                rec.status = "started"
            if e["worker"] not in rec.workers:
                rec.workers.append(e["worker"])
        elif event == "candidates":
            where = f"task {e['task_id']} test {e.get('test_index')} from {e['worker']}"
            cands = valid_candidates(e.get("candidates", []),
                                     lambda why: log.warning("%s: invalid candidate dropped: %s", where, why))
            # A snapshot replaces its predecessor (dict keys keep their first position: order stays stable).
            snapshot = (int(e["test_index"]), e.get("snapshot") or f"line-{n}")
            snapshots.setdefault(e["task_id"], {})[snapshot] = cands
        elif event in FINAL_EVENTS:
            rec.status = event
            t0 = started.pop(e["task_id"], None)
            if t0 is not None:
                rec.seconds += e["t"] - t0
    for task_id, by_snapshot in snapshots.items():
        for (test_index, _), cands in by_snapshot.items():
            records[task_id].candidates.setdefault(test_index, []).extend(cands)
    return records


def finished_solvers(folder: str | os.PathLike) -> dict[str, set[str]]:
    """Per task, the solvers that ran to the end on it (`solver-done`), over every run in the folder."""
    out: dict[str, set[str]] = {}
    for e in read_events(folder):
        if e["event"] == "solver-done":
            out.setdefault(e["task_id"], set()).add(e.get("solver", ""))
    return out


def settled_task_ids(folder: str | os.PathLike, solvers: Iterable[str] | None = None) -> set[str]:
    """Tasks a resumed run need not solve again: given up on for good (error, timeout), or done by every solver
    in `solvers` (None: done at all). A run with a solver added works on the tasks that lack it."""
    wanted = set(solvers or ())
    done = finished_solvers(folder)
    settled = set()
    for tid, rec in collect(folder).items():
        if rec.status in ("error", "timeout"):
            settled.add(tid)
        elif rec.status == "done":
            legacy = not any(e["event"] == "solver-done" for e in rec.events)  # journals before solver events
            if legacy or wanted <= done.get(tid, set()):
                settled.add(tid)
    return settled
