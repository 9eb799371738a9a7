"""A transformers model whose base weights are vLLM's own tensors: one copy of the weights per GPU, trained
through peft LoRA and sampled by vLLM.

vLLM keeps a Llama/Qwen model in a fused inference layout: `qkv_proj` holds q, k and v stacked by rows,
`gate_up_proj` holds gate and up, the vocabulary is padded. A transformers model of the same config computes the
same function from the unfused matrices, and each of those is a row slice of a fused one. So the transformers
model is built on the meta device (no memory), then every parameter is replaced by a view into the matching vLLM
tensor: no copy, no host RAM, and LoRA training (base frozen, adapters as separate modules) never writes to
them, so vLLM's CUDA graphs stay valid. Buffers the meta build left empty (rotary frequencies) are rebuilt from
the config on the GPU.

4-bit weights (vLLM's `quantization="bitsandbytes"`, what an 8B model needs on a 22 GiB L4) are shared too. vLLM
keeps each quantized linear layer as one column of packed bytes (two nf4 values a byte) with the members of a
fused layer one after the other, and hangs one bitsandbytes QuantState per member on the tensor
(`bnb_quant_state`, {member index: state}). Each transformers linear layer then becomes a bitsandbytes
`Linear4bit` whose weight is that member's byte range and whose quant state is vLLM's own object: peft trains its
4-bit LoRA layers (QLoRA) on it, and the embeddings, norms and LM head, which vLLM leaves in bf16, are shared as
above. Other quantizations (fp8, AWQ, GPTQ) are refused by name.

This needs vLLM's engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) and one GPU per engine (no
tensor parallelism): the tensors must live in our address space and be whole.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger(__name__)

VOCAB_MODULES = ("embed_tokens", "lm_head")  # vLLM pads their rows to a multiple of 64


class SharedWeightsError(RuntimeError):
    """vLLM's model cannot lend its weights to a transformers model; the message says which tensor and why."""


def in_process_model(llm):
    """vLLM's torch module, reached through `LLM.apply_model`: the object itself only when the engine core runs
    in this process (otherwise apply_model pickles results across processes, and a function cannot travel)."""
    import torch

    try:
        (model,) = llm.apply_model(lambda m: m)
    except Exception as e:
        raise SharedWeightsError(f"cannot reach vLLM's model in this process ({type(e).__name__}: {e}); "
                                 f"share_weights needs VLLM_ENABLE_V1_MULTIPROCESSING=0 and one GPU") from e
    if not isinstance(model, torch.nn.Module):
        raise SharedWeightsError(f"vLLM's apply_model returned {type(model).__name__}, not the model itself: "
                                 f"the engine core is not in this process (set VLLM_ENABLE_V1_MULTIPROCESSING=0)")
    return model


def vllm_tensors(model) -> dict[str, object]:
    """vLLM's parameters by name, without the `.base_layer` its LoRA wrappers add."""
    return {name.replace(".base_layer", ""): p for name, p in model.named_parameters()}


def packed_sources(packed_mapping: dict[str, list[str]]) -> dict[str, tuple[str, list[str]]]:
    """{'q_proj': ('qkv_proj', ['q_proj', 'k_proj', 'v_proj']), ...} from vLLM's packed_modules_mapping."""
    return {member: (fused, members) for fused, members in packed_mapping.items() for member in members}


def locate(name: str, source: dict, packed: dict) -> tuple[object, str, int, list[str]]:
    """The vLLM tensor holding transformers parameter `name`: (tensor, its name, this parameter's index among the
    members fused in it, those members), or SharedWeightsError."""
    if name in source:
        return source[name], name, 0, [_split(name)[1]]
    prefix, leaf, attr = _split(name)
    if leaf not in packed:
        raise SharedWeightsError(f"{name}: vLLM has no tensor of that name and no fused one holding it")
    fused, members = packed[leaf]
    fused_name = f"{prefix}{fused}.{attr}"
    if fused_name not in source:
        raise SharedWeightsError(f"{name}: vLLM has no {fused_name} to slice it from")
    return source[fused_name], fused_name, members.index(leaf), members


