"""The transduction solver with the real tiny model on real ARC grids: test-time training makes a learnable task
come out right, votes are pooled through inverse augmentations, the deadline is kept, the adapter is deleted."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from arc_submit.augment import Augmentation
from arc_submit.budget import Deadline
from arc_submit.llm import make_engine, prompts
from arc_submit.llm.recipes import recipe

OURS = recipe("arc-submit")  # our own layout, through the tiny model's chat template
from arc_submit.llm.engine import Generation
from arc_submit.solvers import SolverContext, TrainingNeeds, transduction
from arc_submit.solvers.transduction import TRANSDUCTION
from arc_submit.tasks import Example, Task
from doubles.engines import ScoreReplaced

# Enough for the tiny model to learn one fixed answer in about a second of CPU training.
LEARN = dict(n_augmentations=1, ttt_augmentations=1, ttt_epochs=100, ttt_steps=100, learning_rate=3e-3,
             lr_schedule="constant", lora_rank=8, lora_alpha=16, gradient_checkpointing=False)


@pytest.fixture(scope="module")
def engine():
    e = make_engine("hf", "tiny", max_batch_sequences=32)
    yield e
    e.close()


@pytest.fixture(scope="module")
def context(engine):
    """As a worker holds it: one per engine, so the sampling speed is probed once for the module."""
    c = SolverContext.for_engine(engine)
    yield c
    c.close()


def options(**values):
    return TRANSDUCTION.make_options(values)


@pytest.fixture(scope="module")
def colour_swap_task(arc1_train):
    """A trivially learnable task from a real grid: the first input of 6150a2bd, with its two lowest colours
    swapped, is every train example and the test. Everything the model must learn is one fixed answer."""
    grid = arc1_train["6150a2bd"].train[0].input
    low, high = sorted(set(grid.flatten().tolist()))[:2]
    lut = np.arange(10, dtype=np.int8)
    lut[low], lut[high] = high, low
    swapped = lut[grid]
    assert not np.array_equal(swapped, grid)
    return Task("colour-swap-6150a2bd", tuple(Example(grid, swapped) for _ in range(3)), (Example(grid, swapped),))


def test_test_time_training_learns_the_answer_the_base_model_misses(engine, context, colour_swap_task):
    task = colour_swap_task
    # Leave-one-out training prompts hold 2 examples; a context cap one token short of the 3-example test prompt
    # makes the solver drop one example there (logged), so the test prompt is the prompt trained on.
    full = engine.count_tokens(prompts.transduction_prompt(OURS, task.train, task.test[0].input, engine.tokenizer).text)
    learn = dict(LEARN, max_prompt_tokens=full - 1)

    untrained = transduction.run(task, Deadline.in_seconds(600), context, options(**learn, ttt=False))
    assert untrained.adapter is None and untrained.samples == 1
    assert not any(np.array_equal(c.grid, task.test[0].output) for c in untrained.candidates[0])

    trained = transduction.run(task, Deadline.in_seconds(600), context, options(**learn))  # a cap, never reached
    assert trained.dropped == {"test examples": 1}
    assert trained.adapter.steps == 100 and trained.adapter.last_loss < trained.adapter.first_loss
    best = trained.candidates[0][0]
    assert np.array_equal(best.grid, task.test[0].output)
    assert best.solver == "transduction" and best.count == 1 and best.score < 0  # a mean log-probability
    assert set(trained.phases) >= {"data prep", "adapter reset", "training", "sampling"}
    # The task's adapter is gone: the next task starts from the base model.
    assert not engine.adapters and not engine.peft_model.peft_config


def test_votes_pool_across_views_through_the_inverse_augmentation(arc1_train):
    """Answers written in each view's frame count for the same grid once mapped back."""
    task = arc1_train["6150a2bd"]
    truth = task.test[0].output
    views = [Augmentation(), Augmentation(dihedral=1, colours=(0, 2, 1, 3, 4, 5, 6, 7, 8, 9)), Augmentation(dihedral=6)]
    items = [(0, v, "") for v in views]

    def said(grid, logprob):
        return [Generation(OURS.grid.encode(grid) + "\n\n", 10, True, logprob * 10)]

    wrong = np.zeros_like(truth)
    generations = [said(truth, -0.5), said(views[1].apply_grid(truth), -0.1), said(wrong, -0.01)]
    (ranked,), parsed = transduction.vote(task, items, generations, OURS)
    assert parsed == 3
    assert np.array_equal(ranked[0].grid, truth) and ranked[0].count == 2
    assert ranked[0].score == pytest.approx(-0.3)  # mean of the two samples' mean log-probabilities
    assert ranked[1].count == 1 and np.array_equal(ranked[1].grid, views[2].invert_grid(wrong))


def test_an_expired_deadline_trains_and_samples_nothing(context, arc2_eval):
    """Every phase checks the deadline before it starts (the speed of each phase is measured in benchmarks/)."""
    task = arc2_eval[sorted(arc2_eval)[1]]
    result = transduction.run(task, Deadline(time.time() - 1), context, options())
    assert result.adapter is None and result.samples == 0 and result.tokens == 0
    assert result.candidates == [[] for _ in task.test]
    assert result.train_pairs > 0 and set(result.phases) == {"data prep"}


