"""The icecuber run driven against a TEST DOUBLE of its `run` program (tests/doubles/fake_icecuber.py).

The real program cannot ship with the tests (it is built from top-quarks/ARC-solution); the double follows its
contract (folders, command line, answer files) and misbehaves on demand. Real ARC tasks, real subprocesses.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil
import pytest

from arc_submit.icecuber import DepthStage, IcecuberUnavailable, candidates_to_json, find_program, start_run
from arc_submit.icecuber import files as icecuber_files
from arc_submit.icecuber.files import parse_answer_file, parse_grid_text, read_staged_tasks, stage_tasks
from arc_submit.icecuber.records import AnswerPool, RunRecord
from arc_submit.icecuber.store import ResultStore
from arc_submit.tasks import write_challenges

DOUBLE = Path(__file__).parent / "doubles" / "fake_icecuber.py"
FAST = {"poll_interval_s": 0.02, "processes": 2}


def make_fake_icecuber(folder: Path, **behaviour) -> Path:
    """A 'built copy' whose `run` is the test double, with the given behaviour."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "behaviour.json").write_text(json.dumps(behaviour))
    run = folder / "run"
    run.write_text(f"#!/bin/sh\nFAKE_ICECUBER_BEHAVIOUR='{folder / 'behaviour.json'}' "
                   f"exec '{sys.executable}' '{DOUBLE}' \"$@\"\n")
    run.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def small(arc2_eval):
    """Four real tasks, two of them with several test inputs."""
    multi = [tid for tid, t in arc2_eval.items() if len(t.test) > 1][:2]
    single = [tid for tid, t in arc2_eval.items() if len(t.test) == 1][:2]
    return {tid: arc2_eval[tid] for tid in sorted(multi + single)}


def assert_nothing_left_behind(handle) -> None:
    pids = [r.pid for r in handle.records() if r.pid]
    children_file = handle.work_dir / "fake_children.txt"
    if children_file.exists():
        pids += [int(p) for p in children_file.read_text().split()]
    deadline = time.time() + 5  # a killed process can take a moment to be reaped by init
    alive = pids
    while alive and time.time() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.05)
    assert not alive, f"processes left behind: {alive}"
    ours = [p for p in psutil.Process().children(recursive=True) if "fake_icecuber" in " ".join(p.cmdline())]
    assert not ours


def assert_status_logged_for_every_task(caplog, tasks) -> None:
    logged = caplog.text
    for tid in tasks:
        assert f"icecuber task {tid}:" in logged


def run_to_end(tmp_path, tasks, behaviour, timeout=30.0, **options):
    fake = make_fake_icecuber(tmp_path / "icecuber", **behaviour)
    handle = start_run(fake, tasks, tmp_path / "work", **{**FAST, **options})
    finished = handle.wait(time.time() + timeout)
    return handle, finished


def test_staged_files_reread_equal_the_challenges(tmp_path, arc2_sample):
    staged = stage_tasks(arc2_sample, tmp_path / "run1")
    assert read_staged_tasks(staged) == {tid: t.to_json() for tid, t in arc2_sample.items()}
    expected = sorted((tid, i) for tid, t in arc2_sample.items() for i in range(len(t.test)))
    assert sorted(staged.samples) == expected  # every test input exactly once
    assert all("output" not in ex for tid in arc2_sample for ex in read_staged_tasks(staged)[tid]["test"])
    manifest = json.loads((tmp_path / "run1" / "manifest.json").read_text())
    assert [tuple(s) for s in manifest["samples"]] == list(staged.samples)
    with pytest.raises(FileExistsError):  # a work folder is never reused
        stage_tasks(arc2_sample, tmp_path / "run1")


def test_ids_the_program_rejects_get_a_stand_in(tmp_path, arc2_sample):
    tid, task = next(iter(arc2_sample.items()))
    renamed = {"My-Task.v2": task, tid: task}
    staged = stage_tasks(renamed, tmp_path / "w")
    assert set(staged.program_ids.values()) == set(renamed)
    assert all(len(alias) == 8 for alias in staged.program_ids)
    assert read_staged_tasks(staged)["My-Task.v2"] == task.to_json()


