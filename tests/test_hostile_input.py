"""Hostile and careless input, each case as a user met it (issue: "nothing written outside the run, no stale
answers, no broken deadline"). The challenges file of a scoring rerun is not ours, an out folder may hold an old
run, settings are typed by hand: every case ends in a message naming the file or option and the fix, never a
traceback, a file outside the run, an answer for another input, or a run without a deadline.

The pipeline cases use the answer-the-truth solver double (`doubles.solvers:faulty`) so every answer can be traced.
"""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from arc_submit import cli
from arc_submit.config import ConfigError, EngineConfig, IcecuberConfig, RunConfig, SolverConfig, load_config
from arc_submit.journal import JournalError, collect, read_events
from arc_submit.pipeline import run
from arc_submit.run_folder import RunFolderMismatch
from arc_submit.submission import validate
from arc_submit.tasks import load_tasks

ARC2 = "arc-agi-2/evaluation"


def small_tasks(arc2_eval, n):
    """The n real tasks of fewest cells: quick for a solver double, and for icecuber at depth 1."""
    return sorted(arc2_eval.values(), key=lambda t: (t.cost_estimate(), t.id))[:n]


def write_file(path, tasks_by_id, with_outputs=True):
    path.write_text(json.dumps({tid: t.to_json(with_solutions=with_outputs) for tid, t in tasks_by_id.items()}))
    return path


