"""vLLM for sampling, with per-task LoRA adapters trained by peft on the same weights vLLM holds.

Training needs a transformers model; vLLM's weights live in its own fused, inference-only layout. With
`share_weights` (the default) the transformers model is built on views of vLLM's tensors (shared_weights.py):
one copy of the weights per GPU, no host-RAM staging, and vLLM's engine core runs in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, which the share needs and which also saves the second process's host RAM).
With `share_weights: false` training runs on a second, transformers copy of the weights (`train_model` or the same
folder) loaded at the first adapter: twice the weights in GPU memory, refused by the memory plan where it
cannot fit.

The adapter is written in peft format to a folder in RAM (/dev/shm where there is one) and handed to vLLM as a
`LoRARequest` with an id used for nothing else, so vLLM never serves a previous task's weights from its LoRA
cache. Training adds the LoRA as separate modules and never writes the base weights, so CUDA graphs captured at
start stay valid.

GPU memory by version (memory.vllm_behaviour, read in vLLM's source): 0.19's V1 model runner builds the logits
of every prompt position of a step at once, so the step is capped (max_num_batched_tokens); its profiler leaves
CUDA graphs out of the share unless VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1, which is set. 0.25 needs
neither. The memory plan counts the same behaviour, from the same function.

Host RAM: older vLLM versions take `swap_space` (GiB of pinned host RAM per GPU, 4 by default) and we pass
0; vLLM 0.11+ has no such argument (V1 recomputes preempted sequences), so it is detected, not assumed. KV and
weight offloading to the CPU (`kv_offloading_size`, `cpu_offload_gb`) stay off.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ..budget import Deadline
from .engine import (Adapter, Generation, HFSettings, ModelSettings, Sampling, Search, SearchResult, TrainingText,
                     TrainSettings, VLLMSettings, apply_memory_environment)
from .engine_parts import AdapterHandles, EngineLife, check_adapter_name, handle_name, vllm_lora_problem
from .memory import VLLMBehaviour, vllm_behaviour
from .tiny import resolve_model
from .tokenizers import ids_difference, load_tokenizer
from .training import count_tokens
from .vllm_sampler import VLLMSampler, adapter_name

log = logging.getLogger(__name__)

MISSING_VLLM = ("vllm is not installed, so engine 'vllm' cannot start: pip install 'arc-submit[gpu]' (or, offline, "
                "the wheels dataset: see kaggle/ and shared GPU notes), or use engine kind 'hf'")


def import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{MISSING_VLLM} ({e})") from e
    return vllm


def accepted_engine_args(vllm) -> set[str]:
    """Names the installed vLLM's LLM(...) really uses: EngineArgs fields plus LLM's own named parameters.

    (vLLM 0.25's LLM still swallows `swap_space` through **kwargs with a deprecation warning; EngineArgs
    no longer has it, so it counts as not accepted.)"""
    from vllm.engine.arg_utils import EngineArgs

    names = {f.name for f in dataclasses.fields(EngineArgs)}
    names |= {n for n, p in inspect.signature(vllm.LLM.__init__).parameters.items() if p.kind != p.VAR_KEYWORD}
    return names - {"self"}


def installed_vllm_behaviour(settings: VLLMSettings) -> VLLMBehaviour | None:
    """What the installed vLLM will do (memory.vllm_behaviour), from its package metadata without importing it
    (the memory plan runs before the engine loads); None where vllm is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("vllm")
    except PackageNotFoundError:
        return None
    return vllm_behaviour(installed, os.environ, settings.vllm_options, settings.enforce_eager)


