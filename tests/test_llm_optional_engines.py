"""vllm and unsloth engines on a machine without them: clean imports, clear errors, version-aware arguments."""

from __future__ import annotations

import importlib.util

import pytest

from arc_submit.llm import make_engine
from arc_submit.llm.engine import EngineSettings


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

    settings = EngineSettings(gpu_memory_utilization=0.6, max_model_len=4096, enforce_eager=True,
                              vllm_options={"quantization": "fp8"})
    new_style = {"model", "tokenizer", "dtype", "seed", "gpu_memory_utilization", "max_model_len", "enforce_eager",
                 "enable_prefix_caching", "enable_lora", "max_lora_rank", "max_loras", "max_num_seqs",
                 "cpu_offload_gb", "quantization", "kv_offloading_size"}
    kwargs = llm_kwargs(settings, "/models/m", new_style)
    assert "swap_space" not in kwargs  # vLLM >= 0.11 (V1): no swap space, preempted sequences are recomputed
    assert kwargs["enable_lora"] and kwargs["enable_prefix_caching"] and kwargs["cpu_offload_gb"] == 0
    assert kwargs["gpu_memory_utilization"] == 0.6 and kwargs["quantization"] == "fp8"
    assert "kv_offloading_size" not in kwargs  # KV offloading stays off (unset)
    old_style = kwargs.keys() | {"swap_space"}
    assert llm_kwargs(settings, "/models/m", old_style)["swap_space"] == 0  # older vLLM: no pinned host swap


def test_load_in_4bit_asks_vllm_for_bitsandbytes():
    from arc_submit.llm.vllm_engine import llm_kwargs

    accepted = {"model", "quantization"}
    assert llm_kwargs(EngineSettings(load_in_4bit=True), "/m", accepted)["quantization"] == "bitsandbytes"
    assert "quantization" not in llm_kwargs(EngineSettings(), "/m", accepted)


def test_capture_sizes_and_vllm_compilation_options_merge():
    from arc_submit.llm.vllm_engine import llm_kwargs

    accepted = {"model", "compilation_config"}
    settings = EngineSettings(cudagraph_capture_sizes=(64, 1, 8),
                              vllm_options={"compilation_config": {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}})
    assert llm_kwargs(settings, "/m", accepted)["compilation_config"] == {
        "cudagraph_capture_sizes": [1, 8, 64], "mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    assert llm_kwargs(EngineSettings(), "/m", accepted)["compilation_config"] == {
        "cudagraph_capture_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]}
    assert "compilation_config" not in llm_kwargs(EngineSettings(cudagraph_capture_sizes=None), "/m", accepted)


def test_unsloth_needs_a_gpu_or_says_so():
    """On this CPU machine unsloth is not installed: starting the engine names the fix, not a bare ImportError."""
    from arc_submit.llm.unsloth_engine import UnslothEngine

    with pytest.raises(ImportError, match=r"engine 'unsloth' cannot start: pip install 'arc-submit\[gpu\]'"):
        UnslothEngine()