def cli_main(capsys, *args):
    """The console script in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def config_for(tmp_path, challenges, out, **kwargs):
    settings = {"workers": 2, "time_limit_s": 120, "safety_margin_s": 5, "monitor_interval_s": 0.5, **kwargs}
    return RunConfig(challenges=str(challenges), out_dir=str(out), engine=EngineConfig(kind="none"),
                     solver=SolverConfig("doubles.solvers:faulty"), **settings)


# ---- input files: every failure names the file and the fix, exit 1 ---------------------------------------------

def _bytes_cases(good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (file content, what the message must say)."""
    return {
        "non-UTF-8 byte": (good[:20] + b"\xff" + good[20:], "not UTF-8 text (byte 0xff"),
        "5000-digit integer": (b'{"a": ' + b"9" * 5000 + b"}", "a number of 5000 digits"),
        "100k-deep nesting": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than any ARC file"),
        "NaN literal": (b'{"a": NaN}', "NaN"),
        "truncated": (good[: len(good) // 2], "not valid JSON"),
        "duplicate task id": (b'{"00576224": {"train": [], "test": []}, "00576224": {}}',
                              "key '00576224' appears twice"),
    }


@pytest.mark.parametrize("case", list(_bytes_cases(b"")))
@pytest.mark.parametrize("command", ["tasks", "validate", "score", "run"])
def test_a_bad_input_file_is_named_with_its_fix(tmp_path, capsys, arc2_eval, case, command):
    good = json.dumps({t.id: t.to_json() for t in small_tasks(arc2_eval, 2)}).encode()
    content, expected = _bytes_cases(good)[case]
    bad = tmp_path / "bad_challenges.json"
    bad.write_bytes(content)
    submission = tmp_path / "submission.json"
    submission.write_text("{}")
    args = {"tasks": ["tasks", bad], "validate": ["validate", submission, "--challenges", bad],
            "score": ["score", submission, "--solutions", bad],
            "run": ["run", "--challenges", bad, "--out", tmp_path / "out", "--set", "engine.kind=none"]}[command]
    code, _, err = cli_main(capsys, *args)
    assert code == 1, err
    assert str(bad) in err and expected in err and "Traceback" not in err


def test_a_bad_submission_file_says_write_it_again(tmp_path, capsys):
    sub = tmp_path / "submission.json"
    sub.write_bytes(b'{"00576224": [], "00576224": []}')
    code, _, err = cli_main(capsys, "validate", sub, "--challenges", ARC2)
    assert code == 1 and str(sub) in err and "key '00576224' appears twice" in err
    sub.write_bytes(b'{"00576224": [')
    code, _, err = cli_main(capsys, "validate", sub, "--challenges", ARC2)
    assert code == 1 and "write it again" in err and "download" not in err


def test_a_folder_for_the_challenges_is_named(tmp_path, capsys):
    code, _, err = cli_main(capsys, "tasks", tmp_path)
    assert code == 1 and f"{tmp_path}: is a folder, not a JSON file" in err


def test_a_byte_order_mark_is_read_past_with_a_warning(tmp_path, capsys, arc2_eval, caplog):
    tasks = {t.id: t for t in small_tasks(arc2_eval, 2)}
    path = tmp_path / "bom_challenges.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({tid: t.to_json() for tid, t in tasks.items()}).encode())
    code, out, _ = cli_main(capsys, "tasks", path)
    assert code == 0 and "2 tasks" in out
    assert "byte-order mark" in caplog.text


def test_run_exits_1_on_invalid_challenges_as_the_readme_says(tmp_path, capsys):
    bad = tmp_path / "x_challenges.json"
    bad.write_text('{"a": {"train": [], "test": []}}')
    code, _, err = cli_main(capsys, "run", "--challenges", bad, "--out", tmp_path / "out", "--set", "engine.kind=none")
    assert code == 1 and str(bad) in err and "task a" in err


# ---- the command line's numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "x"])
@pytest.mark.parametrize("command", ["validate", "score"])
def test_n_tasks_must_be_a_whole_number_of_at_least_one(tmp_path, capsys, command, value):
    sub = tmp_path / "s.json"
    sub.write_text("{}")
    flag = "--challenges" if command == "validate" else "--solutions"
    code, _, err = cli_main(capsys, command, sub, flag, ARC2, "--n-tasks", value)
    assert code == 2 and "--n-tasks" in err and ("at least 1" in err or "whole number" in err)


def test_score_flags_a_file_validate_rejects(tmp_path, capsys, arc2_eval):
    tasks = small_tasks(arc2_eval, 2)
    # Right answers, but attempt_2 missing: Kaggle rejects the file, so it scores nothing there.
    sub = {t.id: [{"attempt_1": ex.output.tolist()} for ex in t.test] for t in tasks}
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(sub))
    solutions = tmp_path / "x_solutions.json"
    solutions.write_text(json.dumps({t.id: [ex.output.tolist() for ex in t.test] for t in tasks}))
    code, out, _ = cli_main(capsys, "score", path, "--solutions", solutions)
    assert code == 1 and "missing attempt_2" in out and "INVALID" in out and "Kaggle would reject it" in out


# ---- settings: every number checked, the option named ---------------------------------------------------------

@pytest.mark.parametrize("overrides, named", [
    (dict(time_limit_s=math.nan), "time_limit_s"),
    (dict(time_limit_s=math.inf), "time_limit_s"),
    (dict(time_limit_s="nan"), "time_limit_s"),
    (dict(safety_margin_s=-60, time_limit_s=60), "safety_margin_s"),
    (dict(safety_margin_s=math.nan), "safety_margin_s"),
    (dict(safety_margin_s=60, time_limit_s=60), "must exceed safety_margin_s"),
    (dict(n_tasks=0), "n_tasks"),
    (dict(max_task_s=-1), "max_task_s"),
    (dict(overrun_grace_s=math.inf), "overrun_grace_s"),
    (dict(monitor_interval_s=0), "monitor_interval_s"),
    (dict(assemble_every_s=math.nan), "assemble_every_s"),
    (dict(workers=0), "workers"),
    (dict(started_at=math.nan), "started_at"),
])
def test_numbers_are_finite_and_in_range(overrides, named):
    with pytest.raises(ConfigError, match=named):
        load_config(**overrides)


def test_a_nan_limit_on_the_command_line_is_a_usage_error(tmp_path, capsys):
    code, _, err = cli_main(capsys, "run", "--out", tmp_path / "out", "--set", "time_limit_s=.nan")
    assert code == 2 and "time_limit_s: expected a finite number" in err


# ---- the output folder -------------------------------------------------------------------------------------

def test_an_output_folder_that_is_a_file_or_unwritable_is_named(tmp_path, capsys):
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    code, _, err = cli_main(capsys, "run", "--out", blocker, "--set", "engine.kind=none", "--n-tasks", "1")
    assert code == 1 and f"out_dir {blocker}: a file is in the way" in err
    # Even root cannot write under /sys: the one unwritable folder a test running as root can rely on.
    code, _, err = cli_main(capsys, "run", "--out", "/sys/arc-submit-out", "--set", "engine.kind=none",
                            "--n-tasks", "1")
    assert code == 1 and "out_dir /sys/arc-submit-out: cannot write there" in err


# ---- task ids are data, never paths -------------------------------------------------------------------------

HOSTILE_IDS = ["../../../ESCAPED", "..", ".", "a/b", "-", "", "x\x00y", "new\nline", "z" * 300]


def test_hostile_task_ids_write_nothing_outside_the_run(tmp_path, arc2_eval, icecuber_build):
    """Every id a hostile challenges file can hold, through the whole run with icecuber and pictures on."""
    root = tmp_path / "root"
    out = root / "a" / "b" / "c" / "out"
    root.mkdir()
    absolute = str(tmp_path / "ABSOLUTE")
    ids = HOSTILE_IDS + [absolute]
    real = small_tasks(arc2_eval, len(ids))
    tasks = {hostile: type(t)(hostile, t.train, t.test) for hostile, t in zip(ids, real)}
    challenges = write_file(root / "hostile_challenges.json", tasks)
    before = {p for p in tmp_path.rglob("*")}
    config = config_for(tmp_path, challenges, out, icecuber=IcecuberConfig(str(icecuber_build), {"depths": [1],
                                                                                                 "processes": 2}))
    result = run(config)
    assert result.problems == []
    new = {p for p in tmp_path.rglob("*")} - before
    outside = sorted(str(p) for p in new if out not in p.parents and p != out and p not in out.parents)
    assert outside == []
    assert not os.path.exists(absolute + ".png") and not (tmp_path / "ESCAPED.png").exists()
    pictures = list((out / "tasks").glob("*.png"))
    assert len(pictures) == 6  # the report draws six tasks, each in its own file inside OUT/tasks
    submission = json.loads((out / "submission.json").read_text())
    assert set(submission) == set(ids)
    for hostile in ids:  # each id got its own, right answers: "-" included (once taken for a worker event)
        for entry, ex in zip(submission[hostile], tasks[hostile].test, strict=True):
            assert ex.output.tolist() in (entry["attempt_1"], entry["attempt_2"])
    assert collect(out / "journals", tasks)["-"].status == "done"


def test_ids_that_map_to_one_file_name_are_refused(tmp_path, capsys, arc2_eval):
    from arc_submit.fileio import safe_file_name

    a, b = small_tasks(arc2_eval, 2)
    # A plain id that equals another id's mapped name: the run would write both pictures to one file.
    tasks = {"a/b": a, safe_file_name("a/b"): b}
    path = write_file(tmp_path / "clash_challenges.json", tasks)
    code, _, err = cli_main(capsys, "tasks", path)
    assert code == 1 and "map to the same file name" in err and "'a/b'" in err


# ---- a run folder knows what it was run on ------------------------------------------------------------------

def test_resuming_on_other_test_inputs_refuses_and_fresh_solves_anew(tmp_path, capsys, arc2_eval):
    first, second = small_tasks(arc2_eval, 2), small_tasks(arc2_eval, 4)[2:]
    ids = ["task0001", "task0002"]
    old = write_file(tmp_path / "old_challenges.json", dict(zip(ids, first)))
    new = write_file(tmp_path / "new_challenges.json", dict(zip(ids, second)))  # same ids, other test inputs
    out = tmp_path / "out"
    assert run(config_for(tmp_path, old, out)).problems == []
    good = (out / "submission.json").read_bytes()

    with pytest.raises(RunFolderMismatch) as refused:
        run(config_for(tmp_path, new, out))
    message = str(refused.value)
    assert "the challenges (recorded: 2 tasks" in message and "--fresh" in message and "another folder" in message
    assert (out / "submission.json").read_bytes() == good  # refused before anything was written

    # `assemble --challenges other.json` refuses the same way and keeps the good file.
    code, _, err = cli_main(capsys, "assemble", out, "--challenges", new)
    assert code == 1 and "was run on other challenges" in err
    assert (out / "submission.json").read_bytes() == good

    result = run(config_for(tmp_path, new, out, fresh=True))
    sub = json.loads(result.submission_path.read_text())
    for tid, task in zip(ids, second):  # the new inputs' answers, none of the old ones
        assert [e["attempt_1"] for e in sub[tid]] == [ex.output.tolist() for ex in task.test]
    assert len(list(out.glob("replaced-*/journals/journal-*.jsonl"))) >= 2  # the old run was moved, not deleted


def test_changed_answer_settings_refuse_to_resume(tmp_path, arc2_eval):
    path = write_file(tmp_path / "x_challenges.json", {t.id: t for t in small_tasks(arc2_eval, 1)})
    out = tmp_path / "out"
    run(config_for(tmp_path, path, out))
    changed = config_for(tmp_path, path, out, seed=7)
    with pytest.raises(RunFolderMismatch, match=r"the settings seed \(recorded 0, now 7\)"):
        run(changed)
    other_options = config_for(tmp_path, path, out)
    other_options.solvers[0].options = {"sleep_s": 0.2}
    with pytest.raises(RunFolderMismatch, match=r"solvers.doubles.solvers:faulty \(recorded \{\}, now \{'sleep_s'"):
        run(other_options)
    # Time and workers are not answer settings: a killed run resumed with more time is the same run.
    assert run(config_for(tmp_path, path, out, time_limit_s=300)).problems == []


def test_answers_are_used_only_for_the_test_input_they_were_found_for(tmp_path, arc2_eval):
    """Below the fingerprint: a journal line for another input of the same task id is left out, counted."""
    from arc_submit.candidates import Candidate
    from arc_submit.journal import Journal, ReadStats

    a, b = small_tasks(arc2_eval, 2)
    with Journal(tmp_path, "worker-0") as journal:
        journal.candidates(a.id, 0, b.test[0].input, [Candidate(b.test[0].output, "s")])  # b's input, a's id
        journal.candidates(a.id, 0, a.test[0].input, [Candidate(a.test[0].output, "s")])
    stats = ReadStats()
    record = collect(tmp_path, {a.id: a}, stats)[a.id]
    assert [c.grid.tolist() for c in record.candidates[0]] == [a.test[0].output.tolist()]
    assert "for another test input" in stats.describe()


# ---- journals: the reader is total ---------------------------------------------------------------------------

def test_malformed_journal_lines_are_skipped_and_counted_never_raised(tmp_path, arc2_eval):
    from arc_submit.journal import ReadStats, input_key

    task = small_tasks(arc2_eval, 1)[0]
    good = {"t": 1.0, "worker": "w", "event": "candidates", "task_id": task.id, "test_index": 0,
            "input": input_key(task.test[0].input), "candidates": [{"grid": [[1]], "solver": "s"}]}
    bad_lines = [{k: v for k, v in good.items() if k != "worker"},
                 {k: v for k, v in good.items() if k != "t"},
                 {**good, "test_index": "0"}, {**good, "test_index": 1.5}, {**good, "test_index": True},
                 {**good, "task_id": [task.id]}, {**good, "t": "soon"}, {**good, "candidates": "x"},
                 {**good, "event": "solver-done"},  # no solver name
                 [1, 2], "a string"]
    lines = [json.dumps(line) for line in bad_lines] + ["{torn", "\xff\xfe", json.dumps(good)]
    folder = tmp_path / "journals"
    folder.mkdir()
    (folder / "journal-w.jsonl").write_text("\n".join(lines) + "\n", errors="surrogateescape")
    (folder / "journal-dir.jsonl").mkdir()  # a folder where a journal should be
    stats = ReadStats()
    records = collect(folder, {task.id: task}, stats)
    assert [c.grid.tolist() for c in records[task.id].candidates[0]] == [[[1]]]
    assert sum(stats.skipped.values()) == len(bad_lines) + 2
    assert stats.unreadable == [str(folder / "journal-dir.jsonl")]


def test_assemble_of_malformed_journals_writes_a_valid_file_and_says_what_it_skipped(tmp_path, capsys, arc2_eval):
    path = write_file(tmp_path / "x_challenges.json", {t.id: t for t in small_tasks(arc2_eval, 2)})
    out = tmp_path / "out"
    run(config_for(tmp_path, path, out))
    with open(out / "journals" / "journal-worker-0.jsonl", "a") as f:
        f.write(json.dumps({"event": "done", "task_id": ["x"]}) + "\n{torn\n")
    (out / "journals" / "journal-zz.jsonl").mkdir()
    code, out_text, err = cli_main(capsys, "assemble", out)
    assert code == 0 and "Traceback" not in err
    assert "WARNING: journals: " in out_text and "unreadable journal" in out_text and "(valid)" in out_text


def test_a_folder_in_place_of_a_journal_still_leaves_a_submission(tmp_path, arc2_eval):
    tasks = {t.id: t for t in small_tasks(arc2_eval, 2)}
    path = write_file(tmp_path / "x_challenges.json", tasks)
    out = tmp_path / "out"
    run(config_for(tmp_path, path, out))
    journal = out / "journals" / "journal-worker-0.jsonl"
    journal.unlink()
    journal.mkdir()
    (out / "submission.json").unlink()
    with pytest.raises(JournalError, match="journal-worker-0.jsonl: cannot be written.*remove what is in its place"):
        run(config_for(tmp_path, path, out))
    submission = json.loads((out / "submission.json").read_text())
    assert validate(submission, load_tasks(path)) == []  # the fallback file, written before the failure


def test_a_task_whose_answer_lines_are_garbled_is_solved_again(tmp_path, arc2_eval):
    tasks = {t.id: t for t in small_tasks(arc2_eval, 2)}
    path = write_file(tmp_path / "x_challenges.json", tasks)
    out = tmp_path / "out"
    run(config_for(tmp_path, path, out))
    victim = sorted(tasks)[0]
    for journal in (out / "journals").glob("journal-worker-*.jsonl"):
        lines = journal.read_text().splitlines()
        garbled = [line.replace('"candidates":[', '"candidates":[{') if f'"task_id":"{victim}"' in line
                   and '"event":"candidates"' in line else line for line in lines]
        journal.write_text("\n".join(garbled) + "\n")
    result = run(config_for(tmp_path, path, out))
    starts = [e for e in read_events(out / "journals") if e["event"] == "start"]
    assert sorted(e["task_id"] for e in starts) == sorted([*tasks, victim])  # only the garbled one again
    sub = json.loads(result.submission_path.read_text())
    assert [e["attempt_1"] for e in sub[victim]] == [ex.output.tolist() for ex in tasks[victim].test]


# ---- outputs are ordinary files -------------------------------------------------------------------------------

def test_outputs_are_readable_by_the_group_like_any_file(tmp_path, arc2_eval):
    path = write_file(tmp_path / "x_challenges.json", {t.id: t for t in small_tasks(arc2_eval, 1)})
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        run(config_for(tmp_path, path, out))
    finally:
        os.umask(old)
    for name in ("submission.json", "report.md", "tasks.csv", "run-config.json"):
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_skip_invalid_entries_can_be_validated(tmp_path, capsys, arc2_eval):
    good = small_tasks(arc2_eval, 2)
    raw = {t.id: t.to_json(with_solutions=True) for t in good}
    raw["badtask1"] = {"train": [{"input": [[12]], "output": [[0]]}], "test": [{"input": [[1]]}, {"input": [[2]]}]}
    path = tmp_path / "x_challenges.json"
    path.write_text(json.dumps(raw))
    out = tmp_path / "out"
    code, _, err = cli_main(capsys, "run", "--challenges", path, "--out", out, "--skip-invalid", "--set",
                            "engine.kind=none", "--set", "solver.name=doubles.solvers:faulty", "--set", "workers=2")
    assert code == 0, (err[-3000:], _)
    submission = out / "submission.json"
    code, stdout, _ = cli_main(capsys, "validate", submission, "--challenges", path, "--skip-invalid")
    assert code == 0 and "valid" in stdout
    broken = json.loads(submission.read_text())
    broken["badtask1"] = broken["badtask1"][:1]  # one entry for its two test inputs
    submission.write_text(json.dumps(broken))
    code, stdout, _ = cli_main(capsys, "validate", submission, "--challenges", path, "--skip-invalid")
    assert code == 1 and "task badtask1: 1 entries for 2 test inputs" in stdout
    code, _, err = cli_main(capsys, "validate", submission, "--challenges", path)  # the hint names a real flag
    assert code == 1 and "--skip-invalid" in err


def test_adapters_of_hostile_task_ids_stay_in_the_adapter_folder(tmp_path, arc1_train):
    """An adapter's name is its folder's name: the engines refuse any name that is not a plain file name, and the
    solvers name adapters through safe_file_name, so a task id `../../x` trains (and saves) inside the folder."""
    from arc_submit.budget import Deadline
    from arc_submit.llm import TrainSettings, make_engine
    from arc_submit.llm.engine import TrainingText
    from arc_submit.solvers import SolverContext
    from arc_submit.solvers.transduction import TRANSDUCTION
    from arc_submit.tasks import Example, Task

    engine = make_engine("hf", "tiny", max_batch_sequences=8)
    try:
        with pytest.raises(ValueError, match="not a plain file name"):
            engine.train_adapter("transduction-../../x", [TrainingText.pair("a", "b")], TrainSettings(max_steps=1))
        grid = arc1_train["6150a2bd"].train[0].input
        task = Task("../../ESCAPED", tuple(Example(grid, grid[::-1]) for _ in range(2)), (Example(grid, grid[::-1]),))
        trained = []
        original_train = engine.train_adapter

        def train_and_save(name, *args, **kwargs):  # as the vllm engine does: each adapter saved to its folder
            adapter = original_train(name, *args, **kwargs)
            trained.append(engine.save_adapter(adapter, tmp_path / "adapters"))
            return adapter

        engine.train_adapter = train_and_save
        context = SolverContext.for_engine(engine)
        options = TRANSDUCTION.make_options(dict(n_augmentations=1, ttt_augmentations=1, ttt_steps=2, lora_rank=4,
                                                 lora_alpha=8, gradient_checkpointing=False))
        per_test = TRANSDUCTION.solve(task, Deadline.in_seconds(120), context, options)
        context.close()
        assert len(per_test) == 1 and len(trained) == 1
        path = trained[0].path
        assert path.parent == tmp_path / "adapters" and path.name.startswith("transduction-ESCAPED-")
        assert not (tmp_path.parent / "ESCAPED").exists() and not any(p.name == "x" for p in tmp_path.rglob("*"))
    finally:
        engine.close()
