"""The GPU memory plan, made at worker start before any weights load: will this model, this engine and these
training settings fit the memory this GPU has free, and how much of it may vLLM take?

    weights          parameters (from config.json) × bytes per parameter (bf16 2; 4-bit about 0.56 with scales,
                     embeddings and LM head kept in bf16)
    KV per token     2 × layers × KV heads × head dim × 2 bytes
    training peak    LoRA parameters with AdamW (16 bytes each) + checkpointed activations (one hidden state per
                     layer per token) + one layer's working set + the completion's logits in fp32
    vLLM share       weights + CUDA graphs and activations (OVERHEAD) + the KV cache; sized in GiB from FREE
                     memory, so one config serves a real L4 and an emulated one (gpu_memory_utilization is a
                     fraction of the card's total, which an emulated L4 does not change)
    outside vLLM     what the installed vLLM allocates beyond its share (VLLMBehaviour, by version): the logits
                     of the prompt positions it scores at once (`prompt_logprobs`, the augmented scorer) and, where
                     its profiler does not count them, the CUDA graphs. Scoring and training never run at the same
                     time and share one allocator, so the larger of the two is reserved, not their sum.

Engines: `vllm` keeps one copy (training runs on views of vLLM's weights, shared_weights.py) or, with
share_weights false, two (vLLM's and a peft training copy); `hf` one (training and sampling on the same model);
`unsloth` with fast_inference one (its vLLM shares the weights with training).
A plan that cannot fit raises MemoryPlanError naming the numbers and the fix. The figures are estimates;
benchmarks/l4.py measures the real peaks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)

GIB = 2 ** 30
OVERHEAD_GIB = 1.5  # vLLM's CUDA graphs, sampler and activation scratch, beyond weights and KV (measured: 1-2 GiB)
CONTEXT_GIB = 0.5  # the worker's CUDA context and allocator slack outside any plan
MIN_KV_SEQUENCES = 2  # vLLM must hold at least this many full-length sequences
LORA_BYTES_PER_PARAM = 16  # bf16 weight + fp32 grad + two fp32 AdamW moments, rounded up

# What vLLM allocates outside its share, by version (read in vLLM's source, 0.19.1 and 0.25.1 wheels).
PROMPT_LOGIT_BYTES = 6  # per scored prompt position and vocabulary entry: bf16 logits + their fp32 log-softmax
V2_PROMPT_LOGIT_CHUNK = 1024  # model runner V2 (the default from 0.25 for dense models) scores prompts in chunks
# What we give vLLM's V1 runner, which builds the logits of every prompt position of a step at once: a step
# holds at most max_num_batched_tokens positions, and vLLM's own default is 8192 on a card under 70 GiB but 16384
# above (so an emulated L4 would not behave like a real one). 2048 bounds them at 6 x vocab x 2048 (1.7 GiB for
# a 152k vocabulary) and is still four times a decode step's 512 tokens (max_num_seqs); long prompts prefill in
# chunks of it.
V1_MAX_BATCHED_TOKENS = 2048
GRAPHS_OUTSIDE_GIB = 1.2  # CUDA graphs where vLLM's profiler leaves them out (0.3-1.2 GiB in our logs)
ESTIMATE_GRAPHS = "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS"
USE_V2_RUNNER = "VLLM_USE_V2_MODEL_RUNNER"


class MemoryPlanError(RuntimeError):
    """The model, engine and settings cannot fit this GPU; the message has the numbers and the fix."""


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: dict) -> "ModelShape":
        cfg = config.get("text_config", config)
        hidden, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        inter, vocab = int(cfg["intermediate_size"]), int(cfg["vocab_size"])
        attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
        per_layer = attn + 3 * hidden * inter + 2 * hidden
        params = layers * per_layer + vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2) + hidden
        return cls(params, layers, hidden, inter, heads, kv_heads, head_dim, vocab)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ModelShape":
        return cls.from_config(json.loads((Path(folder) / "config.json").read_text()))

    def weight_bytes(self, four_bit: bool) -> float:
        if not four_bit:
            return self.params * 2.0
        embeddings = 2 * self.vocab * self.hidden  # input embeddings and LM head stay in bf16
        return (self.params - embeddings) * 0.5625 + embeddings * 2.0

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    def lora_params(self, rank: int) -> int:
        """All seven Llama-style projections of every layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = [(self.hidden, q), (self.hidden, kv), (self.hidden, kv), (q, self.hidden),
                  (self.hidden, self.intermediate), (self.hidden, self.intermediate), (self.intermediate, self.hidden)]
        return self.layers * rank * sum(a + b for a, b in shapes)

    def training_bytes(self, seq_len: int, rank: int, completion_tokens: int = 1024) -> float:
        lora = self.lora_params(rank) * LORA_BYTES_PER_PARAM
        checkpoints = self.layers * seq_len * self.hidden * 2  # one bf16 hidden state per layer per token
        working = seq_len * (4 * self.hidden + 3 * self.intermediate) * 2 * 2  # one layer's forward + backward
        logits = completion_tokens * self.vocab * (2 + 4 + 4)  # bf16 logits, fp32 log-softmax and its grad
        return lora + checkpoints + working + logits


