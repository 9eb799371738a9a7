"""The console script, run as a real subprocess (what a user types)."""

import json
import subprocess
import sys

import pytest

from arc_submit.tasks import write_challenges

ARC2 = "arc-agi-2/evaluation"


def run(*args):
    return subprocess.run([sys.executable, "-m", "arc_submit.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def copy_input_submission(tmp_path_factory, arc2_eval):
    path = tmp_path_factory.mktemp("cli") / "submission.json"
    sub = {tid: [{"attempt_1": ex.input.tolist(), "attempt_2": [[0]]} for ex in t.test] for tid, t in arc2_eval.items()}
    path.write_text(json.dumps(sub))
    return path


def test_score_prints_score_and_table(copy_input_submission, arc2_eval):
    r = run("score", str(copy_input_submission), "--solutions", ARC2)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["task", "solved", "tests", "score"]
    assert len(lines) == len(arc2_eval) + 2
    assert lines[-1].startswith("score 0.") and "over 120 tasks" in lines[-1]


def test_validate_ok_and_invalid(copy_input_submission, tmp_path):
    assert run("validate", str(copy_input_submission), "--challenges", ARC2).returncode == 0
    bad = json.loads(copy_input_submission.read_text())
    bad.pop(next(iter(bad)))
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(bad))
    r = run("validate", str(bad_path), "--challenges", ARC2)
    assert r.returncode == 1 and "missing" in r.stdout and "INVALID: 1 problem" in r.stdout


def test_corrupt_challenges_file_gives_a_message_not_a_traceback(tmp_path, arc2_sample, copy_input_submission):
    path = tmp_path / "x_challenges.json"
    write_challenges(arc2_sample, path)
    raw = json.loads(path.read_text())
    tid = list(raw)[3]
    raw[tid]["test"][0]["input"][-1].pop()  # ragged: the last row is one cell short
    path.write_text(json.dumps(raw))
    r = run("validate", str(copy_input_submission), "--challenges", str(path))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and str(path) in r.stderr and f"task {tid}" in r.stderr and "ragged" in r.stderr
    path.write_text(path.read_text()[:100])
    r = run("tasks", str(path))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not valid JSON" in r.stderr


def test_tasks_summary_and_usage_exit_code():
    r = run("tasks", ARC2)
    assert r.returncode == 0 and "120 tasks" in r.stdout and "tasks with test solutions: 120" in r.stdout
    assert run("score").returncode == 2
    assert run("frobnicate").returncode == 2


def test_run_with_a_yaml_config_writes_a_valid_submission(tmp_path):
    import os

    cfg = tmp_path / "run.yaml"
    cfg.write_text("challenges: arc-agi-2/evaluation\nn_tasks: 3\nworkers: 2\ntime_limit_s: 120\nsafety_margin_s: 5\n"
                   "engine: {kind: none}\nsolver: {name: 'doubles.solvers:faulty'}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "arc_submit.cli", "run", "--config", str(cfg), "--out",
                        str(tmp_path / "out"), "--set", "solver.options={sleep_s: 0.1}"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(valid)" in r.stdout and "score: 1.0000 (3/3" in r.stdout
    assert run("validate", str(tmp_path / "out" / "submission.json"), "--challenges", ARC2,
               "--n-tasks", "3").returncode == 0


def test_run_rejects_an_unknown_config_key_by_name(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("engine: {kind: hf, modle: x}\n")
    r = run("run", "--config", str(cfg))
    assert r.returncode == 2 and "unknown config key(s) engine.modle" in r.stderr and str(cfg) in r.stderr


def test_run_names_a_backend_it_does_not_know_and_an_address_without_ray(tmp_path):
    r = run("run", "--out", str(tmp_path / "x"), "--set", "backend=slurm")
    assert r.returncode == 2 and "backend 'slurm': use local (this machine) or ray (a Ray cluster)" in r.stderr
    r = run("run", "--out", str(tmp_path / "x"), "--ray-address", "10.0.0.1:6379")
    assert r.returncode == 2 and "ray_address '10.0.0.1:6379' is set but backend is 'local'" in r.stderr
    assert not (tmp_path / "x").exists()
