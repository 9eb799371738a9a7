"""The engine interface every solver talks to: sample from a model, with or without a per-task LoRA adapter.

Read it like vLLM's public API: a few small value objects (`Sampling`, `TrainSettings`, `Adapter`,
`Generation`; `ModelSettings` with each engine's own `HFSettings` / `VLLMSettings` / `UnslothSettings`) and one
protocol (`Engine`). Adapters follow peft's lifecycle: a named thing
you create (`train_adapter`), use (`generate(..., adapter=)`) and delete (`delete_adapter`). Every adapter
starts from freshly initialised LoRA weights on top of the base model (LoRA B = 0, so before its first step
it computes exactly the base model), with a fresh optimizer: nothing of the previous task leaks in.

Deadlines are `arc_submit.budget.Deadline` values (an absolute wall-clock instant, the same in every process);
None means no limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, Sequence, runtime_checkable

from ..budget import Deadline

# All linear layers of a Llama/Qwen block: what the ARC test-time-training papers adapt.
LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Sampling:
    """How to sample: like vLLM's SamplingParams, only what the solvers need.

    temperature 0 is greedy (all n samples are then the same text). seed makes sampling reproducible on a
    given engine and device. logprobs asks for each sample's cumulative log-probability under the model
    (raw distribution, before temperature and top_p), which solvers use to rank candidates.
    """
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = 0
    logprobs: bool = False
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"Sampling.n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"Sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"Sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"Sampling.max_tokens must be at least 1, got {self.max_tokens}")


@dataclass(frozen=True)
class Generation:
    """One sample for one prompt."""
    text: str
    n_tokens: int
    finished: bool  # True: ended on EOS or a stop string; False: cut at max_tokens
    cumulative_logprob: float | None = None  # sum of log p(token) over the sample; None unless asked for
    token_ids: tuple[int, ...] = ()  # the sampled tokens (EOS included when it ended on one)

    @property
    def mean_logprob(self) -> float | None:
        if self.cumulative_logprob is None or self.n_tokens == 0:
            return None
        return self.cumulative_logprob / self.n_tokens


@dataclass(frozen=True)
class Search:
    """Depth-first search over answers (llm/dfs.py): every completion of a prompt whose probability, end token
    included, is at least `min_prob`, the `max_candidates` most probable of them, each at most `max_tokens` tokens
    (end token included, as Sampling.max_tokens counts it); a branch still open at max_tokens is dropped.

    `tokens` restricts the tokens a branch may continue with (NVARC searched only its grid tokens); the
    probabilities stay those of the whole vocabulary. None: every token. The end token is always allowed."""
    min_prob: float = 0.1
    max_tokens: int = 1024
    max_candidates: int = 8
    tokens: tuple[int, ...] | None = None

    def __post_init__(self):
        if not 0 < self.min_prob < 1:
            raise ValueError(f"Search.min_prob must be in (0, 1), got {self.min_prob}")
        if self.max_tokens < 1:
            raise ValueError(f"Search.max_tokens must be at least 1, got {self.max_tokens}")
        if self.max_candidates < 1:
            raise ValueError(f"Search.max_candidates must be at least 1, got {self.max_candidates}")


@dataclass(frozen=True)
class SearchResult:
    """What `Engine.dfs` found: per prompt, its completions (most probable first; `finished` always True,
    `cumulative_logprob` always set), and how the search went."""
    completions: list[list[Generation]]
    complete: list[bool]  # per prompt: its search ran out of branches (False: the deadline stopped it)
    steps: int  # batched forward passes after the prompts' (one new token per live prompt each)
    stopped_by_deadline: bool

    def mass(self, i: int) -> float:
        """Probability of prompt i's answers found: the share of the model's answers they cover."""
        return float(sum(math.exp(g.cumulative_logprob) for g in self.completions[i]))


@dataclass(frozen=True)
class TrainingText:
    """One training sequence: its text in segments, in order, each carrying the loss or not.

    A leave-one-out pair is `TrainingText.pair(prompt, completion)` (the completion ends with its end-of-sequence
    token, as text); a task as one sequence (NVARC, the ARChitects) alternates untrained inputs and trained outputs.
    Each segment is tokenised on its own, as the prompt is at generation time, and the pieces joined.
    """
    segments: tuple[tuple[str, bool], ...]

    @classmethod
    def pair(cls, prompt: str, completion: str) -> "TrainingText":
        return cls(((prompt, False), (completion, True)))

    def __post_init__(self):
        if not any(trained for _, trained in self.segments):
            raise ValueError("TrainingText: no segment carries the loss")


@dataclass(frozen=True)
class TrainSettings:
    """Per-task LoRA training. Memory on small GPUs: batch 1 + accumulation, gradient checkpointing, max_seq_len.

    Training runs `epochs` passes over the examples (shuffled with `seed`), or `max_steps` optimizer steps if
    set, whichever ends first, and always stops at the deadline.
    """
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; None: epochs decide
    learning_rate: float = 1e-4
    lr_schedule: str = "linear"  # linear (decay to 0 over the planned steps) | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_rank: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    use_rslora: bool = False  # scale alpha / sqrt(rank) (rsLoRA, as NVARC and the ARChitects trained)
    target_modules: tuple[str, ...] = LLAMA_LINEAR_MODULES
    batch_size: int = 1  # sequences per forward pass; 1 keeps activation memory at one sequence
    grad_accumulation: int = 1  # forward passes per optimizer step
    max_seq_len: int = 8192  # longer examples are dropped (logged), never silently truncated
    gradient_checkpointing: bool = True
    seed: int = 0
    # A LoRA to start from (a peft folder: adapter_config.json + weights), e.g. one fine-tuned on ARC before the
    # competition; its rank, alpha and target modules replace the fields above. None: a fresh LoRA per task.
    base_adapter: str | None = None

    def __post_init__(self):
        if self.lr_schedule not in ("linear", "constant"):
            raise ValueError(f"TrainSettings.lr_schedule {self.lr_schedule!r}: use linear or constant")
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ValueError("TrainSettings.batch_size and grad_accumulation must be at least 1")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"TrainSettings.max_steps must be >= 0, got {self.max_steps}")

    def planned_steps(self, n_examples: int) -> int:
        per_step = self.batch_size * self.grad_accumulation
        steps = math.ceil(n_examples * self.epochs / per_step)
        return steps if self.max_steps is None else min(steps, self.max_steps)


@dataclass(frozen=True)
class Adapter:
    """A trained per-task LoRA: a handle the engine knows by name, with what its training did.

    `path` is the folder it was saved to (peft format) when the engine needs it on disk (vLLM), else None.
    """
    name: str
    path: Path | None
    rank: int
    steps: int  # optimizer steps taken
    examples_seen: int  # sequences trained on (with repeats over epochs)
    losses: tuple[float, ...]  # mean completion loss per optimizer step, in order
    stopped_by_deadline: bool
    setup_s: float  # creating the fresh LoRA + optimizer + tokenising
    train_s: float
    dropped_examples: int = 0  # longer than max_seq_len

    @property
    def first_loss(self) -> float | None:
        return self.losses[0] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


@dataclass(frozen=True)
class ModelSettings:
    """Which model, and how every engine loads it. Built with the engine's own settings by `engine_settings`."""
    model: str = "tiny"  # a local model folder, or "tiny" (built and cached by llm.tiny)
    device: str | None = None  # hf: "cpu" / "cuda" / "cuda:1"; None: cuda when there is one
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    max_model_len: int = 8192
    # 4-bit nf4 base weights (bitsandbytes), what an 8B model needs on a 22 GiB L4. vllm: quantization="bitsandbytes"
    # of the bf16 checkpoint as it loads (or a bnb-quantized checkpoint), trained on in place (QLoRA on vLLM's own
    # bytes, shared_weights.py); hf: transformers' BitsAndBytesConfig; unsloth: its own 4-bit load.
    load_in_4bit: bool = False
    # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True before CUDA starts: less fragmentation when training and
    # sampling alternate
    expandable_segments: bool = True
    seed: int = 0


