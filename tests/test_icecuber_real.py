"""The REAL icecuber program (built from ../shared/icecuber by tests/real_icecuber.py), driven by our adapter.

The expected list below was found by driving the build by hand, as its authors did: the first 20 ARC-AGI-1
evaluation tasks copied into ./dataset/evaluation/, `./run <index> 2` for every sample, the answer files read
back and the top two compared with the solutions (2026-11-25; 8.6 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from arc_submit.journal import read_events
from arc_submit.solvers.icecuber import start_run
from arc_submit.tasks import load_tasks

DATASET = "arc-agi-1/evaluation"
SOLVED_BY_HAND_AT_DEPTH_2 = ["00576224", "0692e18c", "070dd51e", "0becf7df", "0c786b71", "0c9aba6e"]


def first_20():
    return load_tasks(DATASET, limit=20)


def solved_within_two(tasks, per_test_grids) -> list[str]:
    """Tasks whose every test output is among the first two grids offered for it."""
    out = []
    for tid, task in tasks.items():
        if all(any(np.array_equal(g, ex.output) for g in per_test_grids(tid, i)[:2]) for i, ex in enumerate(task.test)):
            out.append(tid)
    return sorted(out)


def test_cli_depth_2_solves_exactly_what_the_program_solves_by_hand(tmp_path, icecuber_build):
    # A relative work folder, as the README writes it: the program must still find its files.
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "icecuber", "--challenges", DATASET, "--n-tasks",
                        "20", "--icecuber-dir", str(icecuber_build), "--out", "candidates.json",
                        "--work-dir", "icecuber-work", "--depths", "2", "--processes", "2"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    written = json.loads((tmp_path / "candidates.json").read_text())
    tasks = first_20()
    grids = lambda tid, i: [np.array(c["grid"]) for c in written[tid][i]]  # noqa: E731
    assert solved_within_two(tasks, grids) == SOLVED_BY_HAND_AT_DEPTH_2
    # The current public commit reads dataset/evaluation/ (both layouts are staged) and the log says so.
    assert "the build read its tasks from dataset/evaluation/" in r.stderr
    work = next((tmp_path / "icecuber-work").iterdir())
    assert os.listdir(work / "dataset" / "evaluation") == os.listdir(work / "dataset" / "test")


def test_a_resumed_run_keeps_finished_programs_and_their_answers(tmp_path, icecuber_build):
    tasks = dict(list(first_20().items())[:6])
    heard: list[tuple] = []
    first = start_run(icecuber_build, tasks, tmp_path / "ice", depths=(2,), processes=2, resume=True,
                      on_answer=lambda tid, i, ranked: heard.append((tid, i, len(ranked))))
    assert first.wait(time.time() + 300)
    runs_before = [json.loads(line) for line in (first.work_dir / "runs.jsonl").read_text().splitlines()]
    answered = {(tid, i) for tid, i, _ in heard}
    assert answered == set(first.candidates())  # every answer was handed over as it landed

    heard.clear()
    second = start_run(icecuber_build, tasks, tmp_path / "ice", depths=(2, 12), processes=2, resume=True,
                       on_answer=lambda tid, i, ranked: heard.append((tid, i, len(ranked))))
    assert second.work_dir == first.work_dir
    assert second.wait(time.time() + 600)
    runs_after = [json.loads(line) for line in (second.work_dir / "runs.jsonl").read_text().splitlines()]
    keys = [(r["index"], r["depth"]) for r in runs_after]
    assert len(keys) == len(set(keys))  # nothing ran twice
    kept = [r for r in runs_after if r["depth"] == 2]
    assert sorted(r["pid"] for r in kept) == sorted(r["pid"] for r in runs_before)  # the same programs, not reruns
    assert {(tid, i) for tid, i, _ in heard} >= answered  # kept answers handed over again (journaling is idempotent)
    for key, cands in first.candidates().items():  # depth 2's answers are still there after depth 12
        kept_grids = [c.grid.tobytes() for c in second.candidates()[key]]
        assert all(c.grid.tobytes() in kept_grids for c in cands)


def test_pipeline_with_the_tiny_model_beside_it_keeps_every_icecuber_solve(tmp_path, icecuber_build):
    """`arc-submit run`: the tiny random model's junk must not push out a grid icecuber got right."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "run", "--challenges", DATASET, "--n-tasks", "20",
                        "--out", str(out), "--set", "workers=2", "--set", "time_limit_s=240",
                        "--set", "safety_margin_s=20", "--set", "max_task_s=4",
                        "--set", f"icecuber.dir={icecuber_build}",
                        "--set", "icecuber.options={depths: [2], processes: 2}",
                        "--set", "priority=[icecuber, transduction]",
                        "--set", "solver.options={n_augmentations: 1, ttt: false, max_tokens: 64}"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    submission = json.loads((out / "submission.json").read_text())
    tasks = first_20()
    grids = lambda tid, i: [np.array(submission[tid][i][k]) for k in ("attempt_1", "attempt_2")]  # noqa: E731
    assert set(SOLVED_BY_HAND_AT_DEPTH_2) <= set(solved_within_two(tasks, grids))
    events = list(read_events(out / "journals"))
    assert any(e["event"] == "candidates" and e["worker"] == "worker-0" for e in events)  # the model ran beside
    assert sum(e["event"] == "candidates" and e["worker"] == "icecuber" for e in events) >= 18


def test_two_solvers_and_icecuber_in_one_run_settle_every_task_and_resume_per_solver(tmp_path, icecuber_build):
    """`solvers: [induction, transduction]` on the tiny model, the real icecuber beside them: every task settles,
    the journal and report show each solver's candidates and time; a later run with a third solver added
    (resuming the same folder) runs only the solver each task lacks."""
    out = tmp_path / "run"
    common = ["--challenges", DATASET, "--n-tasks", "4", "--out", str(out), "--set", "workers=2",
              "--set", "time_limit_s=300", "--set", "safety_margin_s=20", "--set", "max_task_s=30",
              "--set", f"icecuber.dir={icecuber_build}", "--set", "icecuber.options={depths: [2], processes: 1}"]
    chain = ("solvers=[{name: induction, share: 0.5, options: {epochs: 1, predictions_per_epoch: 4, max_tokens: 64, "
             "landlock: false, workers: 1}}, {name: transduction, options: {n_augmentations: 1, ttt: false, "
             "max_tokens: 64}}]")
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "run", *common, "--set", chain],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    events = list(read_events(out / "journals"))
    tasks = first_20()
    first4 = list(tasks)[:4]
    for tid in first4:
        ran = [e["solver"] for e in events if e["event"] == "solver-done" and e["task_id"] == tid]
        assert ran == ["induction", "transduction"], (tid, ran)
        assert any(e["event"] == "done" and e["task_id"] == tid for e in events)
    report = (out / "report.md").read_text()
    assert "induction " in report and "transduction " in report and "cands" in report
    assert sum(e["worker"] == "icecuber" and e["event"] == "candidates" for e in events) >= 3

    more = chain.replace("solvers=[", "solvers=[{name: 'doubles.solvers:cost_sleeper'}, ")
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "run", *common, "--set", more],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                           [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    first_run_ended = max(e["t"] for e in events)
    again = [e for e in read_events(out / "journals") if e["t"] > first_run_ended]
    for tid in first4:
        ran = [e["solver"] for e in again if e["event"] == "solver-done" and e["task_id"] == tid]
        assert ran == ["doubles.solvers:cost_sleeper"], (tid, ran)  # the two finished solvers were not redone
