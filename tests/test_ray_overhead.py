"""benchmarks/ray_overhead.py's arithmetic: its rows come from journals, so they are checked on journals (written by
hand with known times, and by a real local run of test-double solvers); the GPU run itself is the device's."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from arc_submit.config import EngineConfig, RunConfig, SolverConfig, load_config
from arc_submit.pipeline import run

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "ray_overhead.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ray_overhead", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_journal(folder: Path, worker: str, events: list[tuple]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"journal-{worker}.jsonl", "w") as f:
        for t, event, task, extra in events:
            f.write(json.dumps({"t": t, "worker": worker, "event": event, "task_id": task, **extra}) + "\n")


def test_rows_from_known_times(bench, tmp_path):
    journals = tmp_path / "journals"
    # worker-0: loads in 5 s, hands out a at +0.1 s, b 0.2 s after a ends, c 0.4 s after b ends
    write_journal(journals, "worker-0", [
        (100.0, "ready", None, {"load_s": 5.0}),
        (100.1, "start", "a", {}), (100.2, "candidates-like-note", "a", {}), (101.1, "done", "a", {"seconds": 1.0}),
        (101.3, "start", "b", {}), (103.3, "done", "b", {"seconds": 2.0}),
        (103.7, "start", "c", {}), (104.2, "error", "c", {"seconds": 0.5}),
    ])
    # the main process's journal: a task it settled (no worker gap) and no ready event
    write_journal(journals, "main", [(105.0, "skipped", "d", {})])
    row = bench.summarize(journals, wall_s=20.0)
    assert row["settled"] == 4 and row["statuses"] == {"done": 2, "error": 1, "skipped": 1}
    assert row["workers"] == 1 and row["load_s"] == [5.0] and row["busy_s"] == pytest.approx(3.5)
    assert row["gaps"] == 2
    assert row["gap_ms_mean"] == pytest.approx(300.0) and row["gap_ms_max"] == pytest.approx(400.0)
    assert row["first_ms_mean"] == pytest.approx(100.0)
    assert row["overhead_s_per_task"] == pytest.approx((20.0 - 5.0 - 3.5) / 4)
    assert bench.summarize(journals)["wall_s"] == pytest.approx(5.0)  # no wall given: the journals' span

    other = dict(row, load_s=[7.0], wall_s=24.0, gap_ms_mean=350.0, gap_ms_max=500.0, overhead_s_per_task=3.0)
    text = bench.table({"local": row, "ray": other})
    lines = text.splitlines()
    assert len(lines) == 5 and lines[2].startswith("| local | 4 (2) | 1 | 5.0 | 20.0 | 3.5 | 300.0 / 400.0 (2) |")
    assert lines[4].startswith("| ray − local | +0 | | 2.0 (all loads) | 1.00/task | 0.00/task | 50.0 / 100.0 |")
    assert lines[4].endswith("| 0.12 |")
    assert len(bench.table({"local": row}).splitlines()) == 3  # no difference row without both


def test_restarted_worker_counts_both_loads_and_no_gap_across_the_restart(bench, tmp_path):
    journals = tmp_path / "journals"
    write_journal(journals, "worker-0", [
        (10.0, "ready", None, {"load_s": 2.0}), (10.5, "start", "a", {}),  # died in a: no final event
        (20.0, "ready", None, {"load_s": 3.0}), (20.2, "start", "b", {}), (21.0, "done", "b", {"seconds": 0.8}),
    ])
    write_journal(journals, "main", [(19.0, "killed", "a", {})])
    row = bench.summarize(journals, wall_s=15.0)
    assert row["load_s"] == [2.0, 3.0] and row["gaps"] == 0 and row["gap_ms_mean"] is None
    assert row["first_ms_mean"] == pytest.approx(350.0)
    assert "- / - (0)" in bench.table({"local": row})


def test_rows_from_a_real_local_run(bench, tmp_path):
    config = RunConfig(challenges="arc-agi-2/evaluation", out_dir=str(tmp_path / "run"), n_tasks=4, workers=2,
                       time_limit_s=120, safety_margin_s=5, monitor_interval_s=0.5,
                       engine=EngineConfig(kind="none"),
                       solver=SolverConfig("doubles.solvers:faulty", {"sleep_s": 0.05}))
    result = run(config)
    row = bench.summarize(tmp_path / "run" / "journals", result.wall_s)
    assert row["settled"] == 4 and row["statuses"] == {"done": 4}
    assert row["workers"] == 2 and len(row["load_s"]) == 2
    assert row["gaps"] == 4 - 2  # every task but each worker's first follows one of that worker's own
    assert 0 <= row["gap_ms_mean"] <= row["gap_ms_max"] < 10_000
    assert 0 < row["busy_s"] < 2 * result.wall_s and row["overhead_s_per_task"] > 0
    assert "| local | 4 (4) | 2 |" in bench.table({"local": row})


def test_arguments_and_config(bench):
    args = bench.parse_args(["--engine", "hf", "--model", "tiny", "--tasks", "3", "--ray-address", "auto"])
    local, ray = bench.overrides(args, "local"), bench.overrides(args, "ray")
    assert "ray_address" not in local and ray["ray_address"] == "auto"
    assert local["out_dir"] != ray["out_dir"]
    same = {k: v for k, v in local.items() if k not in ("backend", "out_dir")}
    assert same == {k: v for k, v in ray.items() if k not in ("backend", "out_dir", "ray_address")}
    assert local["emulate_gpu_gib"] == 22.3 and local["seed"] == 0 and local["n_tasks"] == 3
    assert local["engine"] == {"kind": "hf", "model": "tiny", "options": {"max_model_len": 8192}}
    vllm = bench.overrides(bench.parse_args(["--emulate-gpu-gib", "0"]), "local")
    assert vllm["engine"]["options"]["enforce_eager"] is True and vllm["emulate_gpu_gib"] is None
    if "backend" not in {f.name for f in dataclasses.fields(RunConfig)}:
        pytest.skip("RunConfig has no backend field in this src: the config is checked once it does")
    for backend in ("local", "ray"):
        config = load_config(None, **bench.overrides(args, backend))
        assert config.backend == backend and config.engine.kind == "hf" and config.solvers[0].name == "transduction"
