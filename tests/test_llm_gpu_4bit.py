"""GPU: the vllm engine with 4-bit base weights (load_in_4bit: vLLM's bitsandbytes nf4) trains each task's LoRA on
vLLM's own packed bytes. Its own module, so its vLLM starts in a fresh pytest process (one LLM per process):
    pytest -m gpu tests/test_llm_gpu_4bit.py
"""

from __future__ import annotations

import pytest

from test_llm_gpu import check_one_copy_cycle

pytestmark = pytest.mark.gpu


def test_four_bit_cycle_trains_on_vllms_packed_bytes():
    pytest.importorskip("vllm")
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from arc_submit.llm import make_engine
    from arc_submit.llm.shared_weights import in_process_model, vllm_tensors

    engine = make_engine("vllm", "tiny", load_in_4bit=True, gpu_memory_utilization=0.3, max_model_len=4096,
                         max_lora_rank=16, enforce_eager=True)
    try:
        qkv = vllm_tensors(in_process_model(engine.llm))["model.layers.0.self_attn.qkv_proj.weight"]
        assert sorted(qkv.bnb_quant_state) == [0, 1, 2]  # the layout the CPU stand-in copies
        trainer = check_one_copy_cycle(engine)
        layers = [m for m in trainer.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert len(layers) == 7 * trainer.config.num_hidden_layers
        q = trainer.model.layers[0].self_attn.q_proj
        assert q.weight.data_ptr() == qkv.data_ptr() and q.weight.quant_state is qkv.bnb_quant_state[0]
    finally:
        engine.close()
