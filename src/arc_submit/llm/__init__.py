"""LLM engines behind one interface (`Engine`), per-task LoRA adapters, and the prompts solvers send.

    from arc_submit.llm import make_engine, Sampling, TrainSettings
    engine = make_engine("hf", "tiny")                       # or ("vllm", "/kaggle/input/model", gpu_memory_utilization=0.8)
    adapter = engine.train_adapter(task.id, pairs, TrainSettings(epochs=2), deadline)
    samples = engine.generate(prompts, Sampling(n=8, temperature=1.0, logprobs=True), adapter)
    engine.delete_adapter(adapter)

vllm and unsloth are imported only when their engine is made, so this package imports on any CPU machine.
"""

from __future__ import annotations

from .engine import (LLAMA_LINEAR_MODULES, Adapter, Engine, EngineSettings, Generation, Sampling, TrainSettings,
                     apply_memory_environment)

ENGINE_KINDS = ("hf", "vllm", "unsloth")


def make_engine(kind: str = "hf", model: str = "tiny", **options) -> Engine:
    """An engine of `kind` for a local model folder (or "tiny"); options are EngineSettings fields."""
    settings = EngineSettings.from_options(model, **options)
    if kind == "hf":
        from .hf_engine import HFEngine
        return HFEngine(settings)
    if kind == "vllm":
        from .vllm_engine import VLLMEngine
        return VLLMEngine(settings)
    if kind == "unsloth":
        from .unsloth_engine import UnslothEngine
        return UnslothEngine(settings)
    raise ValueError(f"unknown engine kind {kind!r}; use one of {', '.join(ENGINE_KINDS)}")


__all__ = ["Adapter", "Engine", "EngineSettings", "Generation", "Sampling", "TrainSettings", "LLAMA_LINEAR_MODULES",
           "ENGINE_KINDS", "apply_memory_environment", "make_engine"]
