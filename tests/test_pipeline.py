"""The run end to end on CPU with worker processes and test-double solvers: faults must never cost the file."""

import json
import threading
import time

import numpy as np
import psutil
import pytest

from arc_submit.config import EngineConfig, RunConfig, SolverConfig
from arc_submit.journal import collect, read_events
from arc_submit.pipeline import run
from arc_submit.submission import validate
from arc_submit.tasks import load_tasks

DATASET = "arc-agi-2/evaluation"


def make_config(tmp_path, solver="doubles.solvers:faulty", n_tasks=6, workers=2, **kwargs):
    options = kwargs.pop("options", {})
    return RunConfig(challenges=DATASET, out_dir=str(tmp_path / "run"), n_tasks=n_tasks, workers=workers,
                     time_limit_s=kwargs.pop("time_limit_s", 120), safety_margin_s=kwargs.pop("safety_margin_s", 5),
                     engine=EngineConfig(kind="none"), solver=SolverConfig(solver, options),
                     monitor_interval_s=0.5, **kwargs)


def task_ids(n):
    return list(load_tasks(DATASET, limit=n))


def check_valid_and_complete(result, n):
    sub = json.loads(result.submission_path.read_text())
    tasks = load_tasks(DATASET, limit=n)
    assert validate(sub, tasks) == [] and result.problems == []
    assert set(sub) == set(tasks)
    return sub


def _live_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture(autouse=True)
def children_before():
    """Processes other tests left running on purpose (a warm program executor, multiprocessing's resource
    tracker) are not this test's workers: only children that appear during the test count."""
    global _CHILDREN_BEFORE
    _CHILDREN_BEFORE = _live_children()
    yield


_CHILDREN_BEFORE: set[int] = set()


def no_workers_left():
    """Children started during this test that are still running (the resource tracker, started once, excepted)."""
    left = []
    for pid in _live_children() - _CHILDREN_BEFORE:
        try:
            if not any("resource_tracker" in part for part in psutil.Process(pid).cmdline()):
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


def test_clean_run_solves_everything_and_reports(tmp_path):
    result = run(make_config(tmp_path))
    check_valid_and_complete(result, 6)
    assert result.score.score == 1.0 and result.statuses == {"done": 6}
    out = tmp_path / "run"
    for name in ("report.md", "tasks.csv", "timeline.png", "run.log"):
        assert (out / name).exists(), name
    assert len(list((out / "tasks").glob("*.png"))) == 6
    assert not no_workers_left()


def test_task_that_raises_gets_fallback_and_is_journaled(tmp_path):
    bad = task_ids(6)[1]
    result = run(make_config(tmp_path, options={"raise_on": [bad]}))
    check_valid_and_complete(result, 6)
    records = collect(tmp_path / "run" / "journals", load_tasks(DATASET))
    assert records[bad].status == "error"
    assert "planted failure" in next(e["error"] for e in records[bad].events if e["event"] == "error")
    assert result.score.score == pytest.approx(5 / 6)


def test_worker_killed_mid_task_is_retried_on_another(tmp_path):
    ids = task_ids(6)
    victim_task = ids[0]
    journal_dir = tmp_path / "run" / "journals"

    def killer():
        # Wait until some worker starts the victim task, then SIGKILL that worker from outside.
        for _ in range(600):
            events = list(read_events(journal_dir)) if journal_dir.exists() else []
            pids = {e["worker"]: e["pid"] for e in events if e["event"] == "ready"}
            starts = [e for e in events if e["event"] == "start" and e["task_id"] == victim_task]
            if starts and starts[0]["worker"] in pids:
                psutil.Process(pids[starts[0]["worker"]]).kill()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    result = run(make_config(tmp_path, options={"sleep_s": 0.5, "slow_on": [victim_task]}))
    thread.join()
    check_valid_and_complete(result, 6)
    rec = collect(journal_dir, load_tasks(DATASET))[victim_task]
    killed = [e for e in rec.events if e["event"] == "killed"]
    assert len(killed) == 1 and killed[0]["retried"] is True
    starts = [e for e in rec.events if e["event"] == "start"]
    # Retried in another process: a surviving worker, or the killed one's restart, whichever pulled it first.
    assert rec.status == "done" and len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"]
    assert starts[1]["attempt"] == 1
    assert result.score.score == 1.0
    assert not no_workers_left()


