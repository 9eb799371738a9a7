"""The induction solver on real ARC tasks: programs executed in the real sandbox, hindsight relabelling checked
by hand, the early stop, the deadline. Program texts come from a named test double (tests/doubles/engines.py):
a random-weight tiny model cannot write Python. The deadline test also runs the real tiny model."""

from __future__ import annotations

import time

import numpy as np
import pytest

from arc_submit.augment import Augmentation
from arc_submit.budget import Deadline
from arc_submit.execution import ExecutionSettings, Executor
from arc_submit.llm import Sampling, make_engine, prompts
from arc_submit.llm.recipes import recipe

OURS = recipe("arc-submit")  # our own layout, through the tiny model's chat template


def answer(code: str, engine) -> str:
    """The completion relabelling trains on for `code`."""
    return prompts.induction_target(OURS, code, engine.tokenizer)
from arc_submit.solvers import SolverContext, induction
from arc_submit.solvers.induction import INDUCTION
from arc_submit.tasks import Example
from doubles.engines import ScriptedProgramEngine

MIRROR = "def transform(grid):\n    return [row[::-1] for row in grid]"
# Reproduces every train example of 67a3c6ac (all at least 4 rows) but answers its 3-row test input differently.
MIRROR_UNLESS_SMALL = ("def transform(grid):\n    out = [row[::-1] for row in grid]\n"
                       "    return out[::-1] if len(grid) < 4 else out")
UPSIDE_DOWN = "def transform(grid):\n    return grid[::-1]"
UPSIDE_DOWN_AGAIN = "import numpy as np\n\ndef transform(grid):\n    return np.flipud(np.array(grid)).tolist()"
IDENTITY = "def transform(grid):\n    return grid"
CRASH = "def transform(grid):\n    return grid[99]"
HANG = "def transform(grid):\n    while True:\n        pass"

FAST = dict(workers=2, timeout_s=1.0, landlock=False)


@pytest.fixture(scope="module")
def mirror_task(arc1_train):
    """67a3c6ac: every output is its input mirrored left-right (checked below)."""
    task = arc1_train["67a3c6ac"]
    assert all(np.array_equal(ex.output, np.fliplr(ex.input)) for ex in (*task.train, *task.test))
    return task


@pytest.fixture(scope="module")
def executor():
    with Executor(ExecutionSettings(**FAST)) as warm:
        yield warm


def executed(task, codes, views, executor, epoch=0):
    all_tests = tuple(range(len(task.test)))  # our layout shows every test input in one prompt
    sampled = [(code, view, all_tests) for view in views for code in codes]
    return induction.execute(task, sampled, epoch, executor, Deadline.in_seconds(60), 2, 1.0)


def run(task, deadline, engine, emit=None, **options):
    """induction.run as a worker calls it: a context for the engine (closed after), options built once."""
    context = SolverContext.for_engine(engine)
    if emit is not None:
        context = context.emitting_to(emit)
    try:
        return induction.run(task, deadline, context, INDUCTION.make_options(options))
    finally:
        context.close()


def test_relabelled_data_is_exactly_the_programs_own_task(mirror_task, executor):
    """Hand check, in a transposed view (dihedral 4) with colours and example order permuted: there the
    upside-down program is the task's own rule (flipping rows of the transpose mirrors the original) and the
    mirror program is not. Each relabels to (view input, program output) pairs in the view's frame and example
    order, with the view's test input, exactly as the sampling prompt shows a task."""
    engine = ScriptedProgramEngine([[]])
    view = Augmentation(dihedral=4, colours=(0, 3, 1, 2, 4, 5, 6, 7, 9, 8), order=(2, 0, 1))
    programs = executed(mirror_task, [MIRROR, UPSIDE_DOWN, UPSIDE_DOWN_AGAIN, IDENTITY, CRASH], [view], executor)
    assert [p.exact for p in programs] == [0, 3, 3, 0, 0]
    assert [p.ran_on_train(3) for p in programs] == [True, True, True, True, False]

    pairs = induction.relabel(mirror_task, programs, engine, OURS)
    # The crash did not run, the identity teaches nothing, the two upside-down programs behave alike (the
    # shorter text is kept); the one that solves the task comes first.
    assert [r.completion for r in pairs] == [answer(UPSIDE_DOWN, engine), answer(MIRROR, engine)]
    framed = [view.apply_grid(mirror_task.train[i].input) for i in (2, 0, 1)]
    test_inputs = [view.apply_grid(mirror_task.test[0].input)]
    upside_down = [Example(g, np.flipud(g)) for g in framed]
    mirrored = [Example(g, np.fliplr(g)) for g in framed]
    assert pairs[0].prompt == prompts.induction_prompt(OURS, upside_down, test_inputs, engine.tokenizer).text
    assert pairs[1].prompt == prompts.induction_prompt(OURS, mirrored, test_inputs, engine.tokenizer).text
    # The solving program's relabelled task is the task itself as the view shows it.
    shown = view.apply_task(mirror_task)
    assert pairs[0].prompt == prompts.induction_prompt(OURS, shown.train, [ex.input for ex in shown.test],
                                                      engine.tokenizer).text
    # Behaviours already relabelled in an earlier epoch are not repeated; the cap holds.
    seen: set = set()
    assert len(induction.relabel(mirror_task, programs, engine, OURS, seen=seen)) == 2
    assert induction.relabel(mirror_task, programs, engine, OURS, seen=seen) == []
    assert len(induction.relabel(mirror_task, programs, engine, OURS, cap=1)) == 1


