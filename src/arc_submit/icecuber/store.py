"""An icecuber run's results behind one lock: every program run's record and the answers pooled per test input.

The supervisor thread writes (a record as each run ends, answers as each answer file is read); the handle's
readers (poll, records, candidates) take snapshots from any thread. Records are journaled to runs.jsonl the
moment they are added and answers are handed to on_answer the moment they are read, so a kill loses nothing
already learnt, and a resumed run reads both back from the work folder.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, defaultdict
from dataclasses import asdict

from ..candidates import Candidate
from .files import StagedTasks, parse_answer_file
from .records import ANSWERED, CRASHED, MALFORMED, NO_ANSWER, NOTHING_FOUND, UNFINISHED, AnswerPool, RunRecord

log = logging.getLogger(__name__)


class ResultStore:
    """Records and answer pools of one work folder; on_answer(task_id, test_index, ranked candidates so far)
    runs on the writing thread as each answer file is read, and an exception there is logged and ignored."""

    def __init__(self, staged: StagedTasks, on_answer=None):
        self.staged = staged
        self.on_answer = on_answer
        self._lock = threading.Lock()
        self._records: list[RunRecord] = []
        self._pools: dict[tuple[str, int], AnswerPool] = defaultdict(AnswerPool)

    def keep_finished_runs(self) -> int:
        """Resume: keep the finished runs an earlier run journaled in this folder, with their answers (handed to
        on_answer again: journaling them is idempotent). Returns how many were kept."""
        runs_file = self.staged.runs_file
        kept: dict[tuple[int, int], RunRecord] = {}
        for line in runs_file.read_text().splitlines() if runs_file.exists() else []:
            try:
                record = RunRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a torn last line from a killed run
            kept[(record.index, record.depth)] = record  # the last word on each run wins
        finished = [r for r in kept.values() if r.status not in UNFINISHED]
        with open(runs_file, "w") as f:  # rewritten: only the finished runs, once each
            for record in finished:
                f.write(json.dumps(asdict(record)) + "\n")
        self._records = finished
        for record in finished:
            if record.status == ANSWERED:  # a fresh record: reading again must not repeat the kept one's problems
                self.read_answers(RunRecord(record.index, record.depth, record.task_id, record.test_index))
        return len(finished)

    # ---- writing (the supervisor thread) -----------------------------------------------------------------
    def add(self, record: RunRecord) -> None:
        with self._lock:
            self._records.append(record)
            with open(self.staged.runs_file, "a") as f:  # journaled as it happens
                f.write(json.dumps(asdict(record)) + "\n")

    def read_answers(self, record: RunRecord) -> str:
        """Pool the answers of the record's answer file (noting its problems on the record), hand the test input's
        merged ranking to on_answer, and return the run's status."""
        path = self.staged.answer_path(record.index, record.depth)
        if not path.exists():
            return CRASHED if record.exit_code else NO_ANSWER
        parsed = parse_answer_file(path, self.staged)
        record.problems.extend(parsed.problems)
        if parsed.task_id is not None and (parsed.task_id, parsed.test_index) != (record.task_id, record.test_index):
            record.problems.append(f"{path}: answers {parsed.task_id} test {parsed.test_index}, staged index "
                                   f"{record.index} was {record.task_id} test {record.test_index}; trusting the file")
        record.n_answers = len(parsed.answers)
        if not parsed.answers:
            if parsed.nothing_found:
                return NOTHING_FOUND
            return MALFORMED if parsed.problems else (CRASHED if record.exit_code else NO_ANSWER)
        with self._lock:
            pool = self._pools[(parsed.task_id, parsed.test_index)]
            for grid, score in parsed.answers:
                pool.add(grid, score, record.depth)
            ranked = pool.ranked()
        if self.on_answer is not None:
            try:
                self.on_answer(parsed.task_id, parsed.test_index, ranked)
            except Exception:  # journaling is the caller's business; never let it stop the programs
                log.exception("icecuber: on_answer failed for %s test %d", parsed.task_id, parsed.test_index)
        return ANSWERED

    # ---- reading (any thread) ----------------------------------------------------------------------------
    def records(self) -> list[RunRecord]:
        with self._lock:
            return list(self._records)

    def status_counts(self) -> Counter:
        with self._lock:
            return Counter(r.status for r in self._records)

    def candidates(self) -> dict[tuple[str, int], list[Candidate]]:
        """Ranked candidates per (task id, test index) with an answer: best score first, one per distinct grid."""
        with self._lock:
            return {key: pool.ranked() for key, pool in self._pools.items()}