def view_for(name: str, shape: tuple, source: dict, packed: dict, hf_shapes: dict):
    """The slice of a (plain) vLLM tensor that is transformers parameter `name` (of `shape`), or SharedWeightsError."""
    tensor, fused_name, index, members = locate(name, source, packed)
    if fused_name == name:
        if tuple(tensor.shape) == shape:
            return tensor.data
        if (any(f"{m}." in name for m in VOCAB_MODULES) and tuple(tensor.shape[1:]) == shape[1:]
                and tensor.shape[0] >= shape[0]):
            return tensor.data[:shape[0]]  # padded vocabulary rows
        raise SharedWeightsError(f"{name}: vLLM holds shape {tuple(tensor.shape)}, transformers wants {shape}")
    prefix, _, attr = _split(name)
    rows = [hf_shapes[f"{prefix}{m}.{attr}"][0] for m in members]
    if sum(rows) != tensor.shape[0] or tuple(tensor.shape[1:]) != shape[1:]:
        raise SharedWeightsError(f"{name}: {fused_name} has shape {tuple(tensor.shape)}, but {members} stack to "
                                 f"{sum(rows)} rows of {shape[1:]} (quantized or sharded weights cannot be shared)")
    start = sum(rows[:index])
    return tensor.data[start:start + shape[0]]


def is_four_bit(tensor) -> bool:
    """A bitsandbytes 4-bit tensor as vLLM's loader leaves it: packed bytes with one quant state per member."""
    return isinstance(getattr(tensor, "bnb_quant_state", None), dict)


def four_bit_slice(name: str, shape: tuple, source: dict, packed: dict):
    """(packed bytes, QuantState) of transformers weight `name` (of `shape`) inside vLLM's 4-bit tensor."""
    tensor, fused_name, index, members = locate(name, source, packed)
    states = tensor.bnb_quant_state
    if sorted(states) != list(range(len(members))):
        raise SharedWeightsError(f"{name}: {fused_name} carries quant states for members {sorted(states)}, "
                                 f"expected one for each of {members}")
    sizes = [math.prod(states[i].shape) // 2 for i in range(len(members))]  # two 4-bit values a byte
    # .data: vLLM's 4-bit parameter class reports the model's dtype, not the bytes it holds
    if sum(sizes) != tensor.numel() or tensor.data.dtype.itemsize != 1:
        raise SharedWeightsError(f"{name}: {fused_name} holds {tensor.numel()} elements of {tensor.data.dtype}, not "
                                 f"the {sum(sizes)} bytes its quant states describe (not vLLM's bitsandbytes layout)")
    state = states[index]
    if tuple(state.shape) != shape:
        raise SharedWeightsError(f"{name}: vLLM quantized a {tuple(state.shape)} matrix, transformers wants {shape}")
    start = sum(sizes[:index])
    return tensor.data.reshape(-1, 1)[start:start + sizes[index]], state


def four_bit_linear(linear, packed_bytes, state):
    """A bitsandbytes Linear4bit standing in for `linear` (on the meta device), computing with vLLM's bytes."""
    import bitsandbytes as bnb

    module = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                               compute_dtype=state.dtype, quant_type=state.quant_type, device="meta")
    module.weight = bnb.nn.Params4bit(packed_bytes, requires_grad=False, quant_state=state, blocksize=state.blocksize,
                                      compress_statistics=state.nested, quant_type=state.quant_type,
                                      bnb_quantized=True, module=module)
    # On a CPU bitsandbytes repacks the weight for AVX512 at the first no-grad call: a copy, the share lost.
    module.support_avx512bf16_for_cpu = False
    module.bias = linear.bias  # still on the meta device: shared like any plain tensor, below
    return module


def _split(name: str) -> tuple[str, str, str]:
    """'model.layers.0.self_attn.q_proj.weight' -> ('model.layers.0.self_attn.', 'q_proj', 'weight')."""
    *path, leaf, attr = name.split(".")
    return "".join(f"{p}." for p in path), leaf, attr


