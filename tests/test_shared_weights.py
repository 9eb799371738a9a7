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


def small_model(kind: str, tmp_path, vocab: int = 100):
    import transformers

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
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


# --- 4-bit: vLLM's `quantization="bitsandbytes"` layout ------------------------------------------------------------

LINEAR = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"],
          "o_proj": ["o_proj"], "down_proj": ["down_proj"]}


def vllm_four_bit_layout(model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stand-in for vLLM's bitsandbytes loader: every linear layer's members quantized one by one (nf4), their bytes
    stacked in one column, one QuantState per member hung on the tensor as `bnb_quant_state`; embeddings, norms,
    biases and the LM head stay plain (vLLM quantizes only linear layers). vLLM undoes double quantization at load,
    so the states here are made without it. Also returns each linear weight as the nf4 values dequantized: the
    function the 4-bit model computes."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    out = vllm_layout(model)
    dequantized = {}
    for fused, members in LINEAR.items():
        for key in [k for k in out if k.endswith(f".{fused}.weight")]:
            rows = [m.weight.shape[0] for m in (model.get_submodule(key.replace(f"{fused}.weight", member))
                                                for member in members)]
            parts, states = [], {}
            for i, chunk in enumerate(torch.split(out[key], rows)):
                packed, state = quantize_4bit(chunk.contiguous(), compress_statistics=False, quant_type="nf4")
                parts.append(packed)
                states[i] = state
                dequantized[key.replace(fused, members[i])] = dequantize_4bit(packed, state)
            weight = torch.nn.Parameter(torch.cat(parts), requires_grad=False)
            weight.bnb_quant_state = states
            out[key] = weight
    return out, dequantized


def four_bit_model(kind, tmp_path, vocab: int = 100):
    original, path = small_model(kind, tmp_path, vocab)
    original = original.to(torch.bfloat16)
    source, dequantized = vllm_four_bit_layout(original)
    reference = original
    with torch.no_grad():
        for name, weight in dequantized.items():
            reference.get_submodule(name.rpartition(".")[0]).weight.copy_(weight)
    return source, reference, path


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_four_bit_views_compute_the_nf4_model_without_a_copy(kind, tmp_path):
    import bitsandbytes as bnb

    source, reference, path = four_bit_model(kind, tmp_path)
    shared = hf_model_on_tensors(source, PACKED, path)
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        got, want = shared(input_ids=ids).logits.float(), reference(input_ids=ids).logits.float()
    assert torch.allclose(got, want, atol=2e-2), (got - want).abs().max()
    layers = [m for m in shared.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 7 * 2 and shared.is_loaded_in_4bit
    storages = {t.untyped_storage().data_ptr() for t in source.values()}
    for name, p in shared.named_parameters():
        assert p.untyped_storage().data_ptr() in storages, f"{name} is a copy"
    k = shared.model.layers[1].self_attn.k_proj
    qkv = source["model.layers.1.self_attn.qkv_proj.weight"]
    assert k.weight.quant_state is qkv.bnb_quant_state[1]
    assert k.weight.data_ptr() == qkv.data_ptr() + qkv.bnb_quant_state[0].shape.numel() // 2


def test_four_bit_lora_training_leaves_vllms_bytes_untouched(tmp_path):
    """QLoRA through the hf engine (the vllm engine's trainer) on views of the packed bytes: peft wraps the 4-bit
    layers, the loss falls, the bytes and quant states vLLM samples with stay bit-identical."""
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    from arc_submit.llm.engine import ModelSettings, TrainSettings
    from arc_submit.llm.hf_engine import HFEngine

    source, _, path = four_bit_model("qwen2", tmp_path, vocab=512)  # the tiny tokenizer's vocabulary
    before = {k: v.detach().clone() for k, v in source.items()}
    absmax = {k: [s.absmax.clone() for s in v.bnb_quant_state.values()] for k, v in source.items()
              if hasattr(v, "bnb_quant_state")}
    from arc_submit.llm.tiny import build_tokenizer

    tokenizer = build_tokenizer(512)
    engine = HFEngine(ModelSettings(model=path, device="cpu", dtype="bfloat16"),
                      model=hf_model_on_tensors(source, PACKED, path), tokenizer=tokenizer)
    from arc_submit.llm.engine import TrainingText

    end = tokenizer.eos_token
    pairs = [TrainingText.pair("1 2 3 4", " 4 3 2 1" + end), TrainingText.pair("5 6 7", " 7 6 5" + end),
             TrainingText.pair("8 9 1 2", " 2 1 9 8" + end)]
    adapter = engine.train_adapter("t", pairs, TrainSettings(epochs=12, lora_rank=4, lora_alpha=8,
                                                             learning_rate=1e-2))
    assert adapter.steps == 36 and adapter.last_loss < adapter.first_loss
    wrapped = [m for m in engine.peft_model.modules() if isinstance(m, LoraLinear4bit)]
    assert len(wrapped) == 7 * 2
    assert all(torch.equal(before[k], source[k].detach()) for k in source)
    assert all(torch.equal(a, s.absmax) for k, states in absmax.items()
               for a, s in zip(states, source[k].bnb_quant_state.values()))


def test_four_bit_quant_states_that_do_not_fit_are_named(tmp_path):
    source, _, path = four_bit_model("llama", tmp_path)
    gate_up = source["model.layers.0.mlp.gate_up_proj.weight"]
    del gate_up.bnb_quant_state[1]
    with pytest.raises(SharedWeightsError, match="model.layers.0.mlp.gate_proj.weight.*gate_up_proj.*members \\[0\\]"):
        hf_model_on_tensors(source, PACKED, path)
    source, _, path = four_bit_model("llama", tmp_path)
    qkv = source["model.layers.1.self_attn.qkv_proj.weight"]
    source["model.layers.1.self_attn.qkv_proj.weight"] = torch.nn.Parameter(qkv.data[:-8], requires_grad=False)
    source["model.layers.1.self_attn.qkv_proj.weight"].bnb_quant_state = qkv.bnb_quant_state
    with pytest.raises(SharedWeightsError, match="model.layers.1.self_attn.q_proj.weight.*bytes its quant states"):
        hf_model_on_tensors(source, PACKED, path)