def test_early_stop_fires_at_two_distinct_answers_from_fitting_programs(mirror_task):
    """Epoch 0: one program fits (one distinct answer): relabel, learn, go on. Epoch 1: a second fitting program
    answers the test differently: stop, with 2 of the 4 epochs run and the third round never sampled."""
    engine = ScriptedProgramEngine([[MIRROR, IDENTITY, CRASH, UPSIDE_DOWN], [MIRROR_UNLESS_SMALL, MIRROR],
                                    [UPSIDE_DOWN]])
    options = dict(epochs=4, predictions_per_epoch=8, prompt_augmentations=2, use_dihedral=False, **FAST)
    result = run(mirror_task, Deadline.in_seconds(60), engine, **options)

    assert result.stopped_early and result.epochs_run == 2
    assert engine.rounds_sampled == {0, 1} and result.learning_steps == 1
    # What the engine was taught between the epochs is the relabelled epoch-0 programs, best fit first.
    (name, taught, _), = engine.trained
    assert name == f"induction-{mirror_task.id}"
    assert [t.segments[1][0] for t in taught] == [answer(MIRROR, engine), answer(UPSIDE_DOWN, engine)]
    assert engine.deleted[-1] == name  # the task's adapter is gone at the end

    (candidates,) = result.candidates
    grids = [c.grid for c in candidates]
    test_input = mirror_task.test[0].input
    assert len(grids) == 2
    assert any(np.array_equal(g, mirror_task.test[0].output) for g in grids)
    assert any(np.array_equal(g, np.rot90(test_input, 2)) for g in grids)
    assert all(c.solver == "induction" and c.score >= 1.0 for c in candidates)

    # Without the early stop the same script runs every epoch.
    engine = ScriptedProgramEngine([[MIRROR, IDENTITY], [MIRROR_UNLESS_SMALL, MIRROR], [UPSIDE_DOWN]])
    result = run(mirror_task, Deadline.in_seconds(60), engine, **{**options, "early_stop": False})
    assert not result.stopped_early and result.epochs_run == 4 and result.learning_steps == 3


def test_candidates_rank_by_train_fit_then_votes(mirror_task, executor):
    codes = [MIRROR, MIRROR_UNLESS_SMALL, MIRROR_UNLESS_SMALL, UPSIDE_DOWN, UPSIDE_DOWN, UPSIDE_DOWN]
    programs = executed(mirror_task, codes, [Augmentation()], executor)
    (ranked,) = induction.candidates_from(mirror_task, programs, min_fit=0.0)
    test_input = mirror_task.test[0].input
    # Both fitting answers first (more programs first), the most voted but unfitting one last.
    assert [c.count for c in ranked] == [2, 1, 3]
    assert np.array_equal(ranked[0].grid, np.rot90(test_input, 2))
    assert np.array_equal(ranked[1].grid, mirror_task.test[0].output)
    assert np.array_equal(ranked[2].grid, np.flipud(test_input)) and ranked[2].score < 1
    (strict,) = induction.candidates_from(mirror_task, programs, min_fit=1.0)
    assert [c.count for c in strict] == [2, 1]


@pytest.fixture(scope="module")
def tiny_engine():
    """The tiny model as a worker holds it: loaded once, and warm (its first call pays one-time set-up)."""
    engine = make_engine("hf", "tiny", max_batch_sequences=32)
    engine.generate(["warm-up"], Sampling(max_tokens=2))
    yield engine
    engine.close()


def test_an_expired_deadline_samples_nothing(mirror_task, tiny_engine):
    """Every epoch checks the deadline before it starts (phase speeds are measured in benchmarks/)."""
    result = run(mirror_task, Deadline(time.time() - 1), tiny_engine, epochs=2, **FAST)
    assert result.samples == 0 and result.epochs_run == 0 and result.programs == []
    assert result.candidates == [[] for _ in mirror_task.test]


def test_hanging_programs_are_cut_and_the_right_one_still_found(mirror_task):
    """Programs that never return are stopped by the executor's timeout; the mirror program is still found and
    its answers emitted before the solver returns."""
    emitted = []
    engine = ScriptedProgramEngine([[HANG, MIRROR]])
    per_test = run(mirror_task, Deadline.in_seconds(600), engine, emit=emitted.append,
                   **dict(epochs=1, predictions_per_epoch=4, prompt_augmentations=1, use_dihedral=False,
                          **{**FAST, "timeout_s": 0.3})).candidates
    grids = lambda per_test: [[c.grid.tolist() for c in cands] for cands in per_test]  # noqa: E731
    assert emitted and grids(emitted[-1]) == grids(per_test)
    for cands, ex in zip(per_test, mirror_task.test):
        assert np.array_equal(cands[0].grid, ex.output)


def test_options_are_checked_by_name_and_the_executor_settings_are_a_group():
    with pytest.raises(ValueError, match="induction solver: unknown option.*predictions_per_epok; known: .*entry"):
        INDUCTION.make_options({"predictions_per_epok": 3})
    built = INDUCTION.make_options({"entry": "main", "timeout_s": 2, "lora_rank": 16})
    assert built.execution == ExecutionSettings(entry="main", timeout_s=2.0) and built.train.lora_rank == 16
    assert INDUCTION.verifies and INDUCTION.training_needs(built).lora_rank == 16