def test_normal_answers_land_on_the_right_test_input(tmp_path, arc2_sample, caplog):
    caplog.set_level(logging.INFO, logger="arc_submit.icecuber")
    handle, finished = run_to_end(tmp_path, arc2_sample, {"default": "normal"})
    assert finished
    per_test = handle.candidates()
    assert set(per_test) == {(tid, i) for tid, t in arc2_sample.items() for i in range(len(t.test))}
    for (tid, i), cands in per_test.items():
        # The double's best answer is the test input itself: a direct check of the (task id, test index) mapping.
        assert np.array_equal(cands[0].grid, arc2_sample[tid].test[i].input)
        assert np.array_equal(cands[1].grid, np.rot90(arc2_sample[tid].test[i].input, -1))
        assert all(c.solver == "icecuber" for c in cands)
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
        assert cands[0].score == pytest.approx(0.5 + 33 / 100)  # the best score over the depths
        assert cands[0].detail.startswith("depths 2,3,4,23,33")
    records = handle.records()
    assert len(records) == len(per_test) * 5 and {r.status for r in records} == {"answered"}
    # The anytime schedule: a depth-2 pass over every input before any deeper stage starts.
    assert [r.depth for r in records][:len(per_test)] == [2] * len(per_test)
    assert [r.depth for r in records][len(per_test):2 * len(per_test)] == [3] * len(per_test)
    assert (handle.work_dir / "logs" / "0_2.out").read_text().startswith("Running only task # 0")
    assert len((handle.work_dir / "runs.jsonl").read_text().splitlines()) == len(records)
    assert_status_logged_for_every_task(caplog, arc2_sample)
    assert_nothing_left_behind(handle)
    as_json = candidates_to_json(arc2_sample, per_test)
    assert all(len(as_json[tid]) == len(t.test) for tid, t in arc2_sample.items())


def test_crash_on_one_test_input_of_a_multi_test_task(tmp_path, small, caplog):
    caplog.set_level(logging.INFO, logger="arc_submit.icecuber")
    multi = next(tid for tid, t in small.items() if len(t.test) > 1)
    crashing = next(tid for tid in small if tid != multi)
    handle, finished = run_to_end(tmp_path, small, {"samples": {f"{multi}_1": "crash", crashing: "crash"}},
                                  depths=(3, 23))
    assert finished
    per_test = handle.candidates()
    assert (multi, 1) not in per_test and not any(k[0] == crashing for k in per_test)
    assert np.array_equal(per_test[(multi, 0)][0].grid, small[multi].test[0].input)
    for tid, task in small.items():
        if tid not in (multi, crashing):
            assert all(np.array_equal(per_test[(tid, i)][0].grid, ex.input) for i, ex in enumerate(task.test))
    crashed = [r for r in handle.records() if r.status == "crashed"]
    assert {(r.task_id, r.test_index) for r in crashed} == {(multi, 1), (crashing, 0)}
    assert all(r.exit_code != 0 for r in crashed)
    assert "planted crash" in (handle.work_dir / "logs" / f"{crashed[0].index}_3.err").read_text()
    statuses = handle.statuses()
    assert "test 0: 3 answered, 23 answered; test 1: 3 crashed, 23 crashed" == statuses[multi]
    assert_status_logged_for_every_task(caplog, small)
    assert_nothing_left_behind(handle)


def test_hang_is_stopped_at_the_deadline_and_answers_are_kept(tmp_path, small, caplog):
    caplog.set_level(logging.INFO, logger="arc_submit.icecuber")
    hanging = next(iter(small))
    fake = make_fake_icecuber(tmp_path / "icecuber", samples={hanging: "hang"})
    started = time.time()
    handle = start_run(fake, small, tmp_path / "work", deadline=started + 4, depths=(3, 23), **FAST)
    finished = handle.wait(started + 60)  # the run's own deadline (4 s) comes first
    assert not finished and time.time() - started < 8
    statuses = {(r.task_id, r.test_index, r.depth): r.status for r in handle.records()}
    assert all(s == "deadline" for (tid, _, d), s in statuses.items() if tid == hanging and d == 3)
    answered = [k for k in handle.candidates()]
    assert answered and all(tid != hanging for tid, _ in answered)
    assert all(statuses[(tid, i, 3)] == "answered" for tid, i in answered)
    assert len(statuses) == sum(len(t.test) for t in small.values()) * 2  # every run has a status, not-run included
    assert_status_logged_for_every_task(caplog, small)
    assert_nothing_left_behind(handle)  # the hung program's own child died with its process group


