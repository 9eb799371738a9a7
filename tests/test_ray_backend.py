"""backend: ray on a real Ray cluster of two nodes on this machine (`ray start --head` and a second node joining
it, each with one CPU and a resource of its own), against the local backend on the same tasks.

Ray is the [ray] extra: `make test` installs it, so these run in CI; without it they are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from arc_submit.config import ConfigError, EngineConfig, RunConfig, SolverConfig
from arc_submit.journal import collect, read_events
from arc_submit.kaggle_env import tiny_dry_run_options, write_dry_run_slice
from arc_submit.pipeline import run
from arc_submit.submission import validate
from arc_submit.tasks import load_tasks

TESTS_DIR = Path(__file__).parent
SRC_DIR = TESTS_DIR.parent / "src"
ray = pytest.importorskip("ray", reason="Ray is the [ray] extra (pip install -e '.[ray]'; make test installs it)")

# The nodes' and the drivers' environment: one torch thread per worker on both backends (the same arithmetic, so
# the same answers), a test cluster on loopback without Ray's token authentication.
CLUSTER_ENV = {"OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    """One node, in the foreground (--block) in a session of its own, so the test can stop it and only it."""
    env = {**os.environ, **CLUSTER_ENV,
           "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    command = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats",
               "--object-store-memory=100000000", *args]
    return subprocess.Popen(command, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _alive_nodes(address: str) -> list[dict]:
    try:
        ray.init(address=address, configure_logging=False)
    except ConnectionError:
        return []
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster():
    """The address of a two-node cluster: the head with resource node_a, a second node with node_b."""
    saved = {k: os.environ.get(k) for k in CLUSTER_ENV}
    os.environ.update(CLUSTER_ENV)  # the driver (this process) too: its local workers and its Ray client
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_ray_start(["--head", f"--port={port}", "--num-cpus=1", '--resources={"node_a": 1}',
                         "--include-dashboard=false", f"--temp-dir={temp}"], temp / "head.log")]
    try:
        give_up = time.time() + 120
        while not _alive_nodes(address):
            assert time.time() < give_up, f"the head node did not start: {(temp / 'head.log').read_text()[-2000:]}"
            time.sleep(1)
        nodes.append(_ray_start([f"--address={address}", "--num-cpus=1", '--resources={"node_b": 1}'],
                                temp / "node.log"))
        while len(_alive_nodes(address)) < 2:
            assert time.time() < give_up, f"the second node did not join: {(temp / 'node.log').read_text()[-2000:]}"
            time.sleep(1)
        yield address
    finally:
        for node in nodes:  # every process a node started is in its session
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait(30)
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tiny_config(out: Path, challenges: Path, **kwargs) -> RunConfig:
    """The dry run's tiny-model transduction (kaggle_env), fewer training epochs, and far more time than it needs:
    every phase ends on its step count, none on the clock, so a fixed seed fixes the answers."""
    options = tiny_dry_run_options("transduction", "hf") | {"ttt_epochs": 8}
    return RunConfig(challenges=str(challenges), out_dir=str(out), workers=2, time_limit_s=3600,
                     safety_margin_s=5, engine=EngineConfig(kind="hf", model="tiny"),
                     solver=SolverConfig("transduction", options), monitor_interval_s=1, **kwargs)


def kill_when_started(journal_dir: Path, task_id: str, killed: list) -> threading.Thread:
    """A thread that SIGKILLs the worker process (a Ray actor's, wherever Ray put it) that starts task_id."""
    def killer():
        give_up = time.time() + 900
        while time.time() < give_up:
            events = list(read_events(journal_dir)) if journal_dir.exists() else []
            pids = {e["worker"]: e["pid"] for e in events if e["event"] == "ready"}
            starts = [e for e in events if e["event"] == "start" and e["task_id"] == task_id]
            if starts and starts[0]["worker"] in pids:
                psutil.Process(pids[starts[0]["worker"]]).kill()
                killed.append(pids[starts[0]["worker"]])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def answers(out: Path, tasks) -> dict:
    """Per task and test input, the candidate grids the journals hold, with their votes."""
    return {tid: {i: sorted((json.dumps(c.grid.tolist()), c.count) for c in cands)
                  for i, cands in rec.candidates.items()}
            for tid, rec in collect(out / "journals", tasks).items()}


def test_two_nodes_with_an_actor_killed_give_the_local_answers(tmp_path, cluster):
    """The issue's run: 8 ARC-AGI-2 tasks (the dry run's), the tiny model, one actor SIGKILLed mid-task. The file
    is valid and complete, the task retried once, and answers and file equal the local backend's."""
    challenges = write_dry_run_slice(tmp_path / "data")
    tasks = load_tasks(str(challenges))
    local = run(tiny_config(tmp_path / "local", challenges))
    assert local.problems == [] and local.statuses == {"done": 8}
    local_answers = answers(tmp_path / "local", tasks)
    # Votes for a grid on some tasks (the two small ones), nothing on others: what the answers are compared on.
    with_candidates = sorted(tid for tid, per_test in local_answers.items() if any(per_test.values()))
    assert with_candidates, "the tiny model found no grid on any task: the comparison below would be vacuous"

    victim = with_candidates[0]
    killed: list[int] = []
    thread = kill_when_started(tmp_path / "ray" / "journals", victim, killed)
    result = run(tiny_config(tmp_path / "ray", challenges, backend="ray", ray_address=cluster))
    thread.join(timeout=5)
    assert killed, f"no actor was seen starting {victim}"

    submission = json.loads((tmp_path / "ray" / "submission.json").read_text())
    assert validate(submission, tasks) == [] and set(submission) == set(tasks) and result.problems == []
    events = list(read_events(tmp_path / "ray" / "journals"))
    ready = [e for e in events if e["event"] == "ready"]
    assert len({e["node"] for e in ready}) == 2, "the actors did not use both nodes"
    assert killed[0] in {e["pid"] for e in ready}
    lost = [e for e in events if e["event"] == "killed"]
    assert [(e["task_id"], e["retried"]) for e in lost] == [(victim, True)]
    assert "Ray actor died" in lost[0]["reason"]
    starts = [e for e in events if e["event"] == "start" and e["task_id"] == victim]
    assert [e["attempt"] for e in starts] == [0, 1] and starts[0]["pid"] != starts[1]["pid"]
    assert result.statuses == {"done": 8}
    # Every record came back through the driver, each in its worker's journal, none lost to the relay.
    assert {e["worker"] for e in events if e["event"] == "candidates"} <= {"worker-0", "worker-1"}
    assert answers(tmp_path / "ray", tasks) == local_answers
    assert submission == json.loads((tmp_path / "local" / "submission.json").read_text())


def double_config(tmp_path, cluster, options: dict, n_tasks: int = 4, workers: int = 2, **kwargs) -> RunConfig:
    """The test-double solvers (tests/doubles/solvers.py) on the cluster: no model, each fault on demand."""
    return RunConfig(challenges="arc-agi-2/evaluation", out_dir=str(tmp_path / "run"), n_tasks=n_tasks,
                     workers=workers, time_limit_s=300, safety_margin_s=5,
                     engine=EngineConfig(kind="none"), solver=SolverConfig("doubles.solvers:faulty", options),
                     monitor_interval_s=0.5, backend="ray", ray_address=cluster, **kwargs)


def test_an_actor_that_dies_twice_on_a_task_is_not_retried_again(tmp_path, cluster):
    bad = list(load_tasks("arc-agi-2/evaluation", limit=4))[1]
    result = run(double_config(tmp_path, cluster, {"exit_on": [bad]}))
    assert result.problems == [] and result.score.score == pytest.approx(3 / 4)
    rec = collect(tmp_path / "run" / "journals", load_tasks("arc-agi-2/evaluation", limit=4))[bad]
    assert [e["retried"] for e in rec.events if e["event"] == "killed"] == [True, False]
    assert result.statuses == {"done": 3, "killed": 1}


def test_a_task_that_hangs_past_its_deadline_has_its_actor_killed(tmp_path, cluster):
    bad = list(load_tasks("arc-agi-2/evaluation", limit=4))[0]
    result = run(double_config(tmp_path, cluster, {"hang_on": [bad]}, max_task_s=2.0, overrun_grace_s=1.0))
    assert result.problems == [] and result.statuses == {"done": 3, "timeout": 1}
    events = list(read_events(tmp_path / "run" / "journals"))
    assert [e["task_id"] for e in events if e["event"] == "timeout"] == [bad]
    # The hung actor is gone, not left spinning beside the run.
    hung = next(e["pid"] for e in events if e["event"] == "start" and e["task_id"] == bad)
    assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE


def test_a_model_that_cannot_load_on_the_actors_is_journaled_and_bounded(tmp_path, cluster):
    empty_model = tmp_path / "model"
    empty_model.mkdir()  # exists (the config accepts it) but holds no weights
    config = double_config(tmp_path, cluster, {}, n_tasks=3, max_worker_restarts=1)
    config.engine, config.solvers[0] = EngineConfig(kind="hf", model=str(empty_model)), SolverConfig("transduction")
    result = run(config)
    assert result.problems == [] and result.statuses == {"skipped": 3}
    events = list(read_events(tmp_path / "run" / "journals"))
    failures = [e for e in events if e["event"] == "load-failed"]
    assert len(failures) == 4  # 2 actors × (first start + 1 restart), each relayed from the actor's node
    assert f"loading the hf engine for {empty_model}" in failures[0]["error"]
    assert len([e for e in events if e["event"] == "worker-retired"]) == 2


def test_more_actors_than_the_cluster_holds_is_refused_by_name(tmp_path, cluster):
    with pytest.raises(ConfigError, match=r"workers: 3 Ray actors need 3 CPU \(one each\) and the cluster at "
                                          r"127\.0\.0\.1:\d+ has 2: set workers to at most 2"):
        run(double_config(tmp_path, cluster, {}, workers=3))
    assert not ray.is_initialized()  # the refused run let go of the cluster


def test_a_sweep_runs_on_the_cluster(tmp_path, cluster):
    """arc-submit sweep --backend ray: each run's workers are actors of the cluster, one table for both runs."""
    from arc_submit.cli import main

    base = tmp_path / "base.yaml"
    base.write_text("challenges: arc-agi-2/evaluation\nn_tasks: 2\nworkers: 2\ntime_limit_s: 300\n"
                    "safety_margin_s: 5\nengine: {kind: none}\nsolver: {name: 'doubles.solvers:faulty'}\n")
    first = list(load_tasks("arc-agi-2/evaluation", limit=2))[0]
    code = main(["sweep", str(base), "--out", str(tmp_path / "sweep"), "--backend", "ray", "--ray-address", cluster,
                 "--variant", f"flaky:solver.options={{raise_on: [{first}]}}"])
    assert code == 0
    rows = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[1:]
    assert [(r.split(",")[0], float(r.split(",")[1])) for r in rows] == [("base", 1.0), ("flaky", 0.5)]
    for name in ("base", "flaky"):
        ready = [e for e in read_events(tmp_path / "sweep" / name / "journals") if e["event"] == "ready"]
        assert ready and all("node" in e for e in ready), f"{name}: not run by Ray actors"


def test_an_actor_with_another_arc_submit_refuses_to_start(tmp_path, cluster, monkeypatch):
    """The driver's source hash is made to differ from the nodes' copy: every actor refuses, naming its node and
    the fix, and the run still writes its file (the fallback) after bounded restarts."""
    from arc_submit import ray_workers

    monkeypatch.setattr(ray_workers, "package_fingerprint", lambda: "0123456789abcdef")  # the driver's side only
    result = run(double_config(tmp_path, cluster, {}, n_tasks=2, max_worker_restarts=0))
    assert result.problems == [] and result.statuses == {"skipped": 2}
    retired = [e for e in read_events(tmp_path / "run" / "journals") if e["event"] == "worker-retired"]
    assert len(retired) == 2
    assert "is not the driver's (source hash" in retired[0]["reason"]
    assert "install the driver's version on every node" in retired[0]["reason"]


@pytest.mark.gpu
def test_the_vllm_engine_runs_in_a_ray_actor_under_l4_emulation(tmp_path):
    """On the GPU machine (pytest -m gpu): a Ray instance started by the run, one actor on the GPU with its own L4
    ballast, the vllm engine (its engine core in the actor's process) training and sampling two tasks."""
    pytest.importorskip("vllm")
    import subprocess as sp

    total_mib = int(sp.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, check=True).stdout.split()[0])
    config = RunConfig(challenges="arc-agi-2/evaluation", n_tasks=2, out_dir=str(tmp_path / "run"),
                       time_limit_s=300, safety_margin_s=20, monitor_interval_s=1, emulate_gpu_gib=22.3,
                       engine=EngineConfig("vllm", "tiny", {"max_model_len": 4096, "enforce_eager": True}),
                       solver=SolverConfig("transduction", {"n_augmentations": 2, "ttt_steps": 4}), backend="ray")
    result = run(config)
    assert result.problems == [] and result.statuses == {"done": 2}, result.summary()
    events = list(read_events(tmp_path / "run" / "journals"))
    ready = [e for e in events if e["event"] == "ready"]
    assert len(ready) == 1 and ready[0]["gpu"] is not None and "node" in ready[0]
    assert [e["solver"] for e in events if e["event"] == "solver-done"] == ["transduction"] * 2
    # The actor's ballast held all but an L4's memory while the engine ran beside it.
    assert max(result.peak_gpu_mib.values()) > total_mib - 23 * 1024