def test_votes_are_emitted_before_scoring_then_the_reranking(engine, context, colour_swap_task):
    """A two-test task with the augmented scorer: the votes are emitted (journaled, in a worker) before the first
    scoring call, so a task killed or out of memory while scoring keeps them; the re-ranked answers follow."""
    task = Task("two-tests", colour_swap_task.train, colour_swap_task.test * 2)
    full = engine.count_tokens(prompts.transduction_prompt(OURS, task.train, task.test[0].input, engine.tokenizer).text)
    emitted, emitted_when_scored = [], []

    def score(pairs, adapter=None):
        emitted_when_scored.append(len(emitted))
        return engine.score(pairs, adapter)

    watched = SolverContext(ScoreReplaced(engine, score), context.speed, emit=emitted.append)
    per_test = transduction.solve(task, Deadline.in_seconds(600), watched,
                                  options(**LEARN, max_prompt_tokens=full - 1, scorer="augmented"))
    assert emitted_when_scored and set(emitted_when_scored) == {1}  # every scoring call came after the votes
    assert len(emitted) == 2  # after voting, then after the augmented re-ranking
    votes, reranked = emitted
    assert all(cands for cands in votes) and not any("augmented" in c.detail for cands in votes for c in cands)
    assert [[c.grid.tolist() for c in cands] for cands in reranked] == [[c.grid.tolist() for c in cands]
                                                                       for cands in per_test]
    assert all("augmented log-prob" in cands[0].detail for cands in per_test)
    assert [np.array_equal(cands[0].grid, ex.output) for cands, ex in zip(per_test, task.test)] == [True, True]


def test_options_are_checked_by_name_once():
    with pytest.raises(ValueError, match="transduction solver: unknown option.*ttt_stepz; known: .*ttt_steps"):
        options(ttt_stepz=3)
    with pytest.raises(ValueError, match="scorer='augmnted'; use one of votes, augmented"):
        options(scorer="augmnted")
    with pytest.raises(ValueError, match="option ttt_steps=-1 must be at least 0"):
        options(ttt_steps=-1)
    built = options(ttt_steps="3", lora_rank=8, target_modules=["q_proj"])  # as YAML and the CLI give them
    assert (built.ttt_steps, built.train.lora_rank, built.train.target_modules) == (3, 8, ("q_proj",))
    assert TRANSDUCTION.training_needs(built) == TrainingNeeds(max_seq_len=8192, lora_rank=8)  # for the memory plan


def test_augmented_scorer_ranks_the_answer_first_among_plausible_distractors(engine, colour_swap_task):
    """After test-time training, the task's adapter scores each candidate under 4 views (NVARC's re-ranking): the
    true answer beats the input copied and the answer with one cell changed."""
    from arc_submit.augment import augmentation_set
    from arc_submit.llm.engine import TrainSettings
    from arc_submit.solvers.common import task_rng

    task = colour_swap_task
    full = engine.count_tokens(prompts.transduction_prompt(OURS, task.train, task.test[0].input, engine.tokenizer).text)
    pairs = transduction.training_texts(task, augmentation_set(1, task_rng(0, task.id, 1), 3), engine, OURS,
                                        None, {})
    adapter = engine.train_adapter("scorer", pairs, TrainSettings(
        epochs=100, max_steps=100, learning_rate=3e-3, lr_schedule="constant", lora_rank=8, lora_alpha=16,
        gradient_checkpointing=False))
    try:
        views = augmentation_set(4, task_rng(0, task.id, 2), 3)
        items = transduction.view_prompts(task, views, engine, OURS, full - 1, {})
        truth, copy = task.test[0].output, task.test[0].input
        one_off = truth.copy()
        one_off[0, 0] = (one_off[0, 0] + 1) % 10
        logps = transduction.augmented_logprobs(engine, items, 0, [copy, one_off, truth], adapter, OURS)
        assert int(np.argmax(logps)) == 2, logps
        assert len({t for t, _, _ in items}) == 1 and len(items) == 4  # every view took part
    finally:
        engine.delete_adapter(adapter)


def test_dfs_decoding_after_training_ranks_the_answer_first_and_notes_what_it_found(engine, context, colour_swap_task):
    """decoding: dfs through the whole solver: the answers above min_prob go through the same voting, are
    emitted, and the worker hears per test input how many candidates and how much probability were found."""
    task = colour_swap_task
    full = engine.count_tokens(prompts.transduction_prompt(OURS, task.train, task.test[0].input, engine.tokenizer).text)
    notes, emitted = [], []
    watched = SolverContext(engine, context.speed, note=lambda *n: notes.append(n), emit=emitted.append)
    # lm_head in the LoRA: the answer then gets most of the probability, not just each step's argmax (the plain
    # LEARN settings answer right greedily at a probability of about e^-40, below any useful min_prob).
    confident = dict(LEARN, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj", "lm_head"])
    result = transduction.run(task, Deadline.in_seconds(600), watched,
                              options(**confident, max_prompt_tokens=full - 1, decoding="dfs", min_prob=0.05))
    assert "search" in result.phases and "sampling" not in result.phases
    best = result.candidates[0][0]
    assert np.array_equal(best.grid, task.test[0].output)
    assert best.support == 1.0 and best.count == 1  # found by the one view searched
    assert result.samples == sum(len(c) for c in result.candidates) and result.parsed == result.samples
    assert emitted == [result.candidates]
    (found,) = result.found
    assert found["candidates"] == len(result.candidates[0]) and found["views"] == 1
    assert math.exp(best.score * engine.count_tokens(prompts.transduction_target(OURS, best.grid, engine.tokenizer))) \
        <= found["mass"] + 1e-6 <= 1 + 1e-6
    assert notes == [(task.id, "dfs", f"test 0: {found['candidates']} candidates, p mass {found['mass']:.2f} over 1 views")]
    assert not engine.adapters  # deleted, as after sampling