@dataclass(frozen=True)
class HFSettings:
    """transformers + peft (hf_engine.py)."""
    max_batch_sequences: int = 64  # sequences per generate() call (prompt x samples) and per scoring batch


@dataclass(frozen=True)
class VLLMSettings:
    """vLLM sampling with LoRA training on its weights (vllm_engine.py)."""
    gpu_memory_utilization: float = 0.85  # share of the card's TOTAL memory for weights + KV (the plan sizes it)
    enforce_eager: bool = False  # skip CUDA graph capture (faster start, slower decode)
    # Batch sizes to capture CUDA graphs for (a decode batch pads up to the next one); None: vLLM's own list (102
    # sizes up to 512, captured twice). Powers of two to 512 cover our batches (n samples x views): on an H100 under
    # L4 emulation, 0.5B shape, start-up 61 s instead of 114 s from a cold compile cache, host PSS 2.3 GiB.
    cudagraph_capture_sizes: tuple[int, ...] | None = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    enable_prefix_caching: bool = True  # the task's examples are a shared prefix of every sample
    swap_space: float = 0  # vLLM < 0.11: GiB of pinned host RAM for preempted sequences; 0 keeps host RAM low
    max_lora_rank: int = 64  # largest adapter rank vLLM will accept
    max_loras: int = 1  # adapters resident in one batch
    max_num_seqs: int = 512  # sequences decoded together (n=512 samples of one prompt fit one batch)
    adapter_dir: str | None = None  # where adapters are saved for vLLM; None: a temp folder in RAM (/dev/shm)
    # Train on views of vLLM's own weights (one copy per GPU; engine core in this process). False: a second,
    # transformers copy of the weights for training (train_model, or the same folder).
    share_weights: bool = True
    train_model: str | None = None  # with share_weights false: the HF copy to train on; None: same as model
    vllm_options: dict = field(default_factory=dict)  # more LLM(...) arguments (quantization, load_format, ...)


