"""LLM engines behind one interface (`Engine`), per-task LoRA adapters, and the prompts solvers send.

    from arc_submit.llm import make_engine, Sampling, TrainSettings
    engine = make_engine("hf", "tiny")                       # or ("vllm", "/kaggle/input/model", load_in_4bit=True)
    adapter = engine.train_adapter(task.id, pairs, TrainSettings(epochs=2), Deadline.in_seconds(60))
    samples = engine.generate(prompts, Sampling(n=8, temperature=1.0, logprobs=True), adapter)
    engine.delete_adapter(adapter)

vllm and unsloth are imported only when their engine is made, so this package imports on any CPU machine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .engine import (ENGINE_SETTINGS, LLAMA_LINEAR_MODULES, Adapter, Engine, Generation, HFSettings, ModelSettings,
                     Sampling, TrainSettings, UnslothSettings, VLLMSettings, apply_memory_environment,
                     engine_settings)

ENGINE_KINDS = tuple(ENGINE_SETTINGS)


def make_engine(kind: str = "hf", model: str = "tiny", train_seq_len: int = 8192, lora_rank: int = 32,
                **options) -> Engine:
    """An engine of `kind` for a local model folder (or "tiny"); options are ModelSettings fields and the engine's
    own settings' fields (HFSettings, VLLMSettings, UnslothSettings), checked by name for this kind.
    train_seq_len and lora_rank: the largest training the solvers will ask for (0 and 0: they train nothing).

    On a GPU the memory plan (memory.py) is made first from the model's config and the GPU's free memory: a plan
    that cannot fit raises MemoryPlanError before any weights load, and vLLM's share is sized from free memory
    unless gpu_memory_utilization was given."""
    model_settings, settings = engine_settings(kind, model, **options)
    plan = plan_gpu_memory(kind, model_settings, settings, train_seq_len, lora_rank)
    if plan is not None and plan.vllm_share_gib and "gpu_memory_utilization" not in options:
        settings = replace(settings, gpu_memory_utilization=plan.gpu_memory_utilization)
    if kind == "hf":
        from .hf_engine import HFEngine
        return HFEngine(model_settings, settings)
    if kind == "vllm":
        from .vllm_engine import VLLMEngine
        return VLLMEngine(model_settings, settings)
    from .unsloth_engine import UnslothEngine
    return UnslothEngine(model_settings, settings)


def plan_gpu_memory(kind: str, model_settings: ModelSettings, settings, train_seq_len: int, lora_rank: int):
    """The memory plan on a CUDA device (logged), or None on a CPU or without a model config to read."""
    import logging

    from .memory import ModelShape, make_plan

    if model_settings.device == "cpu":
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from .tiny import resolve_model

    folder = Path(resolve_model(model_settings.model))
    if not (folder / "config.json").is_file():
        return None
    free, total = torch.cuda.mem_get_info()
    vllm = None
    if kind == "vllm":  # what the installed version allocates outside its share (unsloth's vLLM: not modelled)
        from .vllm_engine import installed_vllm_behaviour

        vllm = installed_vllm_behaviour(settings)
    plan = make_plan(kind, ModelShape.from_folder(folder), free, total, max_model_len=model_settings.max_model_len,
                     train_seq_len=min(train_seq_len, model_settings.max_model_len), lora_rank=lora_rank,
                     four_bit=model_settings.load_in_4bit,
                     fast_inference=settings.fast_inference if isinstance(settings, UnslothSettings) else True,
                     share_weights=settings.share_weights if isinstance(settings, VLLMSettings) else True,
                     vllm=vllm)
    logging.getLogger(__name__).info("memory plan: %s", plan.describe())
    return plan


__all__ = ["Adapter", "Engine", "Generation", "HFSettings", "ModelSettings", "Sampling", "TrainSettings",
           "UnslothSettings", "VLLMSettings", "LLAMA_LINEAR_MODULES", "ENGINE_KINDS", "apply_memory_environment",
           "engine_settings", "make_engine"]