def test_hang_past_a_stage_time_cap_is_timed_out(tmp_path, small):
    handle, finished = run_to_end(tmp_path, small, {"depths": {"23": "hang"}},
                                  depths=(3, DepthStage(23, time_factor=1.0)), min_run_s=1.0)
    assert finished
    assert {r.status for r in handle.records() if r.depth == 23} == {"timed-out"}
    assert all(1.0 <= r.seconds < 10.0 for r in handle.records() if r.depth == 23)
    assert {r.status for r in handle.records() if r.depth == 3} == {"answered"}
    assert len(handle.candidates()) == sum(len(t.test) for t in small.values())
    assert_nothing_left_behind(handle)


def test_memory_growth_past_the_ceiling_is_killed_as_memory_limited(tmp_path, small, caplog):
    caplog.set_level(logging.INFO, logger="arc_submit.icecuber")
    greedy = next(iter(small))
    handle, finished = run_to_end(tmp_path, small, {"samples": {greedy: "memory"}}, depths=(3, 4), ram_ceiling_gb=0.25)
    assert finished
    records = [r for r in handle.records() if r.task_id == greedy]
    assert {(r.depth, r.status) for r in records} == {(3, "memory-limited"), (4, "skipped")}
    assert all(200 < r.peak_rss_mb < 600 for r in records if r.depth == 3)
    assert "memory-limited" in caplog.text and "crashed" not in handle.statuses()[greedy]
    assert len(handle.candidates()) == sum(len(t.test) for tid, t in small.items() if tid != greedy)
    assert_status_logged_for_every_task(caplog, small)
    assert_nothing_left_behind(handle)


def test_malformed_answer_lines_are_skipped_and_good_ones_kept(tmp_path, small, caplog):
    caplog.set_level(logging.INFO, logger="arc_submit.icecuber")
    ids = list(small)
    behaviour = {"samples": {ids[0]: "malformed", ids[1]: "bad-header", ids[2]: "nothing", ids[3]: "silent"}}
    handle, finished = run_to_end(tmp_path, small, behaviour, depths=(3,))
    assert finished
    by_task = {}
    for r in handle.records():
        by_task.setdefault(r.task_id, set()).add(r.status)
    assert by_task == {ids[0]: {"answered"}, ids[1]: {"malformed"}, ids[2]: {"nothing-found"},
                       ids[3]: {"no-answer-file"}}
    per_test = handle.candidates()
    assert {tid for tid, _ in per_test} == {ids[0]}
    for i, ex in enumerate(small[ids[0]].test):
        grids = [c.grid for c in per_test[(ids[0], i)]]
        assert len(grids) == 2  # the two well-formed lines of five bad ones
        assert np.array_equal(grids[0], ex.input) and np.array_equal(grids[1], np.rot90(ex.input, -1))
    problems = [p for r in handle.records() if r.task_id == ids[0] for p in r.problems]
    assert len(problems) == 5 * len(small[ids[0]].test) and all("line" in p for p in problems)
    assert "malformed" in caplog.text
    assert_status_logged_for_every_task(caplog, small)
    assert_nothing_left_behind(handle)


def test_stop_mid_run_keeps_answers_and_kills_everything(tmp_path, small):
    fake = make_fake_icecuber(tmp_path / "icecuber", depths={"23": "hang"})
    handle = start_run(fake, small, tmp_path / "work", depths=(3, 23, 4), **FAST)
    n_tests = sum(len(t.test) for t in small.values())
    give_up = time.time() + 30
    while handle.poll()["answered"] < n_tests and time.time() < give_up:  # depth 3 done
        time.sleep(0.05)
    time.sleep(0.5)  # the depth-23 programs are hanging now
    progress = handle.poll()
    assert not progress["done"] and progress["running"] == 2 and progress["answered"] == n_tests
    handle.stop()
    handle.stop()  # idempotent
    statuses = {r.status for r in handle.records() if r.depth == 23}
    assert "stopped" in statuses
    assert {r.status for r in handle.records() if r.depth == 4} == {"not-run"}
    assert len(handle.candidates()) == sum(len(t.test) for t in small.values())
    assert handle.poll()["done"]
    assert_nothing_left_behind(handle)


