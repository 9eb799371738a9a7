"""Sampling and scoring through vLLM, with per-task LoRA adapters served from peft folders: the part both vLLM
engines share (`vllm`, and `unsloth` with fast_inference, whose model carries its own vLLM).

Every adapter registered under a name gets an id used for nothing else, so vLLM's LoRA cache never serves a
previous task's weights for a re-used name.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Callable, Sequence

from .engine import Generation, Sampling
from .engine import TrainingText
from .training import prompt_ids, tokenize_text

log = logging.getLogger(__name__)


def adapter_name(adapter) -> str | None:
    """The name an engine's Adapter handle is served under (None: the base model). Whether it is still served is
    the sampler's to say: `lora_request` raises KeyError, naming it, before anything is sampled."""
    return None if adapter is None else adapter.name


class VLLMSampler:
    """`generate_fn(inputs, params, lora_request)` is vLLM's `LLM.generate` or an equivalent (unsloth's
    fast_generate); `remove_lora(id)` frees a served adapter where the engine can."""

    prefills_per_sample = False  # vLLM processes a prompt once for all its n samples (and caches its prefix)

    def __init__(self, generate_fn: Callable, tokenizer, remove_lora: Callable[[int], object] | None = None):
        import vllm

        self._vllm = vllm
        self._generate = generate_fn
        self.tokenizer = tokenizer
        self._remove_lora = remove_lora
        self._loras: dict[str, tuple[int, str]] = {}
        self._ids = itertools.count(1)

    # --- adapters -------------------------------------------------------------------------------------

    def register(self, name: str, path: str | Path) -> None:
        """Serve the peft folder at `path` as adapter `name` (a new id, replacing any earlier one of that name)."""
        self.forget(name)
        self._loras[name] = (next(self._ids), str(path))

    def forget(self, name: str) -> None:
        known = self._loras.pop(name, None)
        if known is not None and self._remove_lora is not None:
            try:
                self._remove_lora(known[0])
            except Exception as e:  # never sampled with (not loaded), or an older API: nothing to free
                log.debug("vllm remove_lora(%s): %s", known[0], e)

    def lora_request(self, name: str | None):
        if name is None:
            return None
        if name not in self._loras:
            raise KeyError(f"adapter {name!r} is not loaded in this engine (deleted, or trained elsewhere)")
        from vllm.lora.request import LoRARequest

        lora_id, path = self._loras[name]
        return LoRARequest(name, lora_id, path)

    # --- sampling and scoring -------------------------------------------------------------------------

    def sampling_params(self, sampling: Sampling):
        return self._vllm.SamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
            seed=sampling.seed, logprobs=0 if sampling.logprobs else None, stop=list(sampling.stop) or None,
            # With the engine core in this process, vLLM's step-by-step detokenising of every sample is serial
            # with the GPU: n=128 ran at 4.5k tok/s with it, 17k without (H100, 0.5B). Decode once at the end;
            # stop strings need vLLM's detokeniser.
            detokenize=bool(sampling.stop))

    def generate(self, prompts: Sequence[str], sampling: Sampling,
                 adapter: str | None = None) -> list[list[Generation]]:
        params = self.sampling_params(sampling)
        # Token ids, not text: the same tokenisation as training and the hf engine (BOS handling included).
        inputs = [{"prompt_token_ids": prompt_ids(self.tokenizer, p)} for p in prompts]
        outputs = self._generate(inputs, params, self.lora_request(adapter))
        results = []
        for out in outputs:
            texts = ([c.text for c in out.outputs] if params.detokenize else
                     self.tokenizer.batch_decode([c.token_ids for c in out.outputs], skip_special_tokens=True))
            results.append([Generation(text=text, n_tokens=len(c.token_ids), finished=c.finish_reason == "stop",
                                       cumulative_logprob=c.cumulative_logprob if sampling.logprobs else None,
                                       token_ids=tuple(c.token_ids)) for text, c in zip(texts, out.outputs)])
        return results

    def score(self, pairs: Sequence[TrainingText], adapter: str | None = None) -> list[float]:
        """Sum of log p over each text's trained segments, from vLLM's prompt log-probs (one prefill, one token out)."""
        tokenized = [tokenize_text(self.tokenizer, t) for t in pairs]
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0, detokenize=False)
        outputs = self._generate([{"prompt_token_ids": t.input_ids} for t in tokenized], params,
                                 self.lora_request(adapter))
        scores = []
        for t, out in zip(tokenized, outputs):
            scores.append(sum(out.prompt_logprobs[pos][t.input_ids[pos]].logprob
                              for pos, trained in enumerate(t.trained) if trained))
        return scores