def hf_model_on_vllm_weights(llm, model_path: str):
    """A transformers causal LM for `model_path` whose every parameter is a view of vLLM's loaded weights."""
    vllm_model = in_process_model(llm)
    return hf_model_on_tensors(vllm_tensors(vllm_model), getattr(vllm_model, "packed_modules_mapping", {}) or {},
                               model_path)


def hf_model_on_tensors(source: dict, packed_mapping: dict[str, list[str]], model_path: str):
    """A transformers causal LM for `model_path` built on views of `source` (name -> tensor, vLLM's layout)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    t0 = time.time()
    first = next(t for t in source.values() if not is_four_bit(t))  # the model's dtype (4-bit ones hold bytes)
    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config, dtype=first.dtype)
    packed = packed_sources(packed_mapping)
    hf_shapes = {n: tuple(p.shape) for n, p in hf.named_parameters(remove_duplicate=False)}
    four_bit = 0
    for name, param in list(hf.named_parameters()):
        module_name, _, attr = name.rpartition(".")
        if attr == "weight" and is_four_bit(locate(name, source, packed)[0]):
            packed_bytes, state = four_bit_slice(name, tuple(param.shape), source, packed)
            _refuse_inference_tensor(name, packed_bytes)
            parent, _, child = module_name.rpartition(".")
            setattr(hf.get_submodule(parent), child, four_bit_linear(hf.get_submodule(module_name), packed_bytes,
                                                                     state))
            four_bit += 1
    if four_bit:
        hf.is_loaded_in_4bit = True  # peft then wraps these layers in its 4-bit LoRA layers
    for name, param in list(hf.named_parameters()):  # tied weights once: re-tied below
        if not param.is_meta:
            continue  # a 4-bit weight, set above
        view = view_for(name, tuple(param.shape), source, packed, hf_shapes)
        if view.dtype != param.dtype:
            raise SharedWeightsError(f"{name}: vLLM holds {view.dtype}, not {param.dtype} (of quantized weights only "
                                     f"bitsandbytes 4-bit can be shared: load_in_4bit, or share_weights false)")
        _refuse_inference_tensor(name, view)
        module = hf.get_submodule(name.rpartition(".")[0])
        module._parameters[name.rpartition(".")[2]] = torch.nn.Parameter(view, requires_grad=False)
    if getattr(hf.config, "tie_word_embeddings", False):
        hf.get_output_embeddings().weight = hf.get_input_embeddings().weight
    _rebuild_meta_buffers(hf, first.device)
    left = [n for n, t in list(hf.named_parameters()) + list(hf.named_buffers()) if t.is_meta]
    if left:
        raise SharedWeightsError(f"tensors left without memory after sharing: {left[:5]}")
    hf.eval()
    log.info("shared weights: transformers %s on vLLM's %d tensors (%d fused, %d linear layers in 4-bit), no copy, "
             "in %.2fs", type(hf).__name__, len(source), sum(1 for n in hf_shapes if _split(n)[1] in packed),
             four_bit, time.time() - t0)
    return hf


def _refuse_inference_tensor(name: str, tensor) -> None:
    if tensor.is_inference():
        raise SharedWeightsError(f"{name}: vLLM made its weights inside torch.inference_mode; autograd cannot use "
                                 f"them (this vLLM version cannot share weights)")


def _rebuild_meta_buffers(hf, device) -> None:
    """Modules whose buffers the meta build left empty (rotary embeddings) are made again, for real, on `device`."""
    import torch

    for name, module in list(hf.named_modules()):
        if not any(b.is_meta for b in module.buffers(recurse=False)):
            continue
        try:
            with torch.device(device):
                fresh = type(module)(config=hf.config)
        except TypeError as e:
            raise SharedWeightsError(f"{name} ({type(module).__name__}) has buffers and cannot be rebuilt from the "
                                     f"config: {e}") from e
        parent, _, attr = name.rpartition(".")
        setattr(hf.get_submodule(parent) if parent else hf, attr, fresh)
