"""Depth-first search over answers (llm/dfs.py, transduction's `decoding: dfs`).

The search core against exhaustive enumeration on a table model (a TEST DOUBLE of a decoder: next-token
probabilities from a seeded table, small enough to enumerate every answer); then the real tiny model after
test-time training on a constructed task whose answers are a known mixture (five answers starting with 7, one
apiece, and the truth, starting with 3, three times): greedy decoding takes the more probable first token and
answers wrong, the search finds the truth, every answer above min_prob is the set an exhaustive enumeration
finds, and the same adapter gives the same answers whatever the batch and the cache compaction.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest

from arc_submit.augment import Augmentation
from arc_submit.llm import dfs, make_engine, prompts
from arc_submit.llm.engine import Sampling, Search, TrainingText, TrainSettings
from arc_submit.llm.recipes import recipe
from arc_submit.llm.training import TokenizedText, prompt_ids
from arc_submit.report import per_solver_cell
from arc_submit.solvers.transduction import TRANSDUCTION, rescore, vote
from arc_submit.tasks import Example, Task

OURS = recipe("arc-submit")
END = 0  # the table double's end token


class TableDecoder:
    """TEST DOUBLE of a Decoder: p(next token | path) from a table seeded by the path, over `vocab` tokens (END
    is 0), Dirichlet(alpha): peaked enough that a few answers hold most of the probability."""

    def __init__(self, n_prompts: int, vocab: int = 4, alpha: float = 0.4, seed: int = 0):
        self.n, self.vocab, self.alpha, self.seed = n_prompts, vocab, alpha, seed
        self.asked: list[tuple[int, tuple]] = []
        self.retired: list[int] = []

    def logprobs(self, row: int, path: tuple) -> np.ndarray:
        rng = np.random.default_rng([self.seed, row, len(path), *path])
        return np.log(rng.dirichlet([self.alpha] * self.vocab))

    def _branches(self, row, path, cumulative, bound):
        totals = cumulative + self.logprobs(row, path)
        keep = np.nonzero(totals >= bound)[0]
        return dfs.Branches(keep, totals[keep])

    def start(self, bounds):
        return [self._branches(i, (), 0.0, b) for i, b in enumerate(bounds)]

    def advance(self, rows, paths, logprobs, bounds):
        self.asked += list(zip(rows, paths))
        return [self._branches(r, p, lp, b) for r, p, lp, b in zip(rows, paths, logprobs, bounds)]

    def retire(self, row):
        self.retired.append(row)

    def enumerate(self, row: int, max_tokens: int) -> list[tuple[float, tuple]]:
        """Every answer of at most max_tokens tokens (END included), with its log-probability: no pruning."""
        out = []
        for length in range(max_tokens):
            for body in itertools.product(range(1, self.vocab), repeat=length):
                path, total = (), 0.0
                for token in body + (END,):
                    total += self.logprobs(row, path)[token]
                    path += (token,)
                out.append((total, path))
        return out


class PassesAfter:
    """TEST DOUBLE of a Deadline: passed() turns True at its n-th check (the search checks once per step), so a
    deadline falls mid-search without a clock."""

    def __init__(self, checks: int):
        self.left = checks

    def passed(self) -> bool:
        self.left -= 1
        return self.left < 0


@pytest.mark.parametrize("min_prob,cap", [(0.01, 100), (0.05, 100), (0.2, 100), (0.01, 3), (0.05, 1)])
def test_the_search_finds_exactly_the_most_probable_answers_above_min_prob(min_prob, cap):
    max_tokens = 6
    decoder = TableDecoder(n_prompts=3)
    run = dfs.search(decoder, 3, Search(min_prob=min_prob, max_tokens=max_tokens, max_candidates=cap),
                     frozenset({END}))
    assert run.complete == [True] * 3 and not run.stopped_by_deadline
    for row in range(3):
        every = decoder.enumerate(row, max_tokens)
        above = sorted((a for a in every if a[0] >= math.log(min_prob)), key=lambda a: (-a[0], a[1]))[:cap]
        assert [path for _, path in run.answers[row]] == [path for _, path in above]
        assert np.allclose([lp for lp, _ in run.answers[row]], [lp for lp, _ in above])
    assert sorted(decoder.retired) == [0, 1, 2]
    # Exhaustive enumeration costs every prefix; the search, only those above the bound.
    assert run.steps < len(decoder.enumerate(0, max_tokens - 1))


def test_the_cases_are_not_trivial():
    """The table has several answers above 0.01 per prompt and some at max_tokens + 1, which must be dropped."""
    decoder = TableDecoder(n_prompts=3)
    found = dfs.search(decoder, 3, Search(min_prob=0.01, max_tokens=6, max_candidates=100), frozenset({END}))
    assert min(len(a) for a in found.answers) >= 3
    longer = TableDecoder(n_prompts=3).enumerate(0, 7)
    too_long = [a for a in longer if len(a[1]) == 7 and a[0] >= math.log(0.01)]
    assert too_long and not set(p for _, p in too_long) & set(p for _, p in found.answers[0])


def test_one_branch_per_prompt_per_step_each_a_child_of_the_last_path():
    decoder = TableDecoder(n_prompts=2)
    dfs.search(decoder, 2, Search(min_prob=0.01, max_tokens=6, max_candidates=100), frozenset({END}))
    last: dict[int, tuple] = {}
    for row, path in decoder.asked:  # what KVDecoder relies on to reuse its cache
        assert last.get(row, ())[:len(path) - 1] == path[:-1]
        last[row] = path


def test_a_deadline_stops_the_search_with_what_it_found():
    settings = Search(min_prob=0.01, max_tokens=6, max_candidates=100)
    whole = dfs.search(TableDecoder(n_prompts=2), 2, settings, frozenset({END}))
    cut = dfs.search(TableDecoder(n_prompts=2), 2, settings, frozenset({END}), PassesAfter(3))
    assert cut.stopped_by_deadline and cut.steps == 3 and cut.complete == [False, False]
    for row in range(2):
        assert 0 < len(cut.answers[row]) < len(whole.answers[row])
        assert set(cut.answers[row]) <= set(whole.answers[row])


@pytest.mark.parametrize("values,name", [({"min_prob": 0}, "min_prob"), ({"min_prob": 1}, "min_prob"),
                                         ({"min_prob": 1.5}, "min_prob"), ({"min_prob": float("nan")}, "min_prob"),
                                         ({"max_candidates_per_view": 0}, "max_candidates_per_view"),
                                         ({"views_per_batch": 0}, "views_per_batch"),
                                         ({"decoding": "beam"}, "decoding"),
                                         ({"decoding": "dfs", "temperature": 0.5}, "decoding=dfs"),
                                         ({"decoding": "greedy", "temperature": 0.5}, "decoding=greedy"),
                                         ({"decoding": "sample"}, "decoding=sample")])
def test_bad_decoding_options_fail_when_built_naming_the_option(values, name):
    with pytest.raises(ValueError, match=rf"transduction solver: option {name}"):
        TRANSDUCTION.make_options(values)


def test_the_preflight_names_a_bad_min_prob():
    from arc_submit.config import EngineConfig, RunConfig, SolverConfig
    from arc_submit.preflight import check_solver

    config = RunConfig(challenges="arc-agi-2/evaluation", engine=EngineConfig(kind="hf"),
                       solver=SolverConfig("transduction", {"decoding": "dfs", "min_prob": 0}))
    (problem,) = check_solver(config)
    assert "transduction solver: option min_prob=0.0 must be in (0, 1)" in problem


def test_decoding_defaults_to_what_temperature_said():
    assert TRANSDUCTION.make_options({}).decoding_mode == "greedy"
    assert TRANSDUCTION.make_options({"temperature": 0.7}).decoding_mode == "sample"
    opts = TRANSDUCTION.make_options({"decoding": "dfs", "min_prob": 0.05, "max_candidates_per_view": 4})
    assert opts.search(40) == Search(min_prob=0.05, max_tokens=40, max_candidates=4)


def test_the_report_shows_candidates_and_mass_found():
    record = SimpleNamespace(events=[  # what per_solver_cell reads of a journal's TaskRecord
        {"event": "solver-done", "solver": "transduction", "seconds": 2.0, "candidates": 3},
        {"event": "note", "kind": "dfs", "text": "test 0: 3 candidates, p mass 0.82 over 8 views"},
        {"event": "note", "kind": "training-oom", "text": "a long story"}])
    assert per_solver_cell(record) == ("transduction 2.0s 3 cands, dfs: test 0: 3 candidates, p mass 0.82 over 8 "
                                       "views, note: training-oom")


# --- the real tiny model, after test-time training on a constructed task --------------------------------------

INPUT = np.array([[1, 2], [2, 1]], np.int8)
TRUTH = np.array([[3, 8]], np.int8)
WRONG = [np.array([[7, k]], np.int8) for k in (0, 1, 2, 4, 5)]  # their first token, 7, is the more probable


@pytest.fixture(scope="module")
def engine():
    e = make_engine("hf", "tiny", max_batch_sequences=8)
    yield e
    e.close()


@pytest.fixture(scope="module")
def mixture(engine):
    """(prompt, adapter): a LoRA trained on one prompt answered by each wrong grid once and the truth three times,
    so the model learns p(truth) ≈ 3/8 and p(each wrong) ≈ 1/8, with p(first token 7) ≈ 5/8."""
    tok = engine.tokenizer
    prompt = prompts.transduction_prompt(OURS, (Example(INPUT, TRUTH),), INPUT, tok).text
    texts = [TrainingText.pair(prompt, prompts.transduction_target(OURS, g, tok)) for g in WRONG + [TRUTH] * 3]
    # lm_head in the LoRA: the random tiny model needs it to learn which answer token follows which.
    settings = TrainSettings(epochs=30, learning_rate=3e-3, lora_rank=16, lora_alpha=32, gradient_checkpointing=False,
                             target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj", "lm_head"))
    adapter = engine.train_adapter("mixture", texts, settings)
    yield prompt, adapter
    engine.delete_adapter(adapter)


def grid_tokens(tok) -> tuple[int, ...]:
    """The digits and line breaks grids are written with in our layout (each one token in the tiny tokenizer)."""
    ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    ids += tok(prompts.transduction_target(OURS, np.zeros((2, 1), np.int8), tok), add_special_tokens=False)["input_ids"]
    return tuple(sorted(set(ids) - {tok.eos_token_id}))


def enumerate_answers(engine, prompt: str, adapter, tokens: tuple[int, ...], max_tokens: int):
    """Every answer over `tokens` of at most max_tokens tokens (the end token included), scored by teacher forcing:
    whole sequences, no cache, no pruning."""
    eos = engine.tokenizer.eos_token_id
    head = prompt_ids(engine.tokenizer, prompt)
    answers = [body + (eos,) for n in range(max_tokens) for body in itertools.product(tokens, repeat=n)]
    texts = [TokenizedText(head + list(a), [False] * len(head) + [True] * len(a)) for a in answers]
    import torch

    model, ctx = engine._active(adapter)
    with ctx, torch.inference_mode():
        sums = engine.sampler.logprob_sums(model, texts)
    return dict(zip(answers, sums))


def test_dfs_finds_exactly_the_answers_above_min_prob_that_enumeration_finds(engine, mixture):
    prompt, adapter = mixture
    tokens, max_tokens, min_prob = grid_tokens(engine.tokenizer), 4, 0.05
    every = enumerate_answers(engine, prompt, adapter, tokens, max_tokens)
    assert len(every) > 1000  # the whole space, not a sample of it
    close = {a: math.exp(lp) for a, lp in every.items() if abs(math.exp(lp) - min_prob) < 0.005}
    assert not close, f"answers too near min_prob for an exact comparison: {close}"
    above = {a for a, lp in every.items() if lp >= math.log(min_prob)}
    assert len(above) >= 4  # several answers, the truth among them: a case greedy decoding cannot cover

    found = engine.dfs([prompt], Search(min_prob=min_prob, max_tokens=max_tokens, max_candidates=100,
                                        tokens=tokens), adapter)
    assert found.complete == [True] and found.steps > 0
    assert {g.token_ids for g in found.completions[0]} == above
    for g in found.completions[0]:
        assert g.cumulative_logprob == pytest.approx(every[g.token_ids], abs=1e-4)
        assert g.finished and g.n_tokens == len(g.token_ids)
    assert found.mass(0) == pytest.approx(sum(math.exp(every[a]) for a in above), abs=1e-3)


def test_dfs_ranks_the_truth_first_where_greedy_answers_wrong(engine, mixture):
    prompt, adapter = mixture
    task = Task("mixture", (Example(INPUT, TRUTH),), (Example(INPUT, TRUTH),))
    items = [(0, Augmentation(), prompt)]
    p_truth = math.exp(engine.score([TrainingText.pair(prompt, prompts.transduction_target(OURS, TRUTH,
                                                                                           engine.tokenizer))],
                                    adapter)[0])
    assert p_truth > 0.2  # the truth is above the threshold ...

    greedy = engine.generate([prompt], Sampling(max_tokens=8, logprobs=True), adapter)
    (greedy_ranked,), _ = vote(task, items, greedy, OURS)
    assert greedy_ranked and not any(np.array_equal(c.grid, TRUTH) for c in greedy_ranked)  # ... greedy misses it

    for min_prob in (0.05, 0.1, 0.2):
        found = engine.dfs([prompt], Search(min_prob=min_prob, max_tokens=8), adapter)
        (ranked,), parsed = vote(task, items, found.completions, OURS, per_view=True)
        assert parsed == len(found.completions[0])
        assert np.array_equal(ranked[0].grid, TRUTH) or np.array_equal(ranked[1].grid, TRUTH)
        assert all(c.support == 1.0 for c in ranked)  # one view, which found each of them
        (product,) = rescore(engine, task, items, [ranked], adapter, OURS, 16, product=True)
        assert any(np.array_equal(c.grid, TRUTH) for c in product[:2])
    assert len(ranked) == 1  # at 0.2, only the truth: the wrong answers hold 1/8 each


def test_the_same_adapter_gives_the_same_answers_whatever_the_batch_and_compaction(engine, mixture, monkeypatch):
    prompt, adapter = mixture
    shorter = prompts.transduction_prompt(OURS, (), INPUT, engine.tokenizer).text  # another length: left padding
    settings = Search(min_prob=0.02, max_tokens=8)
    alone = engine.dfs([prompt], settings, adapter)
    again = engine.dfs([prompt], settings, adapter)
    assert [(g.token_ids, g.cumulative_logprob) for g in again.completions[0]] == \
        [(g.token_ids, g.cumulative_logprob) for g in alone.completions[0]]

    monkeypatch.setattr(dfs, "COMPACT_SLACK", -8)  # rebuild the cache at nearly every step
    compacted = []
    original = dfs.KVDecoder._compact
    monkeypatch.setattr(dfs.KVDecoder, "_compact", lambda self, *a: (compacted.append(1), original(self, *a)))
    batched = engine.dfs([shorter, prompt, shorter], settings, adapter)
    assert compacted
    assert [g.token_ids for g in batched.completions[1]] == [g.token_ids for g in alone.completions[0]]
    assert np.allclose([g.cumulative_logprob for g in batched.completions[1]],
                       [g.cumulative_logprob for g in alone.completions[0]], atol=1e-4)
    assert [g.token_ids for g in batched.completions[0]] == [g.token_ids for g in batched.completions[2]]


def test_the_vllm_engine_searches_on_its_trainer_with_the_adapter_it_serves(engine, mixture, tmp_path):
    """vllm's dfs runs on its trainer (with share_weights, the transformers view of vLLM's own weights), loading
    the task's adapter from the folder vLLM serves it from for the search only. No vLLM here: the engine is a
    TEST DOUBLE made without its constructor, its trainer the tiny hf engine, as `_trainer()` would hold one."""
    from arc_submit.llm.engine_parts import AdapterHandles, EngineLife
    from arc_submit.llm.vllm_engine import VLLMEngine

    prompt, adapter = mixture
    settings = Search(min_prob=0.05, max_tokens=8)
    reference = engine.dfs([prompt], settings, adapter)
    saved = engine.save_adapter(adapter, tmp_path)
    engine.unload_adapter(adapter.name)  # what VLLMEngine.train_adapter leaves: the weights only in the folder
    vllm_double = VLLMEngine.__new__(VLLMEngine)
    vllm_double.trainer, vllm_double.adapters, vllm_double.life = engine, AdapterHandles(), EngineLife()
    vllm_double.adapters.put(saved)
    try:
        found = vllm_double.dfs([prompt], settings, saved)
        assert [(g.token_ids, g.cumulative_logprob) for g in found.completions[0]] == \
            [(g.token_ids, g.cumulative_logprob) for g in reference.completions[0]]
        assert adapter.name not in engine.adapters  # unloaded after the search
        with pytest.raises(KeyError, match="not loaded in this engine"):
            vllm_double.dfs([prompt], settings, dataclasses.replace(saved, name="other"))
    finally:
        engine.load_adapter(saved)  # the module's other tests keep their adapter


def test_the_time_budget_predicts_a_search_and_refits_it_to_what_searches_took():
    from arc_submit.solvers.sampling import SpeedModel, predict_search_seconds

    speed = SpeedModel(prefill_s=1e-4, step_s=0.01, context_s=1e-6, batch_growth=0.1)
    tokens = [500] * 8
    assert predict_search_seconds(SpeedModel(), tokens, 40, 8) == 0.0  # never probed: nothing known
    one_batch = predict_search_seconds(speed, tokens, 40, 8)
    assert one_batch == pytest.approx(1e-4 * 4000 + 1.5 * 40 * (0.01 + 1e-6 * 540) * (1 + 0.1 * 7))
    assert predict_search_seconds(speed, tokens, 40, 4) == pytest.approx(
        2 * (1e-4 * 2000 + 1.5 * 40 * (0.01 + 1e-6 * 540) * (1 + 0.1 * 3)))
    # A sure model's searches take about its answer's length in steps: the prediction follows them down.
    for _ in range(6):
        speed.observe_search(0.4 + 20 * 0.02, tokens, steps=20, max_tokens=40)
    assert speed.search_steps_per_token == pytest.approx(0.5, abs=0.02)
    assert speed.search_step_scale == pytest.approx(0.02 / ((0.01 + 1e-6 * 540) * 1.7), rel=0.05)
    assert predict_search_seconds(speed, tokens, 40, 8) < one_batch


def test_views_are_searched_in_batches_in_order_and_none_after_the_deadline(engine, mixture):
    import time

    from arc_submit.budget import Deadline
    from arc_submit.solvers.sampling import SpeedModel, search_within

    prompt, adapter = mixture
    speed = SpeedModel.for_engine(engine)
    settings = Search(min_prob=0.05, max_tokens=8)
    run = search_within(engine, speed, [prompt] * 3, settings, adapter, Deadline.in_seconds(600), views_per_batch=2)
    assert run.calls == 2 and not run.stopped_by_deadline
    assert len({tuple(g.token_ids for g in gens) for gens in run.generations}) == 1 and run.generations[0]
    assert all(m == pytest.approx(sum(math.exp(g.cumulative_logprob) for g in run.generations[0])) for m in run.masses)
    late = search_within(engine, speed, [prompt] * 3, settings, adapter, Deadline(time.time() - 1), views_per_batch=2)
    assert late.stopped_by_deadline and late.calls == 0 and late.masses == [None] * 3 and late.generations == [[]] * 3