def test_worker_that_exits_twice_is_not_retried_forever(tmp_path):
    bad = task_ids(6)[2]
    result = run(make_config(tmp_path, options={"exit_on": [bad]}))
    check_valid_and_complete(result, 6)
    rec = collect(tmp_path / "run" / "journals", load_tasks(DATASET))[bad]
    assert [e["retried"] for e in rec.events if e["event"] == "killed"] == [True, False]
    assert result.statuses.get("done") == 5


def test_task_over_its_budget_is_killed_and_the_rest_go_on(tmp_path):
    bad = task_ids(6)[0]
    result = run(make_config(tmp_path, options={"hang_on": [bad]}, max_task_s=1.0, overrun_grace_s=1.0))
    check_valid_and_complete(result, 6)
    rec = collect(tmp_path / "run" / "journals", load_tasks(DATASET))[bad]
    assert rec.status == "timeout"
    assert result.statuses == {"done": 5, "timeout": 1}
    assert not no_workers_left()


def test_ram_ceiling_kills_the_growing_worker(tmp_path):
    bad = task_ids(4)[0]
    result = run(make_config(tmp_path, n_tasks=4, options={"grow_on": [bad], "grow_gb": 2.5}, ram_ceiling_gb=1.5,
                             retry_killed=False))
    check_valid_and_complete(result, 4)
    rec = collect(tmp_path / "run" / "journals", load_tasks(DATASET))[bad]
    assert rec.status == "killed"
    assert "RAM ceiling" in next(e["reason"] for e in rec.events if e["event"] == "killed")
    assert result.statuses == {"done": 3, "killed": 1}
    assert max(result.busy.values()) > 0.5  # the killed task's time shows on its worker's timeline row


def test_deadline_with_tasks_unstarted_still_writes_every_task(tmp_path):
    result = run(make_config(tmp_path, n_tasks=12, options={"sleep_s": 1.5}, time_limit_s=6, safety_margin_s=1))
    sub = check_valid_and_complete(result, 12)
    assert len(sub) == 12
    assert result.statuses.get("skipped", 0) >= 1 and result.statuses.get("done", 0) >= 2
    assert result.wall_s < 20
    assert not no_workers_left()


def test_resume_skips_settled_tasks(tmp_path):
    first = run(make_config(tmp_path, options={"sleep_s": 0.1}))
    second = run(make_config(tmp_path, options={"sleep_s": 0.1}))
    assert second.score.score == first.score.score == 1.0
    starts = [e for e in read_events(tmp_path / "run" / "journals") if e["event"] == "start"]
    assert len(starts) == 6


def test_four_workers_take_the_largest_tasks_first_and_all_work(tmp_path):
    """Skewed costs (real task sizes), 4 workers: each worker's tasks come largest first (tasks go out in that
    order, one at a time), every worker solves some, and every task is settled once. (Makespan against the ideal
    is measured, not asserted, in benchmarks/task_queue.py: this machine's load would make a timing assertion
    flaky.)"""
    n = 24
    result = run(make_config(tmp_path, solver="doubles.solvers:cost_sleeper", n_tasks=n, workers=4,
                             options={"seconds_per_kcell": 0.05}))
    check_valid_and_complete(result, n)
    tasks = load_tasks(DATASET, limit=n)
    largest_first = sorted(tasks, key=lambda t: (-tasks[t].cost_estimate(), t))
    starts = sorted((e for e in read_events(tmp_path / "run" / "journals") if e["event"] == "start"),
                    key=lambda e: e["t"])
    rank = {tid: i for i, tid in enumerate(largest_first)}
    for worker in {e["worker"] for e in starts}:
        mine = [rank[e["task_id"]] for e in starts if e["worker"] == worker]
        assert mine == sorted(mine), worker
    assert len({e["worker"] for e in starts}) == 4
    assert sorted(e["task_id"] for e in starts) == sorted(tasks)  # each exactly once
    assert result.statuses == {"done": n}


