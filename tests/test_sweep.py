"""`arc-submit sweep`: several configs over the same tasks, each a real run (engine none, the test-double solvers)
into its own folder, one table; checked up front, resumed on a re-run."""

import csv
import json

import pytest

from arc_submit import cli
from arc_submit.journal import read_events
from arc_submit.submission import validate
from arc_submit.sweep import SweepRefused, run_sweep
from arc_submit.tasks import load_tasks

DATASET = "arc-agi-2/evaluation"
N_TASKS = 3


def task_ids(n=N_TASKS):
    return list(load_tasks(DATASET, limit=n))


def write_config(folder, name, solver_options=None, **keys):
    """A YAML config of a short CPU run with doubles.solvers:faulty (the true answers, or misbehaving on demand)."""
    lines = [f"challenges: {DATASET}", f"n_tasks: {N_TASKS}", "workers: 1", "time_limit_s: 120",
             "safety_margin_s: 5", "monitor_interval_s: 0.5", "engine: {kind: none}",
             f"solver: {{name: 'doubles.solvers:faulty', options: {json.dumps(solver_options or {})}}}"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in keys.items()]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def starts(folder):
    return [e for e in read_events(folder / "journals") if e["event"] == "start"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep of two configs: `clean` solves every task, `flaky` raises on the first task."""
    folder = tmp_path_factory.mktemp("sweep")
    configs = [write_config(folder, "clean"), write_config(folder, "flaky", {"raise_on": [task_ids()[0]]})]
    out = folder / "out"
    return configs, out, run_sweep([str(c) for c in configs], out)


def test_two_configs_give_two_valid_runs_and_one_table_with_their_scores(swept):
    _, out, result = swept
    tasks = load_tasks(DATASET, limit=N_TASKS)
    for name in ("clean", "flaky"):
        submission = json.loads((out / name / "submission.json").read_text())
        assert validate(submission, tasks) == [] and set(submission) == set(tasks)
        assert (out / name / "report.md").is_file()
    clean, flaky = result.rows
    assert (clean.name, clean.score, clean.solved, clean.n_tasks) == ("clean", 1.0, 3, 3)
    assert clean.statuses == {"done": 3} and clean.error == ""
    # The task it raised on takes the fallback (scores 0); the other two are solved.
    assert (flaky.name, flaky.score, flaky.solved) == ("flaky", pytest.approx(2 / 3, abs=1e-12), 2)
    assert flaky.statuses == {"done": 2, "error": 1} and flaky.error == ""
    assert result.failed == []

    table = (out / "sweep.md").read_text()
    assert result.table_path == out / "sweep.md"
    assert "| clean | 1.0000 | 3/3 |" in table and "| flaky | 0.6667 | 2/3 |" in table
    assert str(out / "flaky") in table
    with open(out / "sweep.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"clean", "flaky"}
    assert float(rows["clean"]["score"]) == 1.0 and float(rows["flaky"]["score"]) == pytest.approx(2 / 3)
    assert rows["flaky"]["solved"] == "2" and rows["flaky"]["tasks"] == "3"
    assert rows["flaky"]["statuses"] == "done=2;error=1" and rows["flaky"]["folder"] == str(out / "flaky")


def test_running_the_sweep_again_resumes_every_run_without_solving_again(swept):
    configs, out, first = swept
    before = {name: len(starts(out / name)) for name in ("clean", "flaky")}
    assert before == {"clean": 3, "flaky": 3}
    again = run_sweep([str(c) for c in configs], out)
    assert {name: len(starts(out / name)) for name in ("clean", "flaky")} == before
    assert [(r.name, r.score, r.statuses) for r in again.rows] == [(r.name, r.score, r.statuses) for r in first.rows]


def test_duplicate_names_are_refused_up_front_naming_both(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = write_config(tmp_path / "a", "base"), write_config(tmp_path / "b", "base")
    with pytest.raises(SweepRefused) as caught:
        run_sweep([str(one), str(two)], tmp_path / "out")
    assert caught.value.usage and str(one) in str(caught.value) and str(two) in str(caught.value)
    with pytest.raises(SweepRefused, match="'base' is given twice"):  # a variant named like a file
        run_sweep([str(one)], tmp_path / "out", variants=[("base", {"seed": 1})])
    with pytest.raises(SweepRefused, match="not usable as a folder name"):
        run_sweep([str(one)], tmp_path / "out", variants=[("../up", {"seed": 1})])
    with pytest.raises(SweepRefused, match="each run's folder is OUT/<name>"):
        run_sweep([str(one)], tmp_path / "out", shared={"out_dir": str(tmp_path / "elsewhere")})
    assert not (tmp_path / "out").exists()


def test_a_broken_second_config_fails_before_the_first_runs(tmp_path):
    good = write_config(tmp_path, "good")
    typo = tmp_path / "typo.yaml"
    typo.write_text(good.read_text().replace("engine: {kind: none}", "engine: {kind: none, modle: x}"))
    with pytest.raises(SweepRefused) as caught:
        run_sweep([str(good), str(typo)], tmp_path / "out")
    assert caught.value.usage  # a config key: the CLI's exit 2
    [problem] = caught.value.problems
    assert str(typo) in problem and "engine.modle" in problem
    assert not (tmp_path / "out" / "good").exists()

    # A solver option its solver does not know is the preflight's finding (exit 1), named the same way.
    unknown_option = write_config(tmp_path, "unknown_option", {"no_such_option": 1})
    with pytest.raises(SweepRefused) as caught:
        run_sweep([str(good), str(unknown_option)], tmp_path / "out")
    assert not caught.value.usage
    [problem] = caught.value.problems
    assert str(unknown_option) in problem and "no_such_option" in problem
    assert not (tmp_path / "out" / "good").exists()

    # Both at once: every config's problem is listed, the config error decides the exit code.
    with pytest.raises(SweepRefused) as caught:
        run_sweep([str(good), str(typo), str(unknown_option)], tmp_path / "out")
    assert caught.value.usage and len(caught.value.problems) == 2
    assert str(typo) in caught.value.problems[0] and str(unknown_option) in caught.value.problems[1]
    assert not (tmp_path / "out").exists()


def test_cli_sweep_of_a_base_and_variants_end_to_end(tmp_path, capsys):
    """base + one variant that raises on every task: both run, the failing one is a row saying so, exit 1. Then
    the same sweep with that variant changed is refused before any run, naming it and --fresh."""
    base = write_config(tmp_path, "base")
    out = tmp_path / "out"
    every_task = ",".join(task_ids(2))
    argv = ["sweep", str(base), "--out", str(out), "--n-tasks", "2", "--set", "solver.options={sleep_s: 0.05}",
            "--variant", f"broken:solver.options={{raise_on: [{every_task}]}},seed=1"]
    assert cli.main(argv) == cli.EXIT_FAILED
    printed = capsys.readouterr()
    assert "| base | 1.0000 | 2/2 |" in printed.out
    assert "| broken | 0.0000 | 0/2 |" in printed.out and "settled no task" in printed.out
    assert "variant broken" in printed.err and "settled no task" in printed.err
    assert (out / "sweep.md").read_text().count("| base |") == 1
    assert len(starts(out / "base")) == 2 and len(starts(out / "broken")) == 2
    assert validate(json.loads((out / "broken" / "submission.json").read_text()), load_tasks(DATASET, limit=2)) == []

    changed = argv[:-1] + ["broken:solver.options={raise_on: []},seed=1"]
    assert cli.main(changed) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "variant broken" in err and "--fresh" in err and "sweep refused before any run" in err
    assert "config base" not in err  # the unchanged base resumes: only the changed run is named
    assert len(starts(out / "base")) == 2 and len(starts(out / "broken")) == 2


def test_cli_usage_errors_name_the_flag(capsys):
    assert cli.main(["sweep", "x.yaml", "--out", "o", "--variant", "no-colon"]) == cli.EXIT_USAGE
    assert "--variant 'no-colon': expected NAME:KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["sweep", "x.yaml", "--out", "o", "--set", "seed"]) == cli.EXIT_USAGE
    assert "--set 'seed': expected KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["sweep", "missing.yaml", "--out", "o"]) == cli.EXIT_USAGE
    assert "config missing (missing.yaml): no such config file" in capsys.readouterr().err


def test_variant_values_keep_their_commas_inside_brackets():
    assert cli.parse_variant("v:solver.options={raise_on: [a, b], sleep_s: 0.5},seed=2") == (
        "v", {"solver.options": {"raise_on": ["a", "b"], "sleep_s": 0.5}, "seed": 2})
    assert cli.parse_set_items(["n_tasks=3", "fresh=true", "solver.name=induction", "x=null"]) == {
        "n_tasks": 3, "fresh": True, "solver.name": "induction", "x": None}
    with pytest.raises(cli.UsageError, match="not valid YAML"):
        cli.parse_set_items(["solver.options={a: [1"])
