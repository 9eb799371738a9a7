"""vllm and unsloth engines on a machine without them: clean imports, clear errors, version-aware arguments."""

from __future__ import annotations

import importlib.util

import pytest

from arc_submit.llm import make_engine
from arc_submit.llm.engine import ModelSettings, VLLMSettings


def test_engine_modules_import_without_their_packages():
    import arc_submit.llm.unsloth_engine  # noqa: F401
    import arc_submit.llm.vllm_engine  # noqa: F401


@pytest.mark.parametrize("kind", ["vllm", "unsloth"])
def test_asking_for_a_missing_engine_says_what_to_install(kind):
    if importlib.util.find_spec(kind) is not None:
        pytest.skip(f"{kind} is installed here")
    with pytest.raises(ImportError, match=rf"{kind} is not installed.*pip install 'arc-submit\[gpu\]'.*'hf'"):
        make_engine(kind, "tiny")


def test_vllm_arguments_follow_what_the_installed_version_accepts():
    from arc_submit.llm.vllm_engine import llm_kwargs

    model = ModelSettings(max_model_len=4096)
    settings = VLLMSettings(gpu_memory_utilization=0.6, enforce_eager=True, vllm_options={"quantization": "fp8"})
    new_style = {"model", "tokenizer", "dtype", "seed", "gpu_memory_utilization", "max_model_len", "enforce_eager",
                 "enable_prefix_caching", "enable_lora", "max_lora_rank", "max_loras", "max_num_seqs",
                 "cpu_offload_gb", "quantization", "kv_offloading_size"}
    kwargs = llm_kwargs(model, settings, "/models/m", new_style)
    assert "swap_space" not in kwargs  # vLLM >= 0.11 (V1): no swap space, preempted sequences are recomputed
    assert kwargs["enable_lora"] and kwargs["enable_prefix_caching"] and kwargs["cpu_offload_gb"] == 0
    assert kwargs["gpu_memory_utilization"] == 0.6 and kwargs["quantization"] == "fp8"
    assert "kv_offloading_size" not in kwargs  # KV offloading stays off (unset)
    old_style = kwargs.keys() | {"swap_space"}
    assert llm_kwargs(model, settings, "/models/m", old_style)["swap_space"] == 0  # older vLLM: no pinned host swap


def test_load_in_4bit_asks_vllm_for_bitsandbytes():
    from arc_submit.llm.vllm_engine import llm_kwargs

    accepted = {"model", "quantization"}
    four_bit = ModelSettings(load_in_4bit=True)
    assert llm_kwargs(four_bit, VLLMSettings(), "/m", accepted)["quantization"] == "bitsandbytes"
    assert "quantization" not in llm_kwargs(ModelSettings(), VLLMSettings(), "/m", accepted)


def test_capture_sizes_and_vllm_compilation_options_merge():
    from arc_submit.llm.vllm_engine import llm_kwargs

    accepted = {"model", "compilation_config"}
    model = ModelSettings()
    settings = VLLMSettings(cudagraph_capture_sizes=(64, 1, 8),
                            vllm_options={"compilation_config": {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}})
    assert llm_kwargs(model, settings, "/m", accepted)["compilation_config"] == {
        "cudagraph_capture_sizes": [1, 8, 64], "mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    assert llm_kwargs(model, VLLMSettings(), "/m", accepted)["compilation_config"] == {
        "cudagraph_capture_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]}
    assert "compilation_config" not in llm_kwargs(model, VLLMSettings(cudagraph_capture_sizes=None), "/m", accepted)


def test_unsloth_needs_a_gpu_or_says_so():
    """On this CPU machine unsloth is not installed: starting the engine names the fix, not a bare ImportError."""
    from arc_submit.llm.unsloth_engine import UnslothEngine

    with pytest.raises(ImportError, match=r"engine 'unsloth' cannot start: pip install 'arc-submit\[gpu\]'"):
        UnslothEngine()


class StandInFastLanguageModel:
    """A stand-in for unsloth's FastLanguageModel (unsloth needs a CUDA GPU and is not installed here): the same
    four calls the engine makes, done by transformers and peft. It checks the engine's own logic (one resident
    LoRA re-initialised per task, the transformers sampler on it), not unsloth."""

    @staticmethod
    def from_pretrained(model_name, max_seq_length, dtype, load_in_4bit, fast_inference, gpu_memory_utilization,
                        max_lora_rank, local_files_only):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert not fast_inference and local_files_only
        return AutoModelForCausalLM.from_pretrained(model_name, dtype=dtype), AutoTokenizer.from_pretrained(model_name)

    @staticmethod
    def get_peft_model(model, r, lora_alpha, lora_dropout, target_modules, use_rslora, bias,
                       use_gradient_checkpointing, random_state, max_seq_length):
        from peft import LoraConfig, get_peft_model

        # unsloth's own takes use_rslora too (NVARC passed use_rslora=True to it).
        return get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                target_modules=target_modules, use_rslora=use_rslora, bias=bias,
                                                task_type="CAUSAL_LM"))

    @staticmethod
    def for_training(model):
        model.train()

    @staticmethod
    def for_inference(model):
        model.eval()


