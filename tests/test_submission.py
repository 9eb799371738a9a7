import json

import numpy as np
import pytest

from arc_submit.candidates import Candidate
from arc_submit.select import select_attempts
from arc_submit.submission import assemble, score, validate, write_submission


def truth_submission(tasks):
    return {tid: [{"attempt_1": ex.output.tolist(), "attempt_2": [[0]]} for ex in t.test] for tid, t in tasks.items()}


def test_true_solutions_validate_and_score_one(arc2_eval, arc1_train):
    for tasks in (arc2_eval, arc1_train):
        sub = truth_submission(tasks)
        assert validate(sub, tasks) == []
        report = score(sub, {tid: [ex.output for ex in t.test] for tid, t in tasks.items()})
        assert report.score == 1.0 and report.tasks_fully_solved == len(tasks)


def _sample_ids(tasks):
    multi = next(tid for tid, t in tasks.items() if len(t.test) > 1)
    single = next(tid for tid, t in tasks.items() if len(t.test) == 1)
    return single, multi


CORRUPTIONS = {
    "missing task": (lambda s, a, b: s.pop(a), "{a}: missing"),
    "extra task": (lambda s, a, b: s.__setitem__("deadbeef", s[a]), "deadbeef: not in the challenges"),
    "wrong list length": (lambda s, a, b: s[b].pop(), "{b}: 1 entries for 2 test inputs"),
    "not a list": (lambda s, a, b: s.__setitem__(a, s[a][0]), "{a}: value is a dict, not a list"),
    "entry not an object": (lambda s, a, b: s[a].__setitem__(0, [[1]]), "{a}: test 0: entry is a list"),
    "missing attempt key": (lambda s, a, b: s[a][0].pop("attempt_2"), "{a}: test 0: missing attempt_2"),
    "unexpected key": (lambda s, a, b: s[a][0].__setitem__("attempt_3", [[1]]), "unexpected key 'attempt_3'"),
    "ragged grid": (lambda s, a, b: s[a][0].__setitem__("attempt_1", [[1, 2], [3]]),
                    "{a}: test 0: attempt_1 is ragged"),
    "31-wide grid": (lambda s, a, b: s[a][0].__setitem__("attempt_1", [[1] * 31]), "is 31 cells wide"),
    "31-tall grid": (lambda s, a, b: s[a][0].__setitem__("attempt_2", [[1]] * 31), "has 31 rows"),
    "value 10": (lambda s, a, b: s[b][1].__setitem__("attempt_1", [[10]]), "{b}: test 1: attempt_1 cell [0][0] is 10"),
    "negative value": (lambda s, a, b: s[a][0].__setitem__("attempt_1", [[-1]]), "is -1, outside 0..9"),
    "string cells": (lambda s, a, b: s[a][0].__setitem__("attempt_1", [["1"]]), "is '1' (str), not an int"),
    "float cells": (lambda s, a, b: s[a][0].__setitem__("attempt_1", [[1.0]]), "is 1.0 (float), not an int"),
    "bool cells": (lambda s, a, b: s[a][0].__setitem__("attempt_1", [[True]]), "is True (bool)"),
    "empty grid": (lambda s, a, b: s[a][0].__setitem__("attempt_1", []), "attempt_1 is not a non-empty list"),
    "empty row": (lambda s, a, b: s[a][0].__setitem__("attempt_1", [[]]), "row 0 is not a non-empty list"),
    "null grid": (lambda s, a, b: s[a][0].__setitem__("attempt_2", None), "attempt_2 is not a non-empty list"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_rejected_with_its_message(arc2_eval, name):
    a, b = _sample_ids(arc2_eval)
    sub = truth_submission(arc2_eval)
    corrupt, expected = CORRUPTIONS[name]
    corrupt(sub, a, b)
    problems = validate(sub, arc2_eval)
    assert len(problems) == 1, problems
    assert expected.format(a=a, b=b) in problems[0]


def test_all_problems_are_listed_not_just_the_first(arc2_eval):
    a, b = _sample_ids(arc2_eval)
    sub = truth_submission(arc2_eval)
    names = ["extra task", "missing attempt key", "unexpected key", "31-wide grid", "value 10"]
    for name in names:
        CORRUPTIONS[name][0](sub, a, b)
    problems = validate(sub, arc2_eval)
    assert len(problems) == len(names)
    for name in names:
        assert any(CORRUPTIONS[name][1].format(a=a, b=b) in p for p in problems), name
    assert validate([], arc2_eval) == ["submission is a list, not an object {task_id: [...]}"]


def test_half_right_submission_scores_exactly(arc2_eval):
    tasks = arc2_eval
    multi = [tid for tid, t in tasks.items() if len(t.test) == 2][:2]
    single = [tid for tid, t in tasks.items() if len(t.test) == 1][:2]
    chosen = {tid: tasks[tid] for tid in multi + single}
    sub = truth_submission(chosen)
    sub[multi[0]][1] = {"attempt_1": [[0]], "attempt_2": [[0]]}  # 1 of 2 tests right -> 0.5
    sub[single[0]][0]["attempt_2"], sub[single[0]][0]["attempt_1"] = sub[single[0]][0]["attempt_1"], [[0]]  # attempt_2 counts
    sub[single[1]][0] = {"attempt_1": [[0]], "attempt_2": [[0]]}  # 0
    report = score(sub, {tid: [ex.output for ex in t.test] for tid, t in chosen.items()})
    assert report.score == pytest.approx((0.5 + 1.0 + 1.0 + 0.0) / 4)
    assert {t.task_id: t.fraction for t in report.tasks} == {multi[0]: 0.5, multi[1]: 1.0, single[0]: 1.0, single[1]: 0.0}


def test_missing_task_scores_zero_not_error(arc2_sample):
    sols = {tid: [ex.output for ex in t.test] for tid, t in arc2_sample.items()}
    report = score({}, sols)
    assert report.score == 0.0 and len(report.tasks) == len(arc2_sample)


def test_assemble_fills_every_task_with_fallbacks(arc2_sample):
    tid = next(iter(arc2_sample))
    task = arc2_sample[tid]
    picked = select_attempts([Candidate(task.test[0].output, "llm")])
    sub = assemble(arc2_sample, {tid: [picked]})
    assert validate(sub, arc2_sample) == []
    assert sub[tid][0]["attempt_1"] == task.test[0].output.tolist()
    assert sub[tid][0]["attempt_2"] == task.test[0].input.tolist()  # fallback: the input copied
    other = list(arc2_sample)[1]
    assert sub[other][0] == {"attempt_1": arc2_sample[other].test[0].input.tolist(), "attempt_2": [[0]]}


def test_fallback_never_repeats_a_grid(arc2_sample):
    from arc_submit.submission import fallback_attempts
    assert fallback_attempts(np.array([[0]]), []) == [[[0]], [[0]]]  # only case left: input is the fallback grid
    assert fallback_attempts(np.array([[5]]), [[[5]]]) == [[[5]], [[0]]]


def test_atomic_write_leaves_no_temp_files(tmp_path, arc2_sample):
    sub = truth_submission(arc2_sample)
    path = write_submission(tmp_path / "out" / "submission.json", sub)
    assert json.loads(path.read_text()) == sub
    assert [p.name for p in path.parent.iterdir()] == ["submission.json"]


def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path, arc2_sample, monkeypatch):
    """The disk fills (or the process dies) after part of the new file was written: the previous submission is
    still there, byte for byte, and no temp file is left (a real SIGKILL mid-write: tests/test_kill.py)."""
    import os

    old = truth_submission(arc2_sample)
    path = write_submission(tmp_path / "submission.json", old)
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_submission(path, {tid: [] for tid in old})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["submission.json"]
