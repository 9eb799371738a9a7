"""unsloth: training and sampling share one resident model per GPU (no second copy of the weights).

The model is loaded once with `FastLanguageModel.from_pretrained` (with `fast_inference=True` when vllm is
importable, so sampling runs through the vLLM engine unsloth starts inside the same process on the same
weights) and wrapped once with `get_peft_model` at the first adapter. unsloth keeps one LoRA per model, so a
new task does not add an adapter: it re-initialises that LoRA in place (A from the task's seed, B = 0, so it
starts as the base model), builds a fresh optimizer, and trains. The model, the peft wrapping and the
tokenizer stay warm between tasks: no per-task model load. Consequences:
- the LoRA rank and target modules are fixed by the first adapter (a different one raises ValueError);
- with fast_inference, each trained adapter is also saved to disk so earlier tasks' adapters stay usable for
  sampling (vLLM LoRARequest); without it, only the latest adapter can be sampled from (an older handle
  raises KeyError naming it).
Parts, no inheritance: training is the shared loop in training.py (completion-only loss, deadline between steps);
sampling is the vLLM sampler both vLLM engines share (vllm_sampler.py) with fast_inference, else the transformers
sampler the hf engine uses (hf_sampler.py) on the resident model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ..budget import Deadline
from .engine import (Adapter, Generation, ModelSettings, Sampling, Search, SearchResult, TrainingText, TrainSettings,
                     UnslothSettings, apply_memory_environment)
from .engine_parts import AdapterHandles, EngineLife, check_adapter_name, handle_name, vllm_lora_problem
from .hf_engine import pick_device_and_dtype
from .hf_sampler import HFSampler, prepare_tokenizer
from .tiny import resolve_model
from .tokenizers import load_tokenizer
from .training import count_tokens, run_training, tokenize_text
from .vllm_sampler import adapter_name

log = logging.getLogger(__name__)

MISSING_UNSLOTH = ("unsloth is not installed, so engine 'unsloth' cannot start: pip install 'arc-submit[gpu]' (or, "
                   "offline, the wheels dataset), or use engine kind 'vllm' or 'hf'")


def import_unsloth():
    try:
        import unsloth  # noqa: F401  (must come before transformers/peft are used: it patches them)
        from unsloth import FastLanguageModel
    except ImportError as e:
        raise ImportError(f"{MISSING_UNSLOTH} ({e})") from e
    except NotImplementedError as e:  # unsloth raises this on a machine without a supported GPU
        raise ImportError(f"unsloth cannot start here: {e}; use engine kind 'hf'") from e
    return FastLanguageModel


class UnslothEngine:
    name = "unsloth"

    def __init__(self, model_settings: ModelSettings | None = None, settings: UnslothSettings | None = None):
        import torch

        self.model_settings = model_settings or ModelSettings()
        self.settings = settings or UnslothSettings()
        apply_memory_environment(self.model_settings)
        FastLanguageModel = import_unsloth()
        self._fast = FastLanguageModel
        t0 = time.time()
        path = resolve_model(self.model_settings.model)
        self.fast_inference = bool(self.settings.fast_inference and importlib.util.find_spec("vllm"))
        self.device, dtype = pick_device_and_dtype(self.model_settings)
        self.model, _ = FastLanguageModel.from_pretrained(
            model_name=path, max_seq_length=self.model_settings.max_model_len, dtype=dtype,
            load_in_4bit=self.model_settings.load_in_4bit, fast_inference=self.fast_inference,
            gpu_memory_utilization=self.settings.gpu_memory_utilization, max_lora_rank=self.settings.max_lora_rank,
            local_files_only=True)
        # Not unsloth's tokenizer: it comes from AutoTokenizer, which rebuilds some reduced vocabularies with other
        # ids (tokenizers.py); training and sampling here both tokenise with this one.
        self.tokenizer = prepare_tokenizer(load_tokenizer(path))
        self.peft_model = None  # unsloth's peft wrapping, made at the first adapter
        self.adapters = AdapterHandles()
        self._lora_shape: tuple | None = None  # (rank, alpha, targets) of the one resident LoRA
        self._live: str | None = None  # the adapter whose weights are in the LoRA now
        self._saved_dir = Path(self.settings.adapter_dir or tempfile.mkdtemp(prefix="arc-unsloth-adapters-"))
        self.life = EngineLife()
        self._searcher: HFSampler | None = None  # dfs on the transformers model (made at the first search)
        if self.fast_inference:  # unsloth's own vLLM, on the same weights, serving saved adapters
            from .vllm_sampler import VLLMSampler

            self.sampler = VLLMSampler(lambda inputs, params, lora: self.model.fast_generate(
                inputs, sampling_params=params, lora_request=lora, use_tqdm=False), self.tokenizer)
        else:
            self.sampler = HFSampler(self.tokenizer, self.device, self.settings.max_batch_sequences)
        torch.manual_seed(self.model_settings.seed)
        log.info("unsloth engine: %s in %.1fs (fast_inference=%s)", path, time.time() - t0, self.fast_inference)

    @property
    def prefills_per_sample(self) -> bool:
        """Without fast_inference, transformers' generate samples: the prompt again for every sample."""
        return self.sampler.prefills_per_sample

    # --- adapters: one resident LoRA, re-initialised per task ------------------------------------------

    def _fresh_lora(self, name: str, settings: TrainSettings):
        import torch

        if settings.base_adapter:
            raise ValueError("the unsloth engine keeps one resident LoRA and cannot start it from base_adapter yet; "
                             "use engine kind 'hf' or 'vllm' for base_adapter")
        problem = self.fast_inference and vllm_lora_problem(settings.target_modules, settings.lora_rank,
                                                             self.settings.max_lora_rank, "unsloth (fast_inference)")
        if problem:
            raise ValueError(f"adapter {name!r}: {problem}")

        shape = (settings.lora_rank, settings.lora_alpha, settings.use_rslora, tuple(settings.target_modules))
        torch.manual_seed(settings.seed)
        if self.peft_model is None:
            self.peft_model = self._fast.get_peft_model(
                self.model, r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                target_modules=list(settings.target_modules), use_rslora=settings.use_rslora, bias="none",
                use_gradient_checkpointing="unsloth" if settings.gradient_checkpointing else False,
                random_state=settings.seed, max_seq_length=self.model_settings.max_model_len)
            self._lora_shape = shape
        elif shape != self._lora_shape:
            raise ValueError(f"adapter {name!r}: unsloth keeps one LoRA per model, created with rank/alpha/rslora/targets "
                             f"{self._lora_shape}; this task asks for {shape}. Use the same LoRA settings for every task")
        else:
            from peft.tuners.lora import LoraLayer

            for module in self.peft_model.modules():
                if isinstance(module, LoraLayer):
                    for lora_name in module.lora_A:
                        module.reset_lora_parameters(lora_name, True)  # A: kaiming from the seed, B: zeros
        self._fast.for_training(self.peft_model)

    def train_adapter(self, name: str, examples: Sequence[TrainingText], settings: TrainSettings,
                      deadline: Deadline | None = None) -> Adapter:
        check_adapter_name(name)
        t0 = time.time()
        self.life.check_open()
        tokenized = [tokenize_text(self.tokenizer, t) for t in examples]
        fitting = [t for t in tokenized if len(t.input_ids) <= settings.max_seq_len]
        if not fitting:
            raise ValueError(f"adapter {name!r}: none of the {len(tokenized)} training examples fits max_seq_len="
                             f"{settings.max_seq_len}; raise max_seq_len or shorten prompts")
        self._forget(name)
        self._fresh_lora(name, settings)  # refuses a different LoRA shape before touching the weights
        if self._live is not None and not self.fast_inference:
            self.adapters.pop(self._live)  # its weights were just overwritten
        self._live = name
        setup_s = time.time() - t0
        result = run_training(self.peft_model, fitting, settings, self.tokenizer.pad_token_id, self.device,
                              deadline, progress_name=name)
        self._fast.for_inference(self.peft_model)
        path = None
        if self.fast_inference:  # earlier tasks' adapters stay servable from disk through vLLM
            path = self._saved_dir / name
            self.peft_model.save_pretrained(str(path))
            self.sampler.register(name, path)
        adapter = Adapter(name=name, path=path, rank=settings.lora_rank, steps=result.steps,
                          examples_seen=result.examples_seen, losses=tuple(result.losses),
                          stopped_by_deadline=result.stopped_by_deadline, setup_s=setup_s, train_s=result.train_s,
                          dropped_examples=len(tokenized) - len(fitting))
        self.adapters.put(adapter)
        return adapter

    def _active(self, adapter: Adapter | None):
        if adapter is None:
            if self.peft_model is None:
                return self.model, contextlib.nullcontext()
            return self.peft_model, self.peft_model.disable_adapter()
        if adapter.name not in self.adapters or (adapter.name != self._live and not self.fast_inference):
            raise KeyError(f"adapter {adapter.name!r} is not loaded: unsloth keeps only the latest task's LoRA "
                           f"(now {self._live!r}) unless fast_inference serves saved ones")
        return self.peft_model, contextlib.nullcontext()

    def generate(self, prompts: Sequence[str], sampling: Sampling,
                 adapter: Adapter | None = None) -> list[list[Generation]]:
        self.life.check_open()
        if self.fast_inference:
            return self.sampler.generate(prompts, sampling, adapter_name(adapter))
        model, ctx = self._active(adapter)
        with ctx:
            return self.sampler.generate(model, prompts, sampling)

    def score(self, pairs: Sequence[TrainingText], adapter: Adapter | None = None) -> list[float]:
        self.life.check_open()
        if self.fast_inference:
            return self.sampler.score(pairs, adapter_name(adapter))
        model, ctx = self._active(adapter)
        with ctx:
            return self.sampler.score(model, pairs)

    def dfs(self, prompts: Sequence[str], search: Search, adapter: Adapter | None = None,
            deadline: Deadline | None = None) -> SearchResult:
        """Depth-first search on the transformers model unsloth trains (one batched forward per step, llm/dfs.py),
        with fast_inference too: vLLM's generate cannot branch. That model holds the latest task's LoRA only."""
        self.life.check_open()
        if adapter is not None and (adapter.name not in self.adapters or adapter.name != self._live):
            raise KeyError(f"adapter {adapter.name!r} is not on the transformers model: unsloth keeps only the latest "
                           f"task's LoRA there (now {self._live!r}), and dfs searches on it")
        if self._searcher is None:
            self._searcher = HFSampler(self.tokenizer, self.device, self.settings.max_batch_sequences)
        model = self.model if self.peft_model is None else self.peft_model
        ctx = self.peft_model.disable_adapter() if adapter is None and self.peft_model is not None \
            else contextlib.nullcontext()
        with ctx:
            return self._searcher.dfs(model, prompts, search, deadline)

    def delete_adapter(self, adapter: Adapter | str) -> None:
        # The resident LoRA is not removed (the next task re-initialises it); its handle and files go.
        self._forget(handle_name(adapter))

    def _forget(self, name: str) -> None:
        self.adapters.forget(name)
        if self.fast_inference:  # the vLLM sampler serves saved adapters by name
            self.sampler.forget(name)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def close(self) -> None:
        self.life.close(self._free)

    def _free(self) -> None:
        shutil.rmtree(self._saved_dir, ignore_errors=True)
        self.model = self.peft_model = self.sampler = None
        self.adapters.clear()
