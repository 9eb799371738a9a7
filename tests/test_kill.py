"""SIGKILL `arc-submit run` at five moments: each time a valid submission.json with every task exists, holding
every answer journaled before its last assembly, and `arc-submit assemble` recovers the rest; running the same
command again resumes without redoing settled tasks or finished icecuber programs.

Real processes throughout: the CLI, spawned workers, the REAL icecuber program (tests/real_icecuber.py). The
solver is a named TEST DOUBLE (tests/doubles/solvers.py: emitting_sleeper) that journals the true answer at
once and then keeps working, so "an answer found mid-task" is a known grid. Moments are chosen by what the run
has written (journals, submission.json), never by wall-clock sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arc_submit.journal import read_events
from arc_submit.submission import validate
from arc_submit.tasks import load_tasks

DATASET = "arc-agi-1/evaluation"
N_TASKS = 10
TESTS_DIR = Path(__file__).parent


def run_command(out: Path, icecuber_build: Path) -> list[str]:
    return [sys.executable, "-m", "arc_submit.cli", "run", "--challenges", DATASET, "--n-tasks", str(N_TASKS),
            "--out", str(out), "--set", "engine.kind=none", "--set", "solver.name=doubles.solvers:emitting_sleeper",
            "--set", "workers=2",
            "--set", "time_limit_s=400", "--set", "safety_margin_s=10", "--set", "assemble_every_s=0.5",
            "--set", "monitor_interval_s=0.5", "--set", "priority=[double, icecuber]",
            "--set", f"icecuber.dir={icecuber_build}", "--set", "icecuber.options={depths: [2, 12, 22], processes: 1}"]


def start(out, icecuber_build, sleep_s=3.0) -> subprocess.Popen:
    """The same run each time (a resume needs the same settings); how long the double works on a task is set
    through its environment variable, which is not a setting of the run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
           "ARC_DOUBLE_SLEEP_S": str(sleep_s)}
    return subprocess.Popen(run_command(out, icecuber_build), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def events(out: Path) -> list[dict]:
    return list(read_events(out / "journals")) if (out / "journals").is_dir() else []


def wait_for(condition, proc, what: str, limit_s: float = 300.0) -> None:
    """Poll the run's files until condition() holds (the limit only guards against a hung test)."""
    give_up = time.time() + limit_s
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.time() < give_up, f"never saw {what}"
        time.sleep(0.05)


def submission_caught_up(out: Path, worker: str | None = None) -> bool:
    """submission.json was (re)written after the newest candidates line (of one journal, or of all)."""
    path = out / "submission.json"
    lines = [e["t"] for e in events(out) if e["event"] == "candidates" and worker in (None, e["worker"])]
    return path.exists() and bool(lines) and path.stat().st_mtime > max(lines) + 0.01


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and everything in its session: a Kaggle kernel dying
    proc.wait(timeout=30)


def check_after_kill(out: Path, tasks) -> dict:
    submission = json.loads((out / "submission.json").read_text())
    assert validate(submission, tasks) == [] and set(submission) == set(tasks)
    # The file's mtime is when its assembly read the journals. A line is stamped (t) a moment before its write
    # completes, so one stamped within that moment of the read may still be missing: 0.5 s of slack (the time
    # one journal line of this run takes to reach disk under load, with room to spare).
    written_at = (out / "submission.json").stat().st_mtime - 0.5
    for e in events(out):  # every answer of the double journaled before the last assembly read is in the file
        if e["event"] == "candidates" and e["worker"].startswith("worker-") and e["t"] < written_at:
            truth = tasks[e["task_id"]].test[e["test_index"]].output.tolist()
            assert submission[e["task_id"]][e["test_index"]]["attempt_1"] == truth
    # The rest is recovered from the journals without running anything.
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "assemble", str(out)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    recovered = json.loads((out / "submission.json").read_text())
    for e in events(out):
        if e["event"] == "candidates" and e["candidates"]:
            grid = e["candidates"][0]["grid"]
            entry = recovered[e["task_id"]][e["test_index"]]
            if e["worker"].startswith("worker-") or e["task_id"] not in worker_answered(out):
                assert grid in (entry["attempt_1"], entry["attempt_2"]), (e["worker"], e["task_id"])
    return submission


def worker_answered(out: Path) -> set[str]:
    return {e["task_id"] for e in events(out) if e["event"] == "candidates" and e["worker"].startswith("worker-")}


def settled(out: Path) -> set[str]:
    return {e["task_id"] for e in events(out) if e["event"] == "done"}


def icecuber_running(out: Path) -> bool:
    return any(e["event"] == "candidates" and e["worker"] == "icecuber" for e in events(out))


@pytest.mark.slow
def test_sigkill_at_five_moments_loses_nothing_and_resumes(tmp_path, icecuber_build):
    out = tmp_path / "run"
    tasks = load_tasks(DATASET, limit=N_TASKS)
    moments = []

    # 1. Before the first task settles: the provisional file (every task's fallback) is already there.
    proc = start(out, icecuber_build)
    wait_for(lambda: (out / "submission.json").exists(), proc, "the provisional submission.json")
    kill(proc)
    assert not settled(out)
    check_after_kill(out, tasks)
    moments.append("before the first task settled")

    # 2. While icecuber runs, with its first answers journaled and assembled.
    proc = start(out, icecuber_build)
    wait_for(lambda: icecuber_running(out) and submission_caught_up(out, "icecuber"), proc, "icecuber's answers")
    kill(proc)
    finished = [json.loads(line) for line in (out / "icecuber" / "current" / "runs.jsonl").read_text().splitlines()]
    assert len(finished) < 3 * sum(len(t.test) for t in tasks.values())  # it was still running when killed
    check_after_kill(out, tasks)
    moments.append("while icecuber runs")

    # 3. Mid-task: a worker has journaled its answer (emit) and not finished the task.
    proc = start(out, icecuber_build, sleep_s=30.0)
    before = settled(out)
    wait_for(lambda: worker_answered(out) - settled(out) and submission_caught_up(out), proc, "an answer mid-task")
    kill(proc)
    mid = worker_answered(out) - settled(out)
    assert mid and settled(out) == before
    submission = check_after_kill(out, tasks)
    for tid in mid:  # the answer found before the kill survived it, although the task never finished
        assert submission[tid][0]["attempt_1"] == tasks[tid].test[0].output.tolist()
    moments.append("mid-task, after an answer was emitted")

    # 4. After some tasks settled (the settle triggers re-assembly).
    proc = start(out, icecuber_build, sleep_s=0.5)
    wait_for(lambda: len(settled(out)) >= 3 and submission_caught_up(out), proc, "three settled tasks")
    kill(proc)
    check_after_kill(out, tasks)
    moments.append("after tasks settled")

    # 5. During assembly itself: see test_kill_during_assembly_never_leaves_a_broken_file.
    # 6. To the end: the same command resumes.
    done_before = settled(out)
    runs_before = (out / "icecuber" / "current" / "runs.jsonl").read_text().splitlines()
    proc = start(out, icecuber_build, sleep_s=0.5)
    assert proc.wait(timeout=600) == 0
    final = json.loads((out / "submission.json").read_text())
    assert validate(final, tasks) == []
    all_events = events(out)
    for tid in done_before:  # settled tasks were not started again
        starts = [e for e in all_events if e["event"] == "start" and e["task_id"] == tid]
        done_at = min(e["t"] for e in all_events if e["event"] == "done" and e["task_id"] == tid)
        assert all(e["t"] < done_at for e in starts), tid
    assert settled(out) == set(tasks)
    for tid, task in tasks.items():
        assert [entry["attempt_1"] for entry in final[tid]] == [ex.output.tolist() for ex in task.test]
    runs = [json.loads(line) for line in (out / "icecuber" / "current" / "runs.jsonl").read_text().splitlines()]
    keys = [(r["index"], r["depth"]) for r in runs]
    assert len(keys) == len(set(keys))  # no finished icecuber program ran twice
    finished_before = {(r["index"], r["depth"], r["pid"]) for r in map(json.loads, runs_before)
                       if r["status"] not in ("deadline", "stopped", "not-run")}
    assert finished_before <= {(r["index"], r["depth"], r["pid"]) for r in runs}
    assert len(moments) == 4


def test_kill_during_assembly_never_leaves_a_broken_file(tmp_path):
    """A process re-assembling a 120-task run over and over, SIGKILLed at 8 different points of its loop."""
    from arc_submit.assembly import write_assembly
    from arc_submit.candidates import Candidate
    from arc_submit.journal import Journal

    tasks = load_tasks("arc-agi-2/evaluation")
    with Journal(tmp_path / "journals", "worker-0") as journal:
        for tid, task in tasks.items():
            for i, ex in enumerate(task.test):
                journal.candidates(tid, i, ex.input, [Candidate(ex.output, "double", count=3)] * 20)
    write_assembly(tmp_path, tasks, ["double"])
    reference = (tmp_path / "submission.json").read_bytes()
    script = ("import sys; from arc_submit.assembly import write_assembly; from arc_submit.tasks import load_tasks\n"
              "tasks = load_tasks('arc-agi-2/evaluation'); print('ready', flush=True)\n"
              f"while True: write_assembly({str(tmp_path)!r}, tasks, ['double'])\n")
    for n in range(8):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        writes_seen = 0
        while writes_seen < n + 1:  # kill at a different write each time: after n+1 new temp files appeared
            before = (tmp_path / "submission.json").stat().st_mtime_ns
            while (tmp_path / "submission.json").stat().st_mtime_ns == before:
                time.sleep(0.001)
            writes_seen += 1
        proc.kill()
        proc.wait()
        assert (tmp_path / "submission.json").read_bytes() == reference  # whole, never torn
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".submission.json.")]
        for name in leftovers:  # a temp file the kill interrupted is harmless: never the submission itself
            (tmp_path / name).unlink()
    assert np.array_equal(np.array(json.loads(reference)[next(iter(tasks))][0]["attempt_1"]),
                          next(iter(tasks.values())).test[0].output)