def test_two_runs_never_share_a_work_folder(tmp_path, small):
    fake = make_fake_icecuber(tmp_path / "icecuber")
    a = start_run(fake, small, tmp_path / "work", depths=(3,), **FAST)
    b = start_run(fake, small, tmp_path / "work", depths=(3,), **FAST)
    assert a.work_dir != b.work_dir
    assert a.wait(time.time() + 30) and b.wait(time.time() + 30)
    assert a.candidates().keys() == b.candidates().keys()


def test_missing_or_unbuilt_copy_is_a_clear_error(tmp_path, small):
    with pytest.raises(IcecuberUnavailable, match="no such folder"):
        start_run(tmp_path / "nowhere", small, tmp_path / "work")
    source_only = tmp_path / "source"
    source_only.mkdir()
    (source_only / "Makefile").write_text("run:\n")
    with pytest.raises(IcecuberUnavailable, match="never built: run `make -j`"):
        start_run(source_only, small, tmp_path / "work")
    (source_only / "run").write_text("not a program")
    with pytest.raises(IcecuberUnavailable, match="not a program"):
        find_program(source_only)
    fake = make_fake_icecuber(tmp_path / "icecuber")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(IcecuberUnavailable, match="cannot prepare an icecuber work folder"):
        start_run(fake, small, tmp_path / "a-file" / "work")
    with pytest.raises(ValueError, match=r"option\(s\) depth do not exist; known: depths"):
        start_run(fake, small, tmp_path / "work", depth=3)
    nested = make_fake_icecuber(tmp_path / "dataset" / "ARC-solution")  # a Kaggle upload one folder deeper
    assert find_program(tmp_path / "dataset") == nested / "run"


def test_a_program_that_cannot_start_is_a_status_not_an_exception(tmp_path, small, caplog):
    caplog.set_level(logging.INFO, logger="arc_submit.icecuber")
    broken = tmp_path / "icecuber"
    broken.mkdir()
    (broken / "run").write_text("#!/no/such/interpreter\n")  # like a binary built for another machine
    handle = start_run(broken, small, tmp_path / "work", depths=(3, 4), **FAST)
    assert not handle.wait(time.time() + 30)  # not completed: stopped once every run died the same way
    crashed = [r for r in handle.records() if r.status == "crashed"]
    assert len(crashed) >= 4 and {r.status for r in handle.records()} == {"crashed", "not-run"}
    assert all("could not start" in r.problems[0] for r in crashed)
    assert handle.failure is not None and "every icecuber run crashed the same way" in handle.failure
    assert "could not start" in handle.failure and "No such file" in handle.failure
    assert handle.candidates() == {}
    assert_status_logged_for_every_task(caplog, small)


def test_the_2020_competition_folder_would_be_read_instead(tmp_path, small, monkeypatch):
    monkeypatch.setattr(icecuber_files, "COMPETITION_2020_DIR", tmp_path)
    with pytest.raises(IcecuberUnavailable, match="remove the 2020 competition input"):
        start_run(make_fake_icecuber(tmp_path / "icecuber"), small, tmp_path / "work")


