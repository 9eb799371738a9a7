"""BARC-style programs through the sandbox: entry `transform`, `from common import *` against a user's library,
the colour aliases (BARC's model writes Color.PURPLE / Color.BROWN, BARC's common.py has TEAL / MAROON), scipy.

The library is tests/data/barc_common_standin/common.py, a stand-in double written for these tests (BARC's own
has no licence and is never shipped); the program is tests/data/barc_programs/b2862040.py, written here in the
style the model writes, for ARC task b2862040 (blue shapes on brown; closed ones turn purple).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from arc_submit import cli
from arc_submit.execution import Executor
from arc_submit.sandbox import COLOUR_ALIASES, add_colour_aliases
from arc_submit.tasks import load_tasks

DATA = Path(__file__).parent / "data"
STANDIN_LIBRARY = DATA / "barc_common_standin"
PROGRAM = DATA / "barc_programs" / "b2862040.py"
TASK_ID, DATASET = "b2862040", "arc-agi-2/training"


def load_standin_common():
    """The stand-in imported under a name of its own, so this process's `common` (if any) is left alone."""
    spec = importlib.util.spec_from_file_location("barc_common_standin", STANDIN_LIBRARY / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fixtures_are_what_the_tests_claim():
    # If someone "fixes" the stand-in with PURPLE, or the program stops using what it exercises, the tests
    # below would pass without proving anything.
    colour = load_standin_common().Color
    assert (colour.TEAL, colour.MAROON) == (8, 9)
    assert not hasattr(colour, "PURPLE") and not hasattr(colour, "BROWN")
    code = PROGRAM.read_text()
    assert "from common import *" in code and "def transform(input_grid)" in code
    assert "Color.PURPLE" in code and "Color.BROWN" in code and "find_connected_components(" in code
    assert "scipy.ndimage" in (STANDIN_LIBRARY / "common.py").read_text()


def test_add_colour_aliases_fills_the_missing_name_of_each_pair_both_ways():
    class BarcStyle:  # BARC's names
        TEAL, MAROON, GREY = 8, 9, 5

    class ModelStyle:  # the names BARC's training data uses
        PURPLE, BROWN, GRAY = 8, 9, 5

    class Both:  # a library that means something else by PURPLE keeps it
        PURPLE, TEAL = 3, 8

    class Neither:
        BLACK = 0

    assert add_colour_aliases(BarcStyle) == ["PURPLE", "BROWN", "GRAY"]
    assert (BarcStyle.PURPLE, BarcStyle.BROWN, BarcStyle.GRAY) == (8, 9, 5)
    assert add_colour_aliases(ModelStyle) == ["TEAL", "MAROON", "GREY"]
    assert (ModelStyle.TEAL, ModelStyle.MAROON, ModelStyle.GREY) == (8, 9, 5)
    assert add_colour_aliases(Both) == [] and (Both.PURPLE, Both.TEAL) == (3, 8)
    assert add_colour_aliases(Neither) == [] and not any(hasattr(Neither, n) for pair in COLOUR_ALIASES
                                                         for n in pair)
    assert add_colour_aliases(BarcStyle) == []  # a second pass (another module re-exporting Color) adds nothing


def test_barc_program_reproduces_its_task_through_arc_submit_execute(tmp_path, capsys):
    library_before = (STANDIN_LIBRARY / "common.py").read_bytes()
    programs = tmp_path / "programs.jsonl"
    programs.write_text(json.dumps({"task_id": TASK_ID, "code": PROGRAM.read_text()}) + "\n")
    out = tmp_path / "results.jsonl"
    code = cli.main(["execute", str(programs), "--challenges", DATASET, "--library", str(STANDIN_LIBRARY),
                     "--entry", "transform", "--workers", "1", "--timeout", "10", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    task = load_tasks(DATASET)[TASK_ID]
    assert row["train"] == [ex.output.tolist() for ex in task.train], row["train"]
    assert row["test"] == [ex.output.tolist() for ex in task.test], row["test"]
    assert row["reproduces_train"] is True and row["reproduces_test"] is True
    assert "reproduce train and test outputs: 1" in printed
    assert (STANDIN_LIBRARY / "common.py").read_bytes() == library_before  # aliases live in memory only


@pytest.mark.parametrize("confinement", ["landlock-reused", "no-landlock-fresh"])
def test_without_the_aliases_the_same_program_fails_with_attribute_error(confinement):
    reused = confinement == "landlock-reused"
    task = load_tasks(DATASET)[TASK_ID]
    inputs = [ex.input for ex in (*task.train, *task.test)]
    expected = [ex.output for ex in (*task.train, *task.test)]
    settings = dict(library_dir=str(STANDIN_LIBRARY), entry="transform", workers=1, timeout_s=10.0,
                    landlock=reused, programs_per_process=32 if reused else 1)
    with Executor(colour_aliases=False, **settings) as executor:
        (without,) = executor.run([PROGRAM.read_text()], inputs)
    assert [o.error for o in without.outcomes] == ["exception"] * len(inputs)
    # Color.BROWN is the first renamed colour the program reaches (the background it looks past).
    assert all(o.message == "AttributeError: type object 'Color' has no attribute 'BROWN'"
               for o in without.outcomes), [o.message for o in without.outcomes]
    with Executor(**settings) as executor:  # and with them (the default), under this confinement too
        (with_aliases,) = executor.run([PROGRAM.read_text()], inputs)
    assert with_aliases.matches(expected), [o.message for o in with_aliases.outcomes]


def test_programs_can_import_scipy_in_the_sandbox():
    code = ("import numpy as np\nfrom scipy import ndimage\n\ndef transform(grid):\n"
            "    labels, count = ndimage.label(grid != 0)\n    return np.array([[count]])\n")
    grid = np.array([[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    with Executor(workers=1) as executor:
        (result,) = executor.run([code], [grid])
    assert result.ok, result.outcomes[0].message
    assert result.outcomes[0].grid.tolist() == [[4]]


def test_the_induction_options_refuse_a_missing_library_before_any_work(tmp_path):
    # make_options is what the preflight calls for every solver of the run.
    from arc_submit.solvers import resolve_solver

    missing = tmp_path / "barc-common"
    with pytest.raises(ValueError, match=rf"induction solver: option library_dir='{missing}': no such folder"):
        resolve_solver("induction").make_options({"library_dir": str(missing), "entry": "transform"})
    options = resolve_solver("induction").make_options({"library_dir": str(STANDIN_LIBRARY)})
    assert options.execution.entry == "transform" and options.execution.colour_aliases
