"""transformers + peft: the engine for CPU tests, CPU dry runs, and a GPU fallback when vLLM is missing.

One model stays resident. The first adapter wraps it in a peft model once; every later task adds a new,
freshly initialised LoRA (`add_adapter`: A random from the task's seed, B = 0, so it starts as the base
model) and gets a new optimizer. Sampling without an adapter runs with all adapters disabled.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ..budget import Deadline
from .engine import (Adapter, Generation, HFSettings, ModelSettings, Sampling, Search, SearchResult, TrainingText,
                     TrainSettings, apply_memory_environment)
from .engine_parts import AdapterHandles, EngineLife, check_adapter_name, handle_name
from .hf_sampler import HFSampler
from .tiny import resolve_model
from .tokenizers import load_tokenizer
from .training import count_tokens, run_training, tokenize_text

log = logging.getLogger(__name__)


def pick_device_and_dtype(settings: ModelSettings):
    import torch

    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if settings.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = getattr(torch, settings.dtype)
    return torch.device(device), dtype


def set_checkpointing(model, on: bool) -> None:
    """Gradient (activation) checkpointing on or off; transformers 5.2x renamed the methods, 5.17 has the old ones."""
    if on:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def load_model(path: str, dtype, device, four_bit: bool):
    """The model on `device`; with `four_bit`, its linear layers in nf4 through transformers' BitsAndBytesConfig,
    quantized as each tensor reaches the device (QLoRA)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if not four_bit:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                                      bnb_4bit_use_double_quant=True)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quantization,
                                                device_map={"": device})