def test_unsloth_engine_logic_on_a_stand_in(monkeypatch, arc1_train):
    from arc_submit.augment import Augmentation
    from arc_submit.llm import Sampling, TrainSettings, prompts, unsloth_engine
    from arc_submit.llm.recipes import recipe
    from arc_submit.solvers import transduction

    ours = recipe("arc-submit")

    monkeypatch.setattr(unsloth_engine, "import_unsloth", lambda: StandInFastLanguageModel)
    engine = make_engine("unsloth", "tiny", device="cpu", fast_inference=False, max_batch_sequences=8)
    try:
        task = min((t for t in arc1_train.values() if len(t.train) >= 3), key=lambda t: t.cost_estimate())
        pairs = transduction.training_texts(task, [Augmentation()], engine, ours, None, {})
        lora = dict(lora_rank=8, lora_alpha=16, learning_rate=3e-3, gradient_checkpointing=False)
        base = engine.score(pairs)
        first = engine.train_adapter("a", pairs, TrainSettings(epochs=4, **lora))
        assert first.steps == 4 * len(pairs) and first.last_loss < first.first_loss
        assert sum(engine.score(pairs, first)) > sum(base) + 1.0
        # The next task re-initialises the one resident LoRA: it starts as the base model again.
        fresh = engine.train_adapter("b", pairs, TrainSettings(max_steps=0, **lora))
        assert engine.score(pairs, fresh) == pytest.approx(base, abs=1e-4)
        with pytest.raises(KeyError, match="'a' is not loaded.*only the latest"):
            engine.score(pairs, first)  # its weights were overwritten
        with pytest.raises(ValueError, match="one LoRA per model"):
            engine.train_adapter("c", pairs, TrainSettings(max_steps=0, **{**lora, "lora_rank": 4}))
        prompt = prompts.transduction_prompt(ours, task.train, task.test[0].input, engine.tokenizer).text
        (samples,) = engine.generate([prompt], Sampling(n=3, temperature=1.0, max_tokens=8, seed=0), fresh)
        assert len(samples) == 3 and all(g.n_tokens > 0 for g in samples)
    finally:
        engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.score(pairs)


def test_unsloth_without_fast_inference_is_predicted_to_prefill_per_sample(monkeypatch):
    """unsloth without fast_inference samples through transformers' generate, as the hf engine does: the prompt is
    processed again for every sample. The engine says so, and the sampler's speed model, made for the engine,
    predicts 8 samples of a 100-token prompt at 8 prefills (vLLM: 1)."""
    from arc_submit.llm import unsloth_engine
    from arc_submit.llm.vllm_sampler import VLLMSampler
    from arc_submit.solvers.sampling import SpeedModel, predict_seconds

    monkeypatch.setattr(unsloth_engine, "import_unsloth", lambda: StandInFastLanguageModel)
    engine = make_engine("unsloth", "tiny", device="cpu", fast_inference=False)
    try:
        assert engine.prefills_per_sample
        measured = dict(prefill_s=0.01, step_s=1e-6)  # 10 ms per prompt token; decoding all but free
        speed = SpeedModel.for_engine(engine)
        speed.prefill_s, speed.step_s = measured["prefill_s"], measured["step_s"]
        assert predict_seconds(speed, [100], per_prompt=8, max_tokens=1) == pytest.approx(8.0, abs=1e-3)
        assert predict_seconds(speed, [100], per_prompt=8, max_tokens=1, logprobs=True) == pytest.approx(16.0, abs=1e-3)
    finally:
        engine.close()
    assert VLLMSampler.prefills_per_sample is False  # what the vllm engine, and unsloth with fast_inference, report
    once = SpeedModel(prefills_per_sample=VLLMSampler.prefills_per_sample, **measured)
    assert predict_seconds(once, [100], per_prompt=8, max_tokens=1) == pytest.approx(1.0, abs=1e-3)