def _fake_icecuber(folder, **behaviour):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_icecuber import make_fake_icecuber  # the TEST DOUBLE of the built program, as in test_icecuber

    return make_fake_icecuber(folder, **behaviour)


def test_icecuber_candidates_join_the_llm_ones(tmp_path):
    """icecuber's top answer (the double answers the test input) lands next to the solver's answers."""
    ice = _fake_icecuber(tmp_path / "ice", default="normal")
    config = make_config(tmp_path, n_tasks=3, options={"sleep_s": 0.2},
                         priority=["icecuber", "double"])
    config.icecuber.dir, config.icecuber.options = str(ice), {"depths": [3], "processes": 2}
    result = run(config)
    sub = check_valid_and_complete(result, 3)
    tasks = load_tasks(DATASET, limit=3)
    for tid, task in tasks.items():
        for i, ex in enumerate(task.test):  # the double's one answer (evidence 1.0), then icecuber's best of three
            assert sub[tid][i] == {"attempt_1": ex.output.tolist(), "attempt_2": ex.input.tolist()}
    assert (tmp_path / "run" / "journals" / "journal-icecuber.jsonl").exists()


def test_icecuber_crashing_costs_nothing_but_its_answers(tmp_path):
    ice = _fake_icecuber(tmp_path / "ice", default="crash")
    config = make_config(tmp_path, n_tasks=3, options={"sleep_s": 0.2})
    config.icecuber.dir, config.icecuber.options = str(ice), {"depths": [3], "processes": 2}
    result = run(config)
    check_valid_and_complete(result, 3)
    assert result.score.score == 1.0
    statuses = [e for e in read_events(tmp_path / "run" / "journals") if e["event"] == "icecuber-status"]
    assert len(statuses) == 3 and all("crashed" in e["status"] for e in statuses)


def test_missing_icecuber_is_a_warning_not_a_crash(tmp_path, caplog):
    config = make_config(tmp_path, n_tasks=2)
    config.icecuber.dir = str(tmp_path)  # exists, but holds no built program
    result = run(config)
    check_valid_and_complete(result, 2)
    assert "icecuber unavailable, continuing without it" in caplog.text


def test_a_model_that_cannot_load_does_not_crash_loop(tmp_path):
    """Every worker fails at engine load: bounded restarts, the reason journaled, a valid file all the same."""
    empty_model = tmp_path / "model"
    empty_model.mkdir()  # exists (config accepts it) but holds no weights
    config = make_config(tmp_path, n_tasks=3, max_worker_restarts=1, solver="transduction")
    config.engine = EngineConfig(kind="hf", model=str(empty_model))
    result = run(config)
    check_valid_and_complete(result, 3)
    events = list(read_events(tmp_path / "run" / "journals"))
    failures = [e for e in events if e["event"] == "load-failed"]
    assert len(failures) == 4  # 2 workers × (first start + 1 restart)
    assert f"loading the hf engine for {empty_model}" in failures[0]["error"]
    assert len([e for e in events if e["event"] == "worker-retired"]) == 2
    assert result.statuses == {"skipped": 3} and result.wall_s < 60
    assert not no_workers_left()


def test_a_solver_of_ones_own_is_resolved_checked_journaled_and_resumed(tmp_path):
    """Adding a solver touches its own module only: `doubles.solvers:toy` is a Solver with its own options
    dataclass, defined in a test module. The preflight checks its options by name and value, the run journals its
    answers, and a second run in the same folder starts nothing."""
    from arc_submit.preflight import PreflightError, preflight

    toy = "doubles.solvers:toy"
    with pytest.raises(PreflightError, match=r"toy solver: unknown option\(s\) colur; known: colour, height"):
        preflight(make_config(tmp_path, solver=toy, n_tasks=3, options={"colur": 4}), strict=True)
    with pytest.raises(PreflightError, match=rf"solver.options of {toy}: toy solver: option colour=12: a colour"):
        preflight(make_config(tmp_path, solver=toy, n_tasks=3, options={"colour": 12}), strict=True)
    with pytest.raises(PreflightError, match="doubles.solvers:_toy is a function, not a Solver; wrap it"):
        preflight(make_config(tmp_path, solver="doubles.solvers:_toy", n_tasks=3), strict=True)

    config = make_config(tmp_path, solver=toy, n_tasks=3, options={"colour": 4, "height": "2"})
    assert preflight(config, strict=True) == []
    sub = check_valid_and_complete(run(config), 3)
    assert {json.dumps(entry["attempt_1"]) for entries in sub.values() for entry in entries} == {"[[4, 4], [4, 4]]"}
    events = list(read_events(tmp_path / "run" / "journals"))
    assert sorted(e["task_id"] for e in events if e["event"] == "solver-done" and e["solver"] == toy) == task_ids(3)

    again = run(config)
    check_valid_and_complete(again, 3)
    assert len([e for e in read_events(tmp_path / "run" / "journals") if e["event"] == "start"]) == 3