def llm_kwargs(model: ModelSettings, settings: VLLMSettings, model_path: str, accepted: set[str],
               version_args: dict | None = None) -> dict:
    """The LLM(...) arguments for these settings, keeping only what this vLLM version accepts. version_args: what
    this version needs (VLLMBehaviour.engine_args); vllm_options override them."""
    wanted = dict(
        model=model_path, tokenizer=model_path, dtype="auto" if model.dtype == "auto" else model.dtype,
        seed=model.seed, gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=model.max_model_len, enforce_eager=settings.enforce_eager,
        enable_prefix_caching=settings.enable_prefix_caching, enable_lora=True,
        max_lora_rank=settings.max_lora_rank, max_loras=settings.max_loras, max_num_seqs=settings.max_num_seqs,
        swap_space=settings.swap_space,  # only where accepted: older versions pin 4 GiB of host RAM per GPU
        cpu_offload_gb=0)  # weights stay on the GPU: offloading pins host RAM
    if model.load_in_4bit:
        wanted["quantization"] = "bitsandbytes"  # nf4, quantized as the weights load; shared_weights.py trains on it
    compilation = {}
    if settings.cudagraph_capture_sizes:
        compilation["cudagraph_capture_sizes"] = sorted(settings.cudagraph_capture_sizes)
    options = dict(settings.vllm_options)
    compilation.update(options.pop("compilation_config", None) or {})
    if compilation:
        wanted["compilation_config"] = compilation
    wanted.update(version_args or {})
    wanted.update(options)
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    skipped = sorted(set(wanted) - set(kwargs))
    if skipped:
        log.info("vllm: this version takes no %s; left out", ", ".join(skipped))
    return kwargs


def engine_core_in_process() -> None:
    """vLLM's engine core in this process: the weights must be in our address space to be shared."""
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
        raise ValueError("VLLM_ENABLE_V1_MULTIPROCESSING is set to "
                         f"{os.environ['VLLM_ENABLE_V1_MULTIPROCESSING']!r}, but share_weights needs vLLM's engine "
                         "core in this process: unset it, or set engine option share_weights: false")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


def warn_if_tokenizers_differ(vllms, model_path: str) -> None:
    """Log when vLLM's own tokenizer does not give tokenizer.json's ids. Prompts are unaffected (they reach vLLM as
    our token ids); the texts of samples taken with stop strings come from vLLM's detokeniser, and may differ."""
    spec_file = Path(model_path) / "tokenizer.json"
    if not spec_file.is_file() or not callable(vllms):
        return
    try:
        from tokenizers import Tokenizer

        difference = ids_difference(vllms, Tokenizer.from_file(str(spec_file)))
    except Exception as e:  # a tokenizer of vLLM's own kind (mistral, tiktoken): nothing to compare, or to warn of
        log.debug("vllm tokenizer comparison skipped: %s", e)
        return
    if difference is not None:
        log.warning("vllm engine: vLLM's tokenizer for %s does not give tokenizer.json's ids (%s); prompts reach "
                    "vLLM as our token ids, but the texts of samples taken with stop strings are vLLM's decoding",
                    model_path, difference)