@dataclass(frozen=True)
class VLLMBehaviour:
    """What one vLLM version does with memory outside its share, and the settings we choose for it.

    env and engine_args are set only where the user set nothing (their environment and vllm_options win)."""
    version: str
    v2_runner: bool  # model runner V2: prompt logits in chunks of V2_PROMPT_LOGIT_CHUNK
    prompt_logit_positions: int  # prompt positions whose logits exist at once while scoring
    graphs_outside_share: bool  # CUDA graphs land outside gpu_memory_utilization
    env: dict = field(default_factory=dict)
    engine_args: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"vllm {self.version}: model runner {'V2' if self.v2_runner else 'V1'}, prompt logits of "
                f"{self.prompt_logit_positions} positions at once, CUDA graphs "
                f"{'outside' if self.graphs_outside_share else 'inside'} its share"
                + "".join(f"; {k}={v}" for k, v in {**self.env, **self.engine_args}.items()))


def _env_flag(environ: Mapping[str, str], name: str) -> bool | None:
    """vLLM reads these flags as bool(int(value)); None where unset."""
    value = environ.get(name)
    if value is None:
        return None
    try:
        return bool(int(value))
    except ValueError:
        raise ValueError(f"{name}={value!r}: vLLM reads it as an integer (0 or 1); set it to 0 or 1, or unset "
                         f"it") from None


def vllm_behaviour(version: str, environ: Mapping[str, str] | None = None, options: Mapping | None = None,
                   enforce_eager: bool = False) -> VLLMBehaviour:
    """The behaviour and our settings for vLLM `version` (pure: the installed version, environment and vllm_options
    in; tests pass strings).

    - 0.19: the V1 model runner (V2 is opt-in there, not used by us) computes the prompt logits of all positions
      of a step at once, outside the memory vLLM profiles, so we cap the step (V1_MAX_BATCHED_TOKENS) and count
      that. Its profiler measures CUDA graphs but leaves them out of the share unless ESTIMATE_GRAPHS=1, which we
      set, so the graphs stay inside the share as the plan assumes.
    - 0.25: model runner V2 for dense models (ours), prompt logits in chunks of 1024; ESTIMATE_GRAPHS is 1 by
      default. Between 0.19 and 0.25 nothing was read: treated as 0.19 (the larger reservation)."""
    environ, options = environ or {}, options or {}
    try:
        v = Version(version)
    except InvalidVersion:
        raise ValueError(f"vllm version {version!r} cannot be read; reinstall vllm") from None
    v2 = v.release[:2] >= (0, 25) and _env_flag(environ, USE_V2_RUNNER) is not False
    env, args = {}, {}
    if v2:
        positions = V2_PROMPT_LOGIT_CHUNK
    elif "max_num_batched_tokens" in options:
        positions = int(options["max_num_batched_tokens"])
    else:
        positions, args["max_num_batched_tokens"] = V1_MAX_BATCHED_TOKENS, V1_MAX_BATCHED_TOKENS
    estimate = _env_flag(environ, ESTIMATE_GRAPHS)
    if v.release[:2] < (0, 19):  # the variable was not read in these versions: assume graphs are outside
        graphs_outside = True
    elif estimate is None:
        graphs_outside = False
        if v.release[:2] < (0, 25):  # defaults to 0 there (read in 0.19.1)
            env[ESTIMATE_GRAPHS] = "1"
    else:
        graphs_outside = not estimate
    return VLLMBehaviour(version, v2, positions, graphs_outside and not enforce_eager, env, args)


def outside_share_gib(training: float, scoring: float, graphs: float) -> float:
    """Beyond vLLM's share: training or scoring (never at once, and one allocator reuses the other's memory), and
    the CUDA graphs vLLM left outside."""
    return max(training, scoring) + graphs


