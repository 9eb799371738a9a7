"""Reading journals: a task retried on another worker has its attempts in two files; what the journals say must
follow time, not file names (seen: a retry on worker-0 read before the killed attempt on worker-1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arc_submit.journal import Journal, collect, read_events, input_key
from arc_submit.tasks import Example, Task

TEST_INPUT = np.array([[5]], dtype=np.int8)
TASKS = {"a": Task("a", (Example(TEST_INPUT, TEST_INPUT),), (Example(TEST_INPUT),))}


def write_journal(folder, name, events):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"worker": name, **e}) for e in events]
    (folder / f"journal-{name}.jsonl").write_text("\n".join(lines) + "\n")


def candidates(t, grid, snapshot="votes"):
    return {"t": t, "event": "candidates", "task_id": "a", "test_index": 0, "snapshot": snapshot,
            "input": input_key(TEST_INPUT), "candidates": [{"grid": grid, "solver": "s", "count": 1}]}


def test_a_retry_on_an_earlier_named_journal_wins(tmp_path):
    # worker-1 started the task, journaled grid [[1]], and died; worker-0 retried it later and found [[2]].
    write_journal(tmp_path, "worker-1", [{"t": 1.0, "event": "start", "task_id": "a", "attempt": 0},
                                         candidates(2.0, [[1]]),
                                         {"t": 3.0, "event": "killed", "task_id": "a"}])
    write_journal(tmp_path, "worker-0", [{"t": 4.0, "event": "start", "task_id": "a", "attempt": 1},
                                         candidates(5.0, [[2]]),
                                         {"t": 6.0, "event": "done", "task_id": "a"}])
    starts = [e["attempt"] for e in read_events(tmp_path) if e["event"] == "start"]
    assert starts == [0, 1]
    record = collect(tmp_path, TASKS)["a"]
    assert record.status == "done"  # the latest final event, though worker-1's file is read last
    assert [c.grid.tolist() for c in record.candidates[0]] == [[[2]]]  # the later snapshot replaced the earlier


def test_each_journal_keeps_its_own_line_order_if_the_clock_stepped_back(tmp_path):
    write_journal(tmp_path, "worker-0", [candidates(5.0, [[1]]), candidates(4.0, [[2]])])
    assert [c.grid.tolist() for c in collect(tmp_path, TASKS)["a"].candidates[0]] == [[[2]]]


def test_a_relayed_journal_hands_records_on_and_append_writes_them_as_they_are(tmp_path):
    """What a Ray actor and its driver do: the actor's journal writes no file, the driver appends its records."""
    records = []
    relayed = Journal(None, "worker-3", relay=records.append)
    relayed.write("start", "task-a", attempt=1)
    relayed.run_event("ready", load_s=0.5)
    assert [r["event"] for r in records] == ["start", "ready"] and records[0]["worker"] == "worker-3"
    with Journal(tmp_path, "worker-3") as driver_side:
        for record in records:
            driver_side.append(record)
    assert list(read_events(tmp_path)) == records  # time stamps and worker names kept
    with pytest.raises(ValueError, match="exactly one"):
        Journal(tmp_path, "worker-3", relay=records.append)