def ram_folder() -> str | None:
    """/dev/shm (RAM-backed) where it exists and is writable: adapters go to vLLM without touching a disk."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_settings: ModelSettings | None = None, settings: VLLMSettings | None = None):
        self.model_settings = model_settings or ModelSettings()
        self.settings = settings or VLLMSettings()
        apply_memory_environment(self.model_settings)
        # A sampler JIT (FlashInfer) hung the first generate on our test machines; the PyTorch sampler is fine.
        os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        if self.settings.share_weights:
            engine_core_in_process()
        vllm = import_vllm()
        t0 = time.time()
        self.behaviour = vllm_behaviour(vllm.__version__, os.environ, self.settings.vllm_options,
                                        self.settings.enforce_eager)
        for name, value in self.behaviour.env.items():  # what the memory plan counted on; read when LLM() starts
            os.environ.setdefault(name, value)
        log.info("vllm memory behaviour: %s", self.behaviour.describe())
        self.model_path = resolve_model(self.model_settings.model)
        self.kwargs = llm_kwargs(self.model_settings, self.settings, self.model_path, accepted_engine_args(vllm),
                                 self.behaviour.engine_args)
        self.llm = vllm.LLM(**self.kwargs)
        # Ours, not vLLM's (vLLM loads with AutoTokenizer): the sampler hands vLLM token ids made with it, so
        # prompts, training and scoring share the file's ids; vLLM's own tokenizer only detokenises samples taken
        # with stop strings, and warn_if_tokenizers_differ says when that could differ.
        self.tokenizer = load_tokenizer(self.model_path)
        warn_if_tokenizers_differ(self.llm.get_tokenizer(), self.model_path)
        self.sampler = VLLMSampler(lambda inputs, params, lora: self.llm.generate(inputs, params, lora_request=lora,
                                                                                 use_tqdm=False),
                                   self.tokenizer, remove_lora=lambda lora_id: self.llm.llm_engine.remove_lora(lora_id))
        self.trainer = None  # an HFEngine (on views of vLLM's weights, or on a copy), made at the first adapter
        self.adapters = AdapterHandles()
        self.adapter_dir = Path(self.settings.adapter_dir or tempfile.mkdtemp(prefix="arc-vllm-adapters-",
                                                                              dir=ram_folder()))
        self._own_adapter_dir = self.settings.adapter_dir is None
        self.life = EngineLife()
        log.info("vllm engine: %s in %.1fs (vllm %s; %s)", self.model_path, time.time() - t0, vllm.__version__,
                 ", ".join(f"{k}={v}" for k, v in self.kwargs.items() if k not in ("model", "tokenizer")))

    @property
    def prefills_per_sample(self) -> bool:
        return self.sampler.prefills_per_sample

    def generate(self, prompts: Sequence[str], sampling: Sampling,
                 adapter: Adapter | None = None) -> list[list[Generation]]:
        self.life.check_open()
        return self.sampler.generate(prompts, sampling, adapter_name(adapter))

    def score(self, pairs: Sequence[TrainingText], adapter: Adapter | None = None) -> list[float]:
        self.life.check_open()
        return self.sampler.score(pairs, adapter_name(adapter))

    def dfs(self, prompts: Sequence[str], search: Search, adapter: Adapter | None = None,
            deadline: Deadline | None = None) -> SearchResult:
        """Depth-first search (llm/dfs.py) on the transformers model training uses: with share_weights, views of
        vLLM's own weights, so no second copy. The task's adapter is loaded there from the folder vLLM serves it
        from, for this search only. Why not vLLM itself: its generate cannot branch, so each branch point would be
        a request of its own (prefix caching saves the prompt, not the per-request scheduling); the transformers
        path is the hf engine's code, tested on CPU. Its KV cache lives outside vLLM's pool, in the room the
        memory plan keeps for training (the search runs between training and scoring, never beside them)."""
        self.life.check_open()
        trainer = self._trainer()
        if adapter is None:
            return trainer.dfs(prompts, search, None, deadline)
        if adapter.name not in self.adapters:
            raise KeyError(f"adapter {adapter.name!r} is not loaded in this engine (deleted, or trained elsewhere)")
        loaded = trainer.load_adapter(adapter)
        try:
            return trainer.dfs(prompts, search, loaded, deadline)
        finally:
            trainer.unload_adapter(adapter.name)

    def _trainer(self):
        if self.trainer is None:
            from .hf_engine import HFEngine

            if self.settings.share_weights:
                from .shared_weights import hf_model_on_vllm_weights

                model = hf_model_on_vllm_weights(self.llm, self.model_path)
                self.trainer = HFEngine(dataclasses.replace(self.model_settings, model=self.model_path, device="cuda"),
                                        HFSettings(), model=model, tokenizer=self.tokenizer)
            else:
                # The sampler's tokenizer for the copy too: its training ids must be the ids vLLM is prompted with.
                train_path = self.settings.train_model or self.model_path
                self.trainer = HFEngine(dataclasses.replace(self.model_settings, model=train_path, device="cuda"),
                                        tokenizer=self.tokenizer)
        return self.trainer

    def train_adapter(self, name: str, examples: Sequence[TrainingText], settings: TrainSettings,
                      deadline: Deadline | None = None) -> Adapter:
        check_adapter_name(name)
        self.life.check_open()
        problem = vllm_lora_problem(settings.target_modules, settings.lora_rank, self.settings.max_lora_rank)
        if problem:
            raise ValueError(f"adapter {name!r}: {problem}")
        self.delete_adapter(name)
        trainer = self._trainer()
        trained = trainer.train_adapter(name, examples, settings, deadline)
        t0 = time.time()
        saved = trainer.save_adapter(trained, self.adapter_dir)
        trainer.unload_adapter(name)  # vLLM serves it from disk; free the training copy's LoRA weights
        adapter = dataclasses.replace(saved, setup_s=saved.setup_s + time.time() - t0)
        self.adapters.put(adapter)
        self.sampler.register(name, adapter.path)
        return adapter

    def delete_adapter(self, adapter: Adapter | str) -> None:
        name = handle_name(adapter)
        self.adapters.forget(name)
        if not self.life.closed:
            self.sampler.forget(name)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def close(self) -> None:
        self.life.close(self._free)

    def _free(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
            self.trainer = None
        self.llm = None
        if self._own_adapter_dir:
            shutil.rmtree(self.adapter_dir, ignore_errors=True)