def test_votes_survive_a_scoring_phase_that_raises(tmp_path, arc1_train):
    """The real transduction solver with the tiny model in a worker, re-ranking with scorer augmented, whose
    scoring raises (doubles.solvers:transduction_scoring_fails: an out-of-memory while scoring): the votes were
    journaled before scoring began, so the task's trained answer is in submission.json although its solver
    failed."""
    from arc_submit.llm import prompts
    from arc_submit.llm.recipes import recipe
    from arc_submit.llm.training import count_tokens
    from arc_submit.tasks import Example, Task
    from doubles.engines import tiny_tokenizer

    ours = recipe("arc-submit")

    grid = arc1_train["6150a2bd"].train[0].input  # the learnable task of test_transduction.py
    low, high = sorted(set(grid.flatten().tolist()))[:2]
    swapped = np.where(grid == low, high, np.where(grid == high, low, grid))
    task = Task("c0105a9b", tuple(Example(grid, swapped) for _ in range(3)), (Example(grid, None),))
    challenges = tmp_path / "swap_challenges.json"
    challenges.write_text(json.dumps({task.id: task.to_json()}))
    full = count_tokens(tiny_tokenizer(), prompts.transduction_prompt(ours, task.train, grid, tiny_tokenizer()).text)
    learn = dict(n_augmentations=1, ttt_augmentations=1, ttt_epochs=100, ttt_steps=100, learning_rate=3e-3,
                 lr_schedule="constant", lora_rank=8, lora_alpha=16, gradient_checkpointing=False,
                 max_prompt_tokens=full - 1, scorer="augmented")
    config = RunConfig(challenges=str(challenges), out_dir=str(tmp_path / "run"), workers=1, time_limit_s=600,
                       safety_margin_s=5, engine=EngineConfig(kind="hf", model="tiny"), monitor_interval_s=0.5,
                       solver=SolverConfig("doubles.solvers:transduction_scoring_fails", learn))
    result = run(config)
    events = list(read_events(tmp_path / "run" / "journals"))
    failed = [e for e in events if e["event"] == "solver-error"]
    assert len(failed) == 1 and "planted: scoring ran out of memory" in failed[0]["error"]
    voted = [e for e in events if e["event"] == "candidates" and e["worker"] == "worker-0"]
    assert voted and voted[0]["t"] < failed[0]["t"] and "augmented" not in voted[0]["candidates"][0]["detail"]
    assert result.statuses == {"error": 1}
    submission = json.loads(result.submission_path.read_text())
    assert submission[task.id][0]["attempt_1"] == swapped.tolist()


def test_the_preflight_names_the_ray_extra_when_ray_cannot_be_imported(tmp_path, monkeypatch):
    """What a machine without the [ray] extra is told: before anything runs, with the install line."""
    import importlib.util

    from arc_submit.preflight import PreflightError, preflight

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    with pytest.raises(PreflightError, match=r"backend ray: Ray cannot be imported; install the \[ray\] extra "
                                             r"\(pip install -e '\.\[ray\]'\)"):
        preflight(make_config(tmp_path, n_tasks=2, backend="ray"), strict=True)
    assert preflight(make_config(tmp_path, n_tasks=2), strict=True) == []  # the local backend needs no Ray