@dataclass(frozen=True)
class MemoryPlan:
    engine: str
    free_gib: float
    total_gib: float
    weights_gib: float
    copies: int
    kv_gib: float  # what vLLM gets for its KV cache (0 for hf)
    training_gib: float
    vllm_share_gib: float  # 0 where no vLLM runs
    scoring_gib: float = 0.0  # vLLM's prompt logits while scoring, outside its share
    graphs_outside_gib: float = 0.0  # CUDA graphs outside vLLM's share

    @property
    def outside_share_gib(self) -> float:
        return outside_share_gib(self.training_gib, self.scoring_gib, self.graphs_outside_gib)

    @property
    def needed_gib(self) -> float:
        if self.engine == "hf":
            return self.weights_gib + self.training_gib + CONTEXT_GIB
        return self.vllm_share_gib + (self.copies - 1) * self.weights_gib + self.outside_share_gib + CONTEXT_GIB

    @property
    def gpu_memory_utilization(self) -> float:
        """vLLM's share as the fraction of the card's total that vLLM's setting means."""
        return round(self.vllm_share_gib / self.total_gib, 4) if self.total_gib else 0.0

    def describe(self) -> str:
        parts = [f"{self.engine}: free {self.free_gib:.1f} of {self.total_gib:.1f} GiB",
                 f"weights {self.weights_gib:.2f} GiB x {self.copies}",
                 f"training peak {self.training_gib:.2f} GiB"]
        if self.scoring_gib:
            parts.append(f"scoring's prompt logits {self.scoring_gib:.2f} GiB")
        if self.graphs_outside_gib:
            parts.append(f"CUDA graphs outside vLLM's share {self.graphs_outside_gib:.2f} GiB")
        if self.vllm_share_gib:
            parts.append(f"vLLM share {self.vllm_share_gib:.2f} GiB (KV {self.kv_gib:.2f} GiB; "
                         f"gpu_memory_utilization {self.gpu_memory_utilization})")
        parts.append(f"needs {self.needed_gib:.2f} GiB")
        return ", ".join(parts)


def make_plan(engine: str, shape: ModelShape, free_bytes: int, total_bytes: int, *, max_model_len: int,
              train_seq_len: int, lora_rank: int, four_bit: bool = False, fast_inference: bool = True,
              share_weights: bool = True, vllm_share_gib: float | None = None,
              vllm: VLLMBehaviour | None = None) -> MemoryPlan:
    """The plan (see the module docstring); MemoryPlanError when it cannot fit. vllm: the installed version's
    behaviour (None: nothing counted outside the share but training)."""
    free, total = free_bytes / GIB, total_bytes / GIB
    weights = shape.weight_bytes(four_bit) / GIB
    training = shape.training_bytes(train_seq_len, lora_rank) / GIB
    min_kv = MIN_KV_SEQUENCES * max_model_len * shape.kv_bytes_per_token() / GIB
    uses_vllm = engine == "vllm" or (engine == "unsloth" and fast_inference)
    copies = 2 if engine == "vllm" and not share_weights else 1
    if not uses_vllm:
        plan = MemoryPlan(engine, free, total, weights, 1, 0.0, training, 0.0)
    else:
        scoring = PROMPT_LOGIT_BYTES * shape.vocab * vllm.prompt_logit_positions / GIB if vllm else 0.0
        graphs = GRAPHS_OUTSIDE_GIB if vllm and vllm.graphs_outside_share else 0.0
        # vLLM gets what is left once training or scoring (and, for the two-copy engine, the training copy) has
        # its room.
        rest = free - CONTEXT_GIB - outside_share_gib(training, scoring, graphs) - (copies - 1) * weights
        share = vllm_share_gib if vllm_share_gib is not None else rest
        plan = MemoryPlan(engine, free, total, weights, copies, share - weights - OVERHEAD_GIB, training, share,
                          scoring, graphs)
        if plan.kv_gib < min_kv:
            raise MemoryPlanError(
                f"memory plan for {engine} does not fit: {plan.describe()}; vLLM's KV cache would get "
                f"{plan.kv_gib:.2f} GiB, under the {min_kv:.2f} GiB that {MIN_KV_SEQUENCES} sequences of "
                f"max_model_len {max_model_len} need. Fix: {_fixes(plan, four_bit)}")
    if plan.needed_gib > free:
        raise MemoryPlanError(f"memory plan for {engine} does not fit: {plan.describe()} > {free:.2f} GiB free. "
                              f"Fix: {_fixes(plan, four_bit)}")
    return plan


def _fixes(plan: MemoryPlan, four_bit: bool) -> str:
    fixes = []
    if plan.copies > 1:
        fixes.append("share_weights: true (training on vLLM's own weights: one copy)")
    if plan.scoring_gib > plan.training_gib:
        fixes.append(f"a smaller max_num_batched_tokens in vllm_options (scoring's prompt logits, "
                     f"{plan.scoring_gib:.2f} GiB, are the larger reservation)")
    if plan.graphs_outside_gib:
        fixes.append(f"{ESTIMATE_GRAPHS}=1 (vLLM counts its CUDA graphs in its share), or enforce_eager: true")
    if not four_bit:
        fixes.append("load_in_4bit: true (4-bit base weights)")
    fixes += ["a smaller max_model_len or max_seq_len", "a smaller lora_rank", "a smaller model"]
    return "; or ".join(fixes)
