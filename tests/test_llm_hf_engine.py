"""The transformers + peft engine on the tiny model and a real ARC task: sampling, scoring, per-task LoRA."""

from __future__ import annotations

import time

import pytest

from arc_submit.augment import Augmentation
from arc_submit.budget import Deadline
from arc_submit.llm import Sampling, TrainSettings, make_engine, prompts
from arc_submit.llm.engine import Engine, TrainingText
from arc_submit.llm.recipes import recipe

OURS = recipe("arc-submit")
PLAIN = recipe({"preset": "arc-submit", "chat": "plain"})  # the user text alone, no chat template
from arc_submit.solvers import transduction

FAST_LORA = dict(lora_rank=8, lora_alpha=16, gradient_checkpointing=False)


@pytest.fixture(scope="module")
def engine():
    e = make_engine("hf", "tiny", max_batch_sequences=16)
    yield e
    e.close()


@pytest.fixture(scope="module")
def task(arc1_train):
    """The smallest real ARC task with at least 3 train examples (short sequences keep the test fast)."""
    return min((t for t in arc1_train.values() if len(t.train) >= 3), key=lambda t: t.cost_estimate())


@pytest.fixture(scope="module")
def other_task(arc1_train, task):
    return sorted((t for t in arc1_train.values() if len(t.train) >= 3 and t.id != task.id),
                  key=lambda t: t.cost_estimate())[0]


def pairs_of(task, engine):
    """Leave-one-out training pairs as the transduction solver makes them (the identity view, no length cap)."""
    return transduction.training_texts(task, [Augmentation()], engine, OURS, None, {})


def test_engine_follows_the_protocol(engine):
    """Every method of the Engine protocol, with the same parameters in the same order (isinstance on a runtime
    Protocol only checks that the names exist)."""
    import inspect

    for name in ("generate", "score", "train_adapter", "delete_adapter", "count_tokens", "close"):
        wanted = list(inspect.signature(getattr(Engine, name)).parameters)[1:]  # without self
        have = list(inspect.signature(getattr(engine, name)).parameters)
        assert have[:len(wanted)] == wanted, (name, have, wanted)
        assert all(p.default is not inspect.Parameter.empty for p in
                   list(inspect.signature(getattr(engine, name)).parameters.values())[len(wanted):]), name
    # And its attributes: transformers' generate processes a prompt once per sample (the speed model reads it).
    assert isinstance(engine, Engine) and engine.prefills_per_sample is True
    assert engine.model_settings.max_model_len == 8192


def test_generate_is_deterministic_under_a_seed(engine, task):
    prompt = prompts.transduction_prompt(OURS, task.train, task.test[0].input, engine.tokenizer).text
    sampling = Sampling(n=5, temperature=1.0, max_tokens=24, seed=7, logprobs=True)
    first = engine.generate([prompt, prompt[:200]], sampling)
    again = engine.generate([prompt, prompt[:200]], sampling)
    other = engine.generate([prompt, prompt[:200]], Sampling(n=5, temperature=1.0, max_tokens=24, seed=8))
    assert first == again
    assert [len(r) for r in first] == [5, 5]
    assert len({g.text for g in first[0]}) > 1  # temperature 1: samples differ from each other
    assert [g.text for g in first[0]] != [g.text for g in other[0]]
    for g in first[0]:
        assert g.n_tokens <= 24 and g.cumulative_logprob < 0 and g.mean_logprob < 0


def test_sample_logprobs_are_the_models_own(engine, task):
    """The log-prob reported with each sample equals a plain, unbatched forward pass over prompt + sample."""
    import torch

    from arc_submit.llm.training import prompt_ids

    prompts_ = [prompts.transduction_prompt(OURS, task.train, task.test[0].input, engine.tokenizer).text, "Example 1"]
    results = engine.generate(prompts_, Sampling(n=3, temperature=1.0, max_tokens=16, seed=3, logprobs=True))
    for prompt, samples in zip(prompts_, results):
        p = prompt_ids(engine.tokenizer, prompt)
        for g in samples:
            assert len(g.token_ids) == g.n_tokens
            ids = torch.tensor([p + list(g.token_ids)])
            with torch.no_grad():
                logp = torch.log_softmax(engine.model(input_ids=ids).logits[0].float(), dim=-1)
            expected = sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(g.token_ids))
            assert g.cumulative_logprob == pytest.approx(expected, abs=1e-3)


def test_greedy_returns_n_identical_samples(engine, task):
    prompt = prompts.transduction_prompt(PLAIN, task.train, task.test[0].input, engine.tokenizer).text
    (samples,) = engine.generate([prompt], Sampling(n=3, temperature=0, max_tokens=8))
    assert len(samples) == 3 and len({g.text for g in samples}) == 1


