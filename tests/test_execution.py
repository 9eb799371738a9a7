"""Sandboxed execution: the adversarial corpus in tests/data/adversarial_programs, real ARC tasks, the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from arc_submit import cli
from arc_submit.execution import (ERROR_CLASSES, ExecutionError, ExecutionSettings, Executor, error_counts,
                                  execute, group_by_behaviour)
from arc_submit.landlock import landlock_abi

DATA = Path(__file__).parent / "data"
CORPUS = sorted((DATA / "adversarial_programs").glob("*.py"))
LIBRARY = DATA / "program_library"
TIMEOUT_S = 1.0
INPUTS = [np.array([[1, 2, 0], [0, 3, 4]]), np.eye(3, dtype=int) * 5]
ESCAPE_FILE = Path("/tmp/arc_submit_sandbox_escape.txt")


def expected_classes(path: Path) -> set[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <class>[|<class>]'"
    return set(first[len("# expect: "):].split("|"))


def descendants_of_sessions(sids: set[int]) -> list[psutil.Process]:
    """Live (not zombie) processes in the given sessions, plus any live descendant of this test process."""
    found = {}
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(p.pid) in sids:
                found[p.pid] = p
        except (OSError, psutil.Error):
            pass
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found[p.pid] = p
        except psutil.Error:
            pass
    return list(found.values())


def program_processes(executor: Executor) -> list[psutil.Process]:
    """Processes other than the workers (zygotes and their idle runners): what programs left behind."""
    workers = {z.process.pid for z in executor._zygotes}
    for z in executor._zygotes:  # a runner: the zygote's child leading its own process group, waiting for work
        for child in psutil.Process(z.process.pid).children():
            try:
                if os.getpgid(child.pid) == child.pid and child.status() != psutil.STATUS_ZOMBIE:
                    workers.add(child.pid)
            except (OSError, psutil.Error):  # gone meanwhile
                pass
    leftovers = {p.pid: p for p in descendants_of_sessions({z.process.pid for z in executor._zygotes})}
    for z in executor._zygotes:  # escapees from the session are reparented to the zygote (a subreaper)
        for p in psutil.Process(z.process.pid).children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    leftovers[p.pid] = p
            except psutil.Error:
                pass
    return [p for pid, p in leftovers.items() if pid not in workers]


# Both confinement levels: Landlock with runners reused (the default), and no Landlock with a fresh fork per
# program (what a kernel without Landlock gets; the worker-replacement paths only run there).
@pytest.fixture(scope="module", params=["landlock-reused", "no-landlock-fresh"])
def executor(request):
    reused = request.param == "landlock-reused"
    with Executor(timeout_s=TIMEOUT_S, workers=2, landlock=reused, programs_per_process=32 if reused else 1) as ex:
        ex.run(["def transform(g):\n    return g\n"], INPUTS)  # wait for the zygotes to be up
        yield ex
    sids = {z.process.pid for z in ex._zygotes}
    assert not descendants_of_sessions(sids)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_adversarial_program_is_classified_in_time_and_leaves_nothing(executor, path):
    ESCAPE_FILE.unlink(missing_ok=True)
    started = time.monotonic()
    (result,) = executor.run([path.read_text()], INPUTS)
    elapsed = time.monotonic() - started
    outcome = result.error or "ok"
    assert outcome in expected_classes(path), f"{path.name}: {outcome} {[o.message for o in result.outcomes]}"
    assert elapsed < TIMEOUT_S + 1.0, f"{path.name} took {elapsed:.2f} s"
    # No process left behind: give SIGKILLed processes a moment to leave the process table.
    deadline = time.monotonic() + 0.5
    while program_processes(executor) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not program_processes(executor), f"{path.name} left {program_processes(executor)}"
    assert all(z.process.poll() is None for z in executor._zygotes), "a zygote was left dead"
    if executor.sandboxed:
        assert not ESCAPE_FILE.exists(), "a program wrote outside its scratch dir under Landlock"
        if path.stem in ("kill_parent", "stop_parent", "write_outside_scratch"):
            assert outcome == "exception" and "Permission" in result.outcomes[0].message
    ESCAPE_FILE.unlink(missing_ok=True)
    # And the same executor still runs a healthy program correctly afterwards.
    (after,) = executor.run(["import numpy as np\ndef transform(g):\n    return np.rot90(g)\n"], INPUTS)
    assert after.ok and np.array_equal(after.outcomes[1].grid, np.rot90(INPUTS[1]))


def test_whole_corpus_in_parallel_classifies_every_program(executor):
    codes = [p.read_text() for p in CORPUS] + ["def transform(g):\n    return g[::-1]\n"]
    started = time.monotonic()
    results = executor.run(codes, INPUTS)
    elapsed = time.monotonic() - started
    for path, result in zip(CORPUS, results):
        assert (result.error or "ok") in expected_classes(path), path.name
        assert all(o.error in (None, *ERROR_CLASSES) for o in result.outcomes)
    assert results[-1].ok and np.array_equal(results[-1].outcomes[0].grid, INPUTS[0][::-1])
    n_timeouts = sum(r.error == "timeout" for r in results)
    assert elapsed < n_timeouts * (TIMEOUT_S + 0.6) / 2 + 5.0  # two workers share the timeouts
    assert not program_processes(executor)


def test_landlock_state_is_reported():
    with Executor(workers=1) as ex:
        ex.run(["def transform(g):\n    return g\n"], INPUTS)
        assert ex.sandboxed == (landlock_abi() > 0)


# Real ARC-AGI-1 training tasks with a one-line numpy solution each (all train and test pairs).
KNOWN_SOLUTIONS = {
    "3c9b0459": "np.rot90(grid, 2)",
    "6150a2bd": "np.rot90(grid, 2)",
    "67a3c6ac": "grid[:, ::-1]",
    "68b16354": "grid[::-1]",
    "74dd1130": "grid.T",
    "9dfd6313": "grid.T",
}


def program(expression: str, name: str = "transform") -> str:
    return f"import numpy as np\n\ndef {name}(grid):\n    return {expression}\n"


def test_real_tasks_solved_by_their_programs_and_not_by_others(arc1_train):
    tasks = [arc1_train[tid] for tid in KNOWN_SOLUTIONS]
    expressions = sorted(set(KNOWN_SOLUTIONS.values()))
    with Executor(timeout_s=TIMEOUT_S, workers=2) as ex:
        per_task = ex.run_tasks([([program(e) for e in expressions], [x.input for x in (*t.train, *t.test)])
                                 for t in tasks])
    for task, results in zip(tasks, per_task):
        expected = [x.output for x in (*task.train, *task.test)]
        solved = {e for e, r in zip(expressions, results) if r.matches(expected)}
        assert KNOWN_SOLUTIONS[task.id] in solved, task.id
        assert all(r.ok for r in results)
        assert all(o.grid.dtype == np.int8 for r in results for o in r.outcomes)


def test_main_entry_library_imports_and_accepted_output_types():
    codes = [
        "from common import *\n\ndef main(input_grid):\n    return flip_horizontal(input_grid)\n",
        "from common import *\n\ndef main(input_grid):\n    return input_grid * 0 + most_common_color(input_grid)\n",
        "def main(input_grid):\n    return [list(map(int, row)) for row in input_grid]\n",  # list of lists
        "def main(input_grid):\n    return tuple(tuple(int(c) for c in row) for row in input_grid)\n",  # tuples
        "import numpy as np\ndef main(input_grid):\n    assert isinstance(input_grid, np.ndarray)\n"
        "    assert input_grid.dtype.kind == 'i'\n    input_grid[0, 0] = 7\n    return input_grid\n",  # mutates
        "def main(input_grid):\n    return input_grid\n",  # must see the original, unmutated input
        "def transform(grid):\n    return grid\n",  # wrong entry name for this run
    ]
    results = execute(codes, INPUTS, entry="main", library_dir=str(LIBRARY), timeout_s=TIMEOUT_S, workers=2)
    assert [r.error for r in results] == [None] * 6 + ["exception"]
    assert np.array_equal(results[0].outcomes[0].grid, INPUTS[0][:, ::-1])
    assert np.array_equal(results[1].outcomes[1].grid, np.zeros((3, 3)))
    for r in results[2:4] + results[5:6]:
        assert np.array_equal(r.outcomes[0].grid, INPUTS[0])
    assert results[4].outcomes[0].grid[0, 0] == 7
    assert "main" in results[6].outcomes[0].message


def test_programs_get_int64_grids_so_arithmetic_does_not_wrap():
    # BARC's programs were written against int64 grids (numpy's default int); on int8 cells 9 * 31 wraps to 23.
    codes = ["def transform(grid):\n    return (grid * 31) % 10\n",  # 31 * c = c (mod 10) unless it wraps
             "import numpy as np\ndef transform(grid):\n    return np.full((1, 1), grid.dtype.itemsize)\n"]
    grid = np.full((30, 30), 9)
    scaled, itemsize = execute(codes, [grid], timeout_s=TIMEOUT_S, workers=1)
    assert scaled.ok and np.array_equal(scaled.outcomes[0].grid, grid), scaled.outcomes[0]
    assert itemsize.outcomes[0].grid.tolist() == [[8]]


def test_identical_texts_run_once_and_behaviours_group():
    flip_a, flip_b, other = program("grid[::-1]"), program("np.flipud(grid)"), program("grid.T")
    codes = [flip_a, other, flip_a, flip_b, "def transform(g) :(", flip_a]
    with Executor(timeout_s=TIMEOUT_S, workers=2) as ex:
        results = ex.run(codes, INPUTS)
        assert ex.programs_run == 4  # flip_a three times, run once
    assert [r.first_index for r in results] == [0, 1, 0, 3, 4, 0]
    groups = group_by_behaviour(results)
    assert list(groups.values())[0] == [0, 2, 3, 5]  # both flips behave the same, largest group first
    assert sorted(len(v) for v in groups.values()) == [1, 1, 4]
    assert error_counts(results) == {"ok": 5, "syntax": 1}


def test_partial_results_survive_a_timeout_on_a_later_input():
    code = "def transform(grid):\n    if grid.shape == (3, 3):\n        while True:\n            pass\n    return grid\n"
    (result,) = execute([code], INPUTS, timeout_s=0.5, workers=1)
    assert result.outcomes[0].ok and result.outcomes[1].error == "timeout"


def test_broken_library_is_a_clear_error(tmp_path):
    (tmp_path / "common.py").write_text("raise ImportError('half-copied library')\n")
    with pytest.raises(ExecutionError, match="half-copied library"):
        execute([program("grid")], INPUTS, library_dir=str(tmp_path), workers=1)
    with pytest.raises(ValueError, match="library_dir=.*missing.*no such folder"):
        Executor(library_dir=str(tmp_path / "missing"))


def test_a_library_dir_without_modules_is_refused_naming_the_folder_that_has_them(tmp_path):
    # What attaching a Kaggle dataset one folder too high looks like: the options fail (at preflight), not every
    # program of the run.
    (tmp_path / "barc-common" / "seeds").mkdir(parents=True)
    (tmp_path / "barc-common" / "seeds" / "common.py").write_text("class Color:\n    TEAL = 8\n")
    with pytest.raises(ValueError, match=r"option library_dir=.*holds no Python module.*common\.py in "
                                         rf"{tmp_path / 'barc-common' / 'seeds'}: give that folder"):
        ExecutionSettings(library_dir=str(tmp_path / "barc-common"))
    with pytest.raises(ValueError, match="a file, not a folder"):
        ExecutionSettings(library_dir=str(tmp_path / "barc-common" / "seeds" / "common.py"))
    assert ExecutionSettings(library_dir=str(tmp_path / "barc-common" / "seeds")).library_dir


def test_cli_execute_on_real_tasks(tmp_path, arc1_train, capsys):
    lines = [{"task_id": tid, "code": program(expr, "main")} for tid, expr in list(KNOWN_SOLUTIONS.items())[:3]]
    lines += [{"task_id": "3c9b0459", "code": program("grid.T", "main")},
              {"task_id": "67a3c6ac", "code": (DATA / "adversarial_programs" / "infinite_loop.py").read_text()
               .replace("def transform", "def main")}]
    programs = tmp_path / "programs.jsonl"
    programs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "results.jsonl"
    code = cli.main(["execute", str(programs), "--challenges", "arc-agi-1/training", "--entry", "main",
                     "--library", str(LIBRARY), "--timeout", "0.5", "--workers", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["reproduces_train"] for r in rows] == [True, True, True, False, False]
    assert [r["reproduces_test"] for r in rows] == [True, True, True, False, False]
    task = arc1_train["3c9b0459"]
    assert rows[0]["train"][0] == task.train[0].output.tolist()
    assert rows[4]["train"][0]["error"] == "timeout"
    assert "5 programs" in printed and "timeout: 1" in printed
    assert "reproduce all train outputs: 3" in printed and "reproduce train and test outputs: 3" in printed


def test_cli_execute_bad_line_names_file_and_line(tmp_path, capsys):
    programs = tmp_path / "programs.jsonl"
    programs.write_text(json.dumps({"task_id": "3c9b0459", "code": "x"}) + "\n{not json\n")
    code = cli.main(["execute", str(programs), "--challenges", "arc-agi-1/training", "--out",
                     str(tmp_path / "r.jsonl")])
    assert code == 1
    assert f"{programs}: line 2" in capsys.readouterr().err
    programs.write_text(json.dumps({"task_id": "no-such-task", "code": "x"}) + "\n")
    assert cli.main(["execute", str(programs), "--challenges", "arc-agi-1/training", "--out",
                     str(tmp_path / "r.jsonl")]) == 1
    assert "no-such-task" in capsys.readouterr().err