def test_answer_file_parsing(tmp_path, small):
    staged = stage_tasks(small, tmp_path / "w")
    tid, test_index = staged.samples[0]
    path = tmp_path / "answer_0_3.csv"
    path.write_text(f"{tid}_{test_index}\n|012|340| 0.75\n|0| -1.00000000000000000000\n|12|3| 0.5\n")
    parsed = parse_answer_file(path, staged)
    assert (parsed.task_id, parsed.test_index) == (tid, test_index)
    assert len(parsed.answers) == 1 and parsed.answers[0][1] == 0.75 and parsed.nothing_found
    assert len(parsed.problems) == 1 and "line 4" in parsed.problems[0]
    assert parse_grid_text("|012|340|").tolist() == [[0, 1, 2], [3, 4, 0]]
    assert parse_grid_text("|" + "0" * 31 + "|") is None and parse_grid_text("||") is None
    path.write_text(f"{tid}_99\n|0| 0.5\n")
    assert parse_answer_file(path, staged).task_id is None  # no such test input


def test_answer_pool_merges_depths_and_keeps_the_programs_order_on_ties():
    a, b, c = (np.full((2, 2), colour, dtype=np.int8) for colour in (1, 2, 3))
    pool = AnswerPool()
    for grid, score in ((a, 0.5), (b, 0.5), (c, 0.4)):  # depth 3's answer file, best first
        pool.add(grid, score, 3)
    for grid, score in ((c, 0.6), (a.copy(), 0.2)):  # depth 23: c gets better, a again (an equal grid, lower score)
        pool.add(grid, score, 23)
    ranked = pool.ranked()
    assert [int(cand.grid[0, 0]) for cand in ranked] == [3, 1, 2]  # a before b: equal scores, a read first
    assert [cand.score for cand in ranked] == [0.6, 0.5, 0.5]  # each grid's best score over the depths
    assert [cand.detail for cand in ranked] == ["depths 3,23; rank 1", "depths 3,23; rank 2", "depths 3; rank 3"]
    assert {cand.solver for cand in ranked} == {"icecuber"}


def test_a_resumed_store_keeps_finished_runs_and_reads_their_answers_again(tmp_path, small):
    staged = stage_tasks(small, tmp_path / "w")
    (tid, i), (tid1, i1), (tid2, i2) = staged.samples[:3]
    staged.answer_path(0, 3).write_text(f"{tid}_{i}\n|12|34| 0.75\nnot an answer\n")
    lines = [RunRecord(0, 3, tid, i, "stopped"), RunRecord(0, 3, tid, i, "answered", n_answers=1),  # last word wins
             RunRecord(1, 3, tid1, i1, "deadline"), RunRecord(2, 3, tid2, i2, "crashed", problems=["stderr: x"])]
    staged.runs_file.write_text("".join(json.dumps(asdict(r)) + "\n" for r in lines) + '{"index": 3, "dep')
    heard = []
    store = ResultStore(staged, on_answer=lambda task_id, test_index, ranked: heard.append((task_id, test_index,
                                                                                             len(ranked))))
    assert store.keep_finished_runs() == 2
    assert [(r.index, r.status) for r in store.records()] == [(0, "answered"), (2, "crashed")]
    assert store.records()[0].problems == []  # reading the file again did not add its problems to the kept record
    assert len(staged.runs_file.read_text().splitlines()) == 2  # rewritten: the torn line and unfinished runs gone
    assert heard == [(tid, i, 1)]
    assert store.candidates()[(tid, i)][0].grid.tolist() == [[1, 2], [3, 4]]


def test_cli_runs_icecuber_alone(tmp_path, small):
    challenges = tmp_path / "x_challenges.json"
    write_challenges(small, challenges)
    fake = make_fake_icecuber(tmp_path / "icecuber")
    out = tmp_path / "candidates.json"
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "icecuber", "--challenges", str(challenges),
                        "--icecuber-dir", str(fake), "--out", str(out), "--work-dir", str(tmp_path / "work"),
                        "--depths", "3,23", "--processes", "2", "--time-limit", "60"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    written = json.loads(out.read_text())
    assert set(written) == set(small)
    for tid, task in small.items():
        assert len(written[tid]) == len(task.test)
        for i, ex in enumerate(task.test):
            assert written[tid][i][0]["grid"] == ex.input.tolist() and written[tid][i][0]["solver"] == "icecuber"
    assert "answered" in r.stdout and "test inputs with a candidate" in r.stdout
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "icecuber", "--challenges", str(challenges),
                        "--icecuber-dir", str(tmp_path / "nowhere"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "nowhere" in r.stderr