def test_training_on_a_real_task_lowers_its_loss(engine, task):
    pairs = pairs_of(task, engine)
    adapter = engine.train_adapter(task.id, pairs, TrainSettings(epochs=6, learning_rate=3e-3, **FAST_LORA))
    try:
        assert adapter.steps == 6 * len(pairs) and not adapter.stopped_by_deadline
        assert sum(adapter.losses[-3:]) / 3 < adapter.losses[0] - 0.3
        before, after = engine.score(pairs), engine.score(pairs, adapter)
        assert all(a > b + 1.0 for a, b in zip(after, before)), (before, after)
    finally:
        engine.delete_adapter(adapter)


def test_a_new_tasks_adapter_starts_from_the_base_weights(engine, task, other_task):
    pairs, other_pairs = pairs_of(task, engine), pairs_of(other_task, engine)
    base = engine.score(other_pairs)
    trained = engine.train_adapter(task.id, pairs, TrainSettings(epochs=4, learning_rate=3e-3, **FAST_LORA))
    assert engine.score(other_pairs, trained) != pytest.approx(base, abs=1e-3)  # training moved the model
    fresh = engine.train_adapter(other_task.id, other_pairs, TrainSettings(max_steps=0, **FAST_LORA))
    assert fresh.steps == 0
    assert engine.score(other_pairs, fresh) == pytest.approx(base, abs=1e-5)
    # Its first training step sees the base model: the first loss is the base model's loss on that example.
    one = engine.train_adapter(other_task.id, other_pairs, TrainSettings(max_steps=1, **FAST_LORA))
    per_token = [-s / len(engine.tokenizer(t.segments[1][0], add_special_tokens=False)["input_ids"])
                 for s, t in zip(base, other_pairs)]  # the completion's text ends with its EOS
    assert any(one.losses[0] == pytest.approx(x, abs=1e-4) for x in per_token)
    for name in (task.id, other_task.id):
        engine.delete_adapter(name)


def test_training_after_other_tasks_equals_training_in_a_fresh_engine(engine, task, other_task):
    """Nothing leaks between tasks: not the LoRA weights, not the optimizer state, not the RNG."""
    warm = engine.train_adapter(task.id, pairs_of(task, engine), TrainSettings(epochs=3, learning_rate=3e-3, **FAST_LORA))
    engine.delete_adapter(warm)
    settings = TrainSettings(epochs=2, learning_rate=3e-3, seed=5, **FAST_LORA)
    reused = engine.train_adapter(other_task.id, pairs_of(other_task, engine), settings)
    fresh_engine = make_engine("hf", "tiny")
    try:
        fresh = fresh_engine.train_adapter(other_task.id, pairs_of(other_task, fresh_engine), settings)
        assert reused.losses == pytest.approx(fresh.losses, abs=1e-5)
    finally:
        fresh_engine.close()
        engine.delete_adapter(reused)


def test_training_stops_cleanly_at_the_deadline(engine, task):
    pairs = pairs_of(task, engine)
    settings = TrainSettings(epochs=10_000, learning_rate=1e-3, **FAST_LORA)
    adapter = engine.train_adapter(task.id, pairs, settings, deadline=Deadline.in_seconds(1.5))
    assert adapter.stopped_by_deadline and 0 < adapter.steps < settings.planned_steps(len(pairs))
    assert len(adapter.losses) == adapter.steps
    # What it trained is usable.
    assert engine.generate(["Example"], Sampling(max_tokens=4), adapter)[0][0].n_tokens >= 1
    past = engine.train_adapter("late", pairs, settings, deadline=Deadline(time.time() - 1))
    assert past.steps == 0 and past.stopped_by_deadline
    for name in (task.id, "late"):
        engine.delete_adapter(name)


def test_deleted_adapter_cannot_be_used_and_names_itself(engine, task):
    adapter = engine.train_adapter("gone", pairs_of(task, engine), TrainSettings(max_steps=1, **FAST_LORA))
    engine.delete_adapter(adapter)
    engine.delete_adapter("gone")  # deleting twice is harmless
    with pytest.raises(KeyError, match="gone"):
        engine.generate(["x"], Sampling(max_tokens=2), adapter)


def test_examples_over_max_seq_len_are_dropped_or_refused(engine, task):
    pairs = pairs_of(task, engine)
    lengths = sorted(len(engine.tokenizer("".join(s for s, _ in t.segments))["input_ids"]) for t in pairs)
    with pytest.raises(ValueError, match="none of the .* fits max_seq_len"):
        engine.train_adapter(task.id, pairs, TrainSettings(max_seq_len=10, **FAST_LORA))
    if lengths[0] < lengths[-1]:
        adapter = engine.train_adapter(task.id, pairs, TrainSettings(max_seq_len=lengths[0] + 2, **FAST_LORA))
        assert adapter.dropped_examples >= 1
        engine.delete_adapter(adapter)