class HFEngine:
    name = "hf"

    def __init__(self, model_settings: ModelSettings | None = None, settings: HFSettings | None = None, model=None,
                 tokenizer=None):
        """Load `model_settings.model`, or wrap an already loaded (model, tokenizer), as the vLLM engine's trainer
        does."""
        import torch

        self.model_settings = model_settings or ModelSettings()
        self.settings = settings or HFSettings()
        apply_memory_environment(self.model_settings)
        self.device, self.dtype = pick_device_and_dtype(self.model_settings)
        t0 = time.time()
        path = resolve_model(self.model_settings.model)
        self.tokenizer = tokenizer or load_tokenizer(path)  # the file's ids, even where AutoTokenizer's differ
        self.sampler = HFSampler(self.tokenizer, self.device, self.settings.max_batch_sequences)
        self.model = model or load_model(path, self.dtype, self.device, self.model_settings.load_in_4bit)
        self.model.eval()
        self.model.requires_grad_(False)
        self.peft_model = None  # created with the first adapter; wraps self.model in place
        self.adapters = AdapterHandles()
        self._tmp_adapter_dir: str | None = None
        self.life = EngineLife()
        torch.manual_seed(self.model_settings.seed)
        log.info("hf engine: %s on %s (%s) in %.1fs", path, self.device, self.dtype, time.time() - t0)

    @property
    def prefills_per_sample(self) -> bool:
        return self.sampler.prefills_per_sample

    # --- sampling -------------------------------------------------------------------------------------

    def _active(self, adapter: Adapter | None):
        """The module to run and a context manager choosing the adapter (or none)."""
        import contextlib

        if adapter is None:
            if self.peft_model is None or not self.peft_model.peft_config:
                # No adapter left: the LoRA layers peft injected hold no weights and compute nothing.
                return self.model, contextlib.nullcontext()
            if self.peft_model.active_adapter not in self.peft_model.peft_config:  # the active one was deleted
                self.peft_model.set_adapter(next(iter(self.peft_model.peft_config)))
            return self.peft_model, self.peft_model.disable_adapter()
        if adapter.name not in self.adapters:
            raise KeyError(f"adapter {adapter.name!r} is not loaded in this engine (deleted, or trained elsewhere)")
        self.peft_model.set_adapter(adapter.name)
        return self.peft_model, contextlib.nullcontext()

    def generate(self, prompts: Sequence[str], sampling: Sampling,
                 adapter: Adapter | None = None) -> list[list[Generation]]:
        self.life.check_open()
        model, ctx = self._active(adapter)
        with ctx:
            return self.sampler.generate(model, prompts, sampling)

    def dfs(self, prompts: Sequence[str], search: Search, adapter: Adapter | None = None,
            deadline: Deadline | None = None) -> SearchResult:
        self.life.check_open()
        model, ctx = self._active(adapter)
        with ctx:
            return self.sampler.dfs(model, prompts, search, deadline)

    def score(self, pairs: Sequence[TrainingText], adapter: Adapter | None = None) -> list[float]:
        """Sum of log p over each text's trained segments (an answer's end token, in its text, penalises an answer
        that should go on)."""
        self.life.check_open()
        model, ctx = self._active(adapter)
        with ctx:
            return self.sampler.score(model, pairs)

    # --- adapters -------------------------------------------------------------------------------------

    def _fresh_lora(self, name: str, settings: TrainSettings):
        import torch
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                            target_modules=list(settings.target_modules), use_rslora=settings.use_rslora, bias="none",
                            task_type="CAUSAL_LM")
        torch.manual_seed(settings.seed)  # LoRA A's init, and dropout, repeat for the same seed
        if settings.base_adapter:
            self._load_base_adapter(name, settings.base_adapter)
        elif self.peft_model is None:
            self.peft_model = get_peft_model(self.model, config, adapter_name=name)
        else:
            self.peft_model.add_adapter(name, config)
            self.peft_model.set_adapter(name)  # makes only this adapter's weights trainable
        set_checkpointing(self.peft_model.base_model.model, settings.gradient_checkpointing)

    def _load_base_adapter(self, name: str, path: str) -> None:
        """The task's adapter starts as a copy of a saved LoRA (trainable), not from a fresh initialisation."""
        from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
        from peft.utils import load_peft_weights

        if not (Path(path) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"base_adapter {path}: no adapter_config.json; give a folder written by peft's "
                                    f"save_pretrained (attach it as a Kaggle input)")
        config = PeftConfig.from_pretrained(path)
        config.inference_mode = False
        # Made like a fresh adapter (works whatever adapters came and went before), then its weights loaded.
        if self.peft_model is None:
            self.peft_model = get_peft_model(self.model, config, adapter_name=name)
        else:
            self.peft_model.add_adapter(name, config)
            self.peft_model.set_adapter(name)
        set_peft_model_state_dict(self.peft_model, load_peft_weights(path, device=str(self.device)), adapter_name=name)

    def train_adapter(self, name: str, examples: Sequence[TrainingText], settings: TrainSettings,
                      deadline: Deadline | None = None) -> Adapter:
        check_adapter_name(name)
        t0 = time.time()
        self.life.check_open()
        self.delete_adapter(name)
        tokenized = [tokenize_text(self.tokenizer, t) for t in examples]
        fitting = [t for t in tokenized if len(t.input_ids) <= settings.max_seq_len]
        dropped = len(tokenized) - len(fitting)
        if not fitting:
            longest = max((len(t.input_ids) for t in tokenized), default=0)
            raise ValueError(f"adapter {name!r}: none of the {len(tokenized)} training examples fits max_seq_len="
                             f"{settings.max_seq_len} (longest: {longest} tokens); raise max_seq_len or shorten prompts")
        if dropped:
            log.warning("adapter %s: dropped %d of %d examples longer than max_seq_len=%d", name, dropped,
                        len(tokenized), settings.max_seq_len)
        self._fresh_lora(name, settings)
        setup_s = time.time() - t0
        result = run_training(self.peft_model, fitting, settings, self.tokenizer.pad_token_id, self.device,
                              deadline, progress_name=name)
        adapter = Adapter(name=name, path=None, rank=self.peft_model.peft_config[name].r, steps=result.steps,
                          examples_seen=result.examples_seen, losses=tuple(result.losses),
                          stopped_by_deadline=result.stopped_by_deadline, setup_s=setup_s, train_s=result.train_s,
                          dropped_examples=dropped)
        self.adapters.put(adapter)
        return adapter

    def save_adapter(self, adapter: Adapter, directory: str | Path | None = None) -> Adapter:
        """Write the adapter in peft format (what vLLM's LoRARequest loads); returns it with `path` set."""
        from dataclasses import replace

        if directory is None:
            if self._tmp_adapter_dir is None:
                self._tmp_adapter_dir = tempfile.mkdtemp(prefix="arc-adapters-")
            directory = self._tmp_adapter_dir
        path = Path(directory) / adapter.name
        # peft writes a non-default adapter into a sub-folder named after it: save to the parent.
        self.peft_model.save_pretrained(str(path.parent), selected_adapters=[adapter.name])
        if not (path / "adapter_config.json").exists():
            raise RuntimeError(f"adapter {adapter.name!r}: peft did not write {path}/adapter_config.json")
        saved = replace(adapter, path=path)
        self.adapters.put(saved)
        return saved

    def load_adapter(self, adapter: Adapter) -> Adapter:
        """Load a saved adapter (`adapter.path`, peft format) under its name, as `train_adapter` would have left it:
        the vLLM engine's trainer searches (dfs) with an adapter it trained and unloaded to vLLM."""
        if adapter.path is None:
            raise ValueError(f"adapter {adapter.name!r} was never saved; nothing to load")
        self.life.check_open()
        self.delete_adapter(adapter.name)
        self._load_base_adapter(check_adapter_name(adapter.name), str(adapter.path))
        self.adapters.put(adapter)
        return adapter

    def unload_adapter(self, name: str) -> None:
        """Free the adapter's weights here but keep its saved folder (another engine serves it from disk)."""
        self.adapters.pop(name)
        self._drop_lora(name)

    def delete_adapter(self, adapter: Adapter | str) -> None:
        name = handle_name(adapter)
        self.adapters.forget(name)
        self._drop_lora(name)

    def _drop_lora(self, name: str) -> None:
        if self.peft_model is not None and name in self.peft_model.peft_config:
            self.peft_model.delete_adapter(name)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def close(self) -> None:
        self.life.close(self._free)

    def _free(self) -> None:
        self.model = self.peft_model = None
        self.adapters.clear()
        if self._tmp_adapter_dir:
            shutil.rmtree(self._tmp_adapter_dir, ignore_errors=True)
