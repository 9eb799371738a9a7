"""The transformers model built on vLLM-layout tensors computes what the original model computes, holds no copy,
and LoRA training leaves the shared tensors untouched.

vLLM itself cannot run on a CPU, so the fused tensors here are made by hand the way vLLM lays them out (q/k/v
and gate/up stacked by rows, vocabulary rows padded to a multiple of 64, named as `vllm_tensors` names them): a
stand-in for vLLM's layout. test_llm_gpu.py checks the same thing against real vLLM.
"""

from __future__ import annotations

import pytest
import torch

from arc_submit.llm.shared_weights import SharedWeightsError, hf_model_on_tensors

PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def small_model(kind: str, tmp_path):
    import transformers

    common = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    config = {"llama": lambda: transformers.LlamaConfig(tie_word_embeddings=True, **common),
              "qwen2": lambda: transformers.Qwen2Config(tie_word_embeddings=False, **common),
              "qwen3": lambda: transformers.Qwen3Config(tie_word_embeddings=True, **common)}[kind]()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path / kind)
    return model, str(tmp_path / kind)


def vllm_layout(model) -> dict[str, torch.Tensor]:
    """The model's weights fused and padded as vLLM holds them (stand-in for vLLM's loaded model)."""
    state = dict(model.state_dict())
    out = {}
    for fused, members in PACKED.items():
        for key in [k for k in state if f".{members[0]}." in k]:
            parts = [state.pop(key.replace(members[0], m)) for m in members]
            out[key.replace(members[0], fused)] = torch.cat(parts).clone()
    for key in list(state):
        tensor = state.pop(key)
        if "embed_tokens" in key or "lm_head" in key:
            padded = torch.zeros((-(-tensor.shape[0] // 64) * 64, *tensor.shape[1:]), dtype=tensor.dtype)
            padded[:tensor.shape[0]] = tensor
            tensor = padded
        out[key] = tensor.clone()
    return out


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_views_compute_the_same_logits_without_a_copy(kind, tmp_path):
    original, path = small_model(kind, tmp_path)
    source = vllm_layout(original)
    shared = hf_model_on_tensors(source, PACKED, path)
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        assert torch.allclose(shared(input_ids=ids).logits, original(input_ids=ids).logits, atol=1e-5)
    fused_storages = {t.untyped_storage().data_ptr() for t in source.values()}
    for name, p in shared.named_parameters():
        assert p.untyped_storage().data_ptr() in fused_storages, f"{name} is a copy"
    q = shared.model.layers[0].self_attn.q_proj.weight
    assert q.data_ptr() == source["model.layers.0.self_attn.qkv_proj.weight"].data_ptr()


def test_lora_training_leaves_the_shared_tensors_untouched(tmp_path):
    from peft import LoraConfig, get_peft_model

    original, path = small_model("qwen2", tmp_path)
    source = vllm_layout(original)
    before = {k: v.clone() for k, v in source.items()}
    shared = hf_model_on_tensors(source, PACKED, path)
    peft_model = get_peft_model(shared, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "gate_proj"]))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (1, 16))
    losses = []
    for _ in range(5):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], source[k]) for k in source)


def test_a_tensor_that_does_not_fit_is_named(tmp_path):
    original, path = small_model("llama", tmp_path)
    source = vllm_layout(original)
    source["model.layers.1.self_attn.qkv_proj.weight"] = source["model.layers.1.self_attn.qkv_proj.weight"][:-8]
    with pytest.raises(SharedWeightsError, match="model.layers.1.self_attn.q_proj.weight.*qkv_proj"):
        hf_model_on_tensors(source, PACKED, path)
    source = vllm_layout(original)
    del source["model.norm.weight"]
    with pytest.raises(SharedWeightsError, match="model.norm.weight"):
        hf_model_on_tensors(source, PACKED, path)