def test_stop_strings_end_a_sample(engine, task):
    prompt = prompts.transduction_prompt(PLAIN, task.train, task.test[0].input, engine.tokenizer).text
    (samples,) = engine.generate([prompt], Sampling(n=4, temperature=1.0, max_tokens=40, seed=1, stop=("\n",)))
    assert all("\n" not in g.text for g in samples)


def test_unknown_kind_or_option_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown engine kind"):
        make_engine("onnx", "tiny")
    with pytest.raises(ValueError, match="unknown engine option.*gpu_memory_utilisation is unknown"):
        make_engine("hf", "tiny", gpu_memory_utilisation=0.5)
    # An option of another engine is named as such, before anything loads.
    with pytest.raises(ValueError, match="enforce_eager is an option of engine vllm, not hf.*takes:.*max_batch"):
        make_engine("hf", "tiny", enforce_eager=True)


def test_scoring_batches_stay_under_the_logit_budget(engine, task, monkeypatch):
    """Many pairs of mixed lengths: the same sums whatever the batching, and no batch over LOGIT_BUDGET logits."""
    from arc_submit.llm import hf_sampler, training

    prompt = prompts.transduction_prompt(OURS, task.train, task.test[0].input, engine.tokenizer).text
    pairs = [TrainingText.pair(prompt[: 300 + 40 * i],
                               prompts.transduction_target(OURS, task.test[0].input[: 1 + i % 3], engine.tokenizer))
             for i in range(12)]
    unbounded = engine.score(pairs)
    seen = []
    real = training.completion_logprobs

    def spy(model, batch, pad_id, device):
        span = max(len(b.input_ids) for b in batch) - min(b.first_trained for b in batch) + 1
        seen.append((len(batch), len(batch) * span * engine.model.config.vocab_size))
        return real(model, batch, pad_id, device)

    monkeypatch.setattr(hf_sampler, "completion_logprobs", spy)
    monkeypatch.setattr(hf_sampler, "LOGIT_BUDGET", 3 * 60 * engine.model.config.vocab_size)
    bounded = engine.score(pairs)
    assert bounded == pytest.approx(unbounded, abs=1e-3)
    assert len(seen) > 1 and all(n <= hf_sampler.LOGIT_BUDGET for size, n in seen if size > 1)  # alone if larger


def test_a_task_adapter_can_start_from_a_saved_lora(engine, task, tmp_path):
    """base_adapter: the task's LoRA starts as the saved one (same scores before any step), then trains on."""
    pairs = pairs_of(task, engine)
    trained = engine.train_adapter("pretrained", pairs, TrainSettings(max_steps=3, epochs=5, learning_rate=3e-3,
                                                                      **FAST_LORA))
    saved = engine.save_adapter(trained, tmp_path)
    probe = pairs[:2]
    expected = engine.score(probe, trained)
    engine.unload_adapter("pretrained")  # its folder stays: what a competitor attaches as a Kaggle input
    started = engine.train_adapter("from-base", pairs, TrainSettings(max_steps=0, base_adapter=str(saved.path),
                                                                     **FAST_LORA))
    assert started.steps == 0
    assert engine.score(probe, started) == pytest.approx(expected, abs=1e-4)  # the saved LoRA, loaded
    assert engine.score(probe) != pytest.approx(expected, abs=1e-4)  # not the base model
    engine.delete_adapter(started)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        engine.train_adapter("nowhere", pairs, TrainSettings(max_steps=1, base_adapter=str(tmp_path), **FAST_LORA))


def test_load_in_4bit_trains_qlora_on_nf4_weights(task):
    """load_in_4bit: transformers quantizes every linear layer to nf4 (bitsandbytes' CPU kernels here), peft trains
    its 4-bit LoRA layers on them, and the quantized bytes do not change."""
    import bitsandbytes as bnb
    import torch

    engine = make_engine("hf", "tiny", load_in_4bit=True)
    try:
        quantized = [m for m in engine.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert len(quantized) == 7 * engine.model.config.num_hidden_layers
        before = [m.weight.detach().clone() for m in quantized]
        pairs = pairs_of(task, engine)
        adapter = engine.train_adapter(task.id, pairs, TrainSettings(epochs=4, learning_rate=3e-3, **FAST_LORA))
        assert adapter.steps == 4 * len(pairs) and adapter.last_loss < adapter.first_loss
        assert all(torch.equal(b, m.weight) for b, m in zip(before, quantized))
        assert sum(engine.score(pairs, adapter)) > sum(engine.score(pairs))
    finally:
        engine.close()
