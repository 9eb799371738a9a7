import json
import logging

import numpy as np
import pytest

from arc_submit.tasks import EMBEDDED_DATASETS, TaskFormatError, load_solutions, load_tasks, write_challenges


@pytest.mark.parametrize("name,count", [("arc-agi-1/training", 400), ("arc-agi-1/evaluation", 400),
                                        ("arc-agi-2/training", 1000), ("arc-agi-2/evaluation", 120)])
def test_embedded_datasets_load_with_solutions(name, count):
    tasks = load_tasks(name)
    assert len(tasks) == count
    assert all(t.has_solutions for t in tasks.values())
    assert any(len(t.test) > 1 for t in tasks.values())
    grid = next(iter(tasks.values())).train[0].input
    assert grid.dtype == np.int8 and grid.ndim == 2


def test_every_dataset_name_resolves():
    for name in EMBEDDED_DATASETS:
        assert load_tasks(name, limit=3)


def test_kaggle_file_round_trip(tmp_path, arc2_sample):
    path = tmp_path / "arc-agi_test_challenges.json"
    write_challenges(arc2_sample, path, with_solutions=True)
    raw = json.loads(path.read_text())
    assert all("output" not in ex for t in raw.values() for ex in t["test"])  # challenges carry no answers
    again = load_tasks(path)  # picks up the sibling *_solutions.json
    assert list(again) == list(arc2_sample)
    for tid, task in arc2_sample.items():
        for a, b in zip(task.test, again[tid].test):
            assert np.array_equal(a.input, b.input) and np.array_equal(a.output, b.output)
    sols = load_solutions(tmp_path / "arc-agi_test_solutions.json")
    assert set(sols) == set(arc2_sample)


def _write(tmp_path, obj, name="bad_challenges.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _one_task(arc2_sample):
    tid, task = next(iter(arc2_sample.items()))
    return tid, task.to_json()


@pytest.mark.parametrize("corrupt,expect", [
    (lambda t: t["train"][0]["input"][1].append(0), "train[0].input is ragged"),
    (lambda t: t["train"][0].update(output=[[0] * 31]), "train[0].output is 31 cells wide"),
    (lambda t: t["test"][0]["input"][0].__setitem__(0, 10), "test[0].input cell [0][0] is 10, outside 0..9"),
    (lambda t: t["test"][0]["input"][0].__setitem__(0, "3"), "test[0].input cell [0][0] is '3' (str)"),
    (lambda t: t["train"][0].update(input=[]), "train[0].input is not a non-empty list"),
    (lambda t: t["train"][0].pop("output"), "train[0] needs both 'input' and 'output'"),
    (lambda t: t.pop("test"), "'test' is missing"),
])
def test_bad_grids_name_file_task_and_place(tmp_path, arc2_sample, corrupt, expect):
    tid, raw = _one_task(arc2_sample)
    corrupt(raw)
    path = _write(tmp_path, {tid: raw})
    with pytest.raises(TaskFormatError) as err:
        load_tasks(path)
    msg = str(err.value)
    assert str(path) in msg and f"task {tid}" in msg and expect in msg


def test_truncated_json_names_the_file(tmp_path, arc2_sample):
    tid, raw = _one_task(arc2_sample)
    path = _write(tmp_path, json.dumps({tid: raw})[:-40])
    with pytest.raises(TaskFormatError, match="not valid JSON.*truncated or corrupt") as err:
        load_tasks(path)
    assert str(path) in str(err.value)


def test_skip_invalid_drops_only_the_bad_task(tmp_path, arc2_sample, caplog):
    raw = {tid: t.to_json() for tid, t in arc2_sample.items()}
    bad_id = list(raw)[2]
    raw[bad_id]["train"][0]["input"][0][0] = -1
    path = _write(tmp_path, raw)
    with caplog.at_level(logging.WARNING):
        tasks = load_tasks(path, skip_invalid=True)
    assert set(tasks) == set(raw) - {bad_id}
    assert bad_id in caplog.text


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(TaskFormatError, match="no such file, and not a dataset name"):
        load_tasks(tmp_path / "nope.json")
    with pytest.raises(TaskFormatError, match="arc-agi-2/evaluation"):
        load_tasks("arc-agi-3/evaluation")


def test_select_tasks_keeps_the_order_asked_and_names_a_missing_id(arc2_sample):
    from arc_submit.tasks import select_tasks

    ids = list(arc2_sample)
    picked = select_tasks(arc2_sample, [ids[3], ids[0]], "arc-agi-2/evaluation")
    assert list(picked) == [ids[3], ids[0]] and picked[ids[3]] is arc2_sample[ids[3]]
    with pytest.raises(TaskFormatError, match=r"arc-agi-2/evaluation: no task 0000beef among its \d+ tasks"):
        select_tasks(arc2_sample, [ids[0], "0000beef"], "arc-agi-2/evaluation")