@dataclass(frozen=True)
class UnslothSettings:
    """unsloth's FastLanguageModel, sampling through its own vLLM when it can (unsloth_engine.py)."""
    fast_inference: bool = True  # sample through unsloth's built-in vLLM when vllm is importable
    gpu_memory_utilization: float = 0.85  # its vLLM's share of the card's total memory
    max_lora_rank: int = 64
    adapter_dir: str | None = None  # where adapters are saved for its vLLM; None: a temp folder
    max_batch_sequences: int = 64  # without fast_inference: transformers generate batches, as in HFSettings


ENGINE_SETTINGS = MappingProxyType({"hf": HFSettings, "vllm": VLLMSettings, "unsloth": UnslothSettings})


def engine_settings(kind: str, model: str = "tiny", **options) -> tuple[ModelSettings, object]:
    """(ModelSettings, the engine's own settings) from one flat dict of options; an option no engine knows, or one
    that belongs to another engine, fails by name with the options this engine takes."""
    if kind not in ENGINE_SETTINGS:
        raise ValueError(f"unknown engine kind {kind!r}; use one of {', '.join(ENGINE_SETTINGS)}")
    own = ENGINE_SETTINGS[kind]
    common, specific = _names(ModelSettings), _names(own)
    unknown = sorted(set(options) - common - specific)
    if unknown:
        elsewhere = {n: [k for k, cls in ENGINE_SETTINGS.items() if n in _names(cls)] for n in unknown}
        said = "; ".join(f"{n} is an option of engine {', '.join(ks)}, not {kind}" if ks else f"{n} is unknown"
                         for n, ks in elsewhere.items())
        raise ValueError(f"unknown engine option(s) for engine {kind}: {said}. Engine {kind} takes: "
                         f"{', '.join(sorted(common | specific))}")
    if "cudagraph_capture_sizes" in options and options["cudagraph_capture_sizes"] is not None:
        options = {**options, "cudagraph_capture_sizes": tuple(options["cudagraph_capture_sizes"])}
    return (ModelSettings(model=model, **{k: v for k, v in options.items() if k in common}),
            own(**{k: v for k, v in options.items() if k in specific}))


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def apply_memory_environment(settings: ModelSettings) -> None:
    """Set allocator options before torch touches CUDA (they are read once, at CUDA's first use)."""
    if settings.expandable_segments:
        conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
        if "expandable_segments" not in conf:
            os.environ["PYTORCH_CUDA_ALLOC_CONF"] = ",".join(filter(None, [conf, "expandable_segments:True"]))


@runtime_checkable
class Engine(Protocol):
    """One resident model per process (per GPU); per-task adapters on top of it."""

    name: str  # "hf", "vllm", "unsloth"
    tokenizer: object  # a transformers tokenizer: its chat template and end token render the recipe's prompts
    model_settings: ModelSettings  # what was loaded, and how (solvers read max_model_len: the context length)
    # True when a prompt is processed again for every sample it is asked for (transformers' num_return_sequences:
    # the hf engine, and unsloth without fast_inference), so a call's prompt cost grows with n. The sampler's speed
    # model reads it (solvers/sampling.py). False for vLLM, which processes each prompt once.
    prefills_per_sample: bool

    def generate(self, prompts: Sequence[str], sampling: Sampling,
                 adapter: Adapter | None = None) -> list[list[Generation]]:
        """For each prompt, `sampling.n` samples, in prompt order."""
        ...

    def dfs(self, prompts: Sequence[str], search: Search, adapter: Adapter | None = None,
            deadline: Deadline | None = None) -> SearchResult:
        """For each prompt, every completion at or above `search.min_prob` (llm/dfs.py), the most probable
        `search.max_candidates` of them; prompts searched together in batches; at the deadline it stops with what
        it found."""
        ...

    def score(self, pairs: Sequence[TrainingText], adapter: Adapter | None = None) -> list[float]:
        """Sum of log p over each text's trained segments given what precedes them: for
        TrainingText.pair(prompt, answer), log p(answer | prompt), its end token included; ranks candidate answers."""
        ...

    def train_adapter(self, name: str, examples: Sequence[TrainingText], settings: TrainSettings,
                      deadline: Deadline | None = None) -> Adapter:
        """A fresh LoRA named `name` trained on the examples, loss on their trained segments only.

        Stops cleanly at the deadline and returns what it trained (possibly 0 steps). A name in use is
        replaced. Raises ValueError (naming the adapter) when no example fits max_seq_len.
        """
        ...

    def delete_adapter(self, adapter: Adapter | str) -> None:
        """Free the adapter's weights (and its folder, if the engine saved one). Unknown names are ignored."""
        ...

    def count_tokens(self, text: str) -> int:
        ...

    def close(self) -> None:
        """Free the model and GPU memory; the engine is unusable afterwards."""
        ...
