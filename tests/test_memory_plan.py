"""The GPU memory plan from real model shapes (config.json of Qwen2.5-0.5B, Qwen3-4B, Llama-3.1-8B as published;
tests/data/model_shapes/) against an emulated L4's free memory (21.3 GiB: 22.3 GiB less a worker's CUDA context)."""

import json
from pathlib import Path

import pytest

from arc_submit.llm.memory import GIB, MemoryPlanError, ModelShape, make_plan

SHAPES = Path(__file__).parent / "data" / "model_shapes"
L4_FREE, H100_TOTAL = int(21.3 * GIB), int(79.6 * GIB)
NVARC = dict(max_model_len=8192, train_seq_len=8192, lora_rank=32)  # the 2025 winner's settings


def shape(name):
    return ModelShape.from_config(json.loads((SHAPES / f"{name}.json").read_text()))


def test_parameter_counts_match_the_published_sizes():
    assert shape("qwen2.5-0.5b").params == pytest.approx(0.494e9, rel=0.01)
    assert shape("qwen3-4b").params == pytest.approx(4.02e9, rel=0.01)
    assert shape("llama-3.1-8b").params == pytest.approx(8.03e9, rel=0.01)
    assert shape("qwen3-4b").kv_bytes_per_token() == 2 * 36 * 8 * 128 * 2


def test_two_copies_of_8b_bf16_are_refused_with_the_numbers():
    with pytest.raises(MemoryPlanError) as e:
        make_plan("vllm", shape("llama-3.1-8b"), L4_FREE, H100_TOTAL, share_weights=False, **NVARC)
    message = str(e.value)
    assert "weights 14.96 GiB x 2" in message and "21.3" in message
    assert "share_weights: true" in message and "load_in_4bit" in message


def test_one_shared_copy_of_8b_bf16_is_still_refused():
    with pytest.raises(MemoryPlanError, match="weights 14.96 GiB x 1") as e:
        make_plan("vllm", shape("llama-3.1-8b"), L4_FREE, H100_TOTAL, **NVARC)
    assert "share_weights" not in str(e.value) and "load_in_4bit" in str(e.value)


@pytest.mark.parametrize("engine", ["vllm", "unsloth"])
def test_two_copies_of_4b_do_not_fit_an_l4_but_one_copy_does(engine):
    """What was seen on an H100 under emulation: the 4B training copy ran out of memory beside vLLM."""
    with pytest.raises(MemoryPlanError, match="KV cache would get"):
        make_plan("vllm", shape("qwen3-4b"), L4_FREE, H100_TOTAL, share_weights=False, **NVARC)
    plan = make_plan(engine, shape("qwen3-4b"), L4_FREE, H100_TOTAL, **NVARC)
    assert plan.copies == 1 and plan.kv_gib > 5
    assert plan.needed_gib <= 21.3 + 1e-9


def test_vllm_share_is_sized_from_free_memory_not_the_cards_total():
    """The same free memory on an H100 and on a real L4 (total 22.28 GiB) gives the same share in GiB."""
    on_h100 = make_plan("unsloth", shape("qwen2.5-0.5b"), L4_FREE, H100_TOTAL, **NVARC)
    on_l4 = make_plan("unsloth", shape("qwen2.5-0.5b"), L4_FREE, int(22.28 * GIB), **NVARC)
    assert on_h100.vllm_share_gib == pytest.approx(on_l4.vllm_share_gib)
    assert on_h100.gpu_memory_utilization * 79.6 == pytest.approx(on_l4.gpu_memory_utilization * 22.28, rel=1e-3)


@pytest.mark.parametrize("engine", ["vllm", "unsloth"])
def test_8b_fits_an_l4_only_in_4_bit_with_one_copy(engine):
    with pytest.raises(MemoryPlanError):
        make_plan("hf", shape("llama-3.1-8b"), L4_FREE, H100_TOTAL, **NVARC)
    plan = make_plan(engine, shape("llama-3.1-8b"), L4_FREE, H100_TOTAL, four_bit=True, **NVARC)
    assert plan.copies == 1 and plan.weights_gib < 6 and plan.kv_gib > 2
    with pytest.raises(MemoryPlanError, match="x 2"):
        make_plan("vllm", shape("llama-3.1-8b"), L4_FREE, H100_TOTAL, four_bit=True, share_weights=False, **NVARC)


def test_the_worker_refuses_before_loading_anything(tmp_path, monkeypatch):
    """make_engine makes the plan first: on a CUDA device a plan that cannot fit is refused before any load."""
    import torch

    from arc_submit.llm import make_engine

    (tmp_path / "config.json").write_text((SHAPES / "llama-3.1-8b.json").read_text())  # no weights: never read
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (L4_FREE, H100_TOTAL))
    with pytest.raises(MemoryPlanError, match="weights 14.96 GiB x 2"):
        make_engine("vllm", str(tmp_path), device="cuda", share_weights=False)
