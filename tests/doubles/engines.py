"""TEST DOUBLES of LLM engines: one for the induction solver that "writes" fixed program texts, and a wrapper
that changes how a real engine scores (for the transduction solver's re-ranking).

A random-weight tiny model cannot write Python, so the induction tests that need programs (early stop,
hindsight relabelling inside the search-and-learn loop) take their samples from this double instead. Everything
else they touch is real: the tiny model's tokenizer and chat template, the prompts, sandboxed execution of the
programs on real ARC tasks, scoring, relabelling.

The double's writing improves only by "learning": it answers with `rounds[0]` until its first train_adapter
call, then with `rounds[1]`, and so on (the last round repeats). It records what it was asked and taught.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from typing import Callable

from arc_submit.llm.engine import Adapter, Generation, ModelSettings, Sampling, TrainSettings


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from arc_submit.llm.tiny import tiny_model_path

    return AutoTokenizer.from_pretrained(tiny_model_path())


@dataclass
class ScriptedProgramEngine:
    """Engine double: samples are program texts from a script (see the module docstring)."""
    rounds: list[list[str]]
    name: str = "scripted-double"
    model_settings: ModelSettings = field(default_factory=ModelSettings)
    prefills_per_sample: bool = False
    round: int = 0
    rounds_sampled: set = field(default_factory=set)
    trained: list = field(default_factory=list)  # (adapter name, [(prompt, completion)], TrainSettings)
    deleted: list = field(default_factory=list)
    prompts_seen: list = field(default_factory=list)
    written: int = 0  # samples written so far: the script cycles across calls, however they are batched

    @property
    def tokenizer(self):
        return tiny_tokenizer()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def generate(self, prompts, sampling: Sampling, adapter: Adapter | None = None) -> list[list[Generation]]:
        script = self.rounds[min(self.round, len(self.rounds) - 1)]
        out = []
        for prompt in prompts:
            if sampling.max_tokens < 64:  # the sampler's speed probes ask for a few tokens: not part of the script
                out.append([Generation("", 1, True)] * sampling.n)
                continue
            self.rounds_sampled.add(self.round)
            self.prompts_seen.append(prompt)
            texts = [script[(self.written + k) % len(script)] for k in range(sampling.n)]
            self.written += sampling.n
            out.append([Generation(f"```python\n{text.strip()}\n```\n", 50, True) for text in texts])
        return out

    def train_adapter(self, name: str, examples, settings: TrainSettings, deadline=None) -> Adapter:
        self.trained.append((name, list(examples), settings))
        self.round += 1
        self.written = 0
        return Adapter(name=name, path=None, rank=settings.lora_rank, steps=len(examples),
                       examples_seen=len(examples), losses=(1.0,), stopped_by_deadline=False, setup_s=0.0,
                       train_s=0.0)

    def delete_adapter(self, adapter) -> None:
        self.deleted.append(adapter if isinstance(adapter, str) else adapter.name)

    def score(self, pairs, adapter=None):
        raise NotImplementedError("the induction solver does not score")

    def dfs(self, prompts, search, adapter=None, deadline=None):
        raise NotImplementedError("the induction solver does not search answers (decoding: dfs is transduction's)")

    def close(self) -> None:
        pass


class ScoreReplaced:
    """TEST DOUBLE: the engine `inner` in every way but `score`, which is `score(pairs, adapter)` instead."""

    def __init__(self, inner, score: Callable):
        self.inner, self._score = inner, score

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    @property
    def model_settings(self) -> ModelSettings:
        return self.inner.model_settings

    @property
    def prefills_per_sample(self) -> bool:
        return self.inner.prefills_per_sample

    def generate(self, prompts, sampling: Sampling, adapter: Adapter | None = None):
        return self.inner.generate(prompts, sampling, adapter)

    def score(self, pairs, adapter: Adapter | None = None):
        return self._score(pairs, adapter)

    def dfs(self, prompts, search, adapter: Adapter | None = None, deadline=None):
        return self.inner.dfs(prompts, search, adapter, deadline)

    def train_adapter(self, name: str, examples, settings: TrainSettings, deadline=None) -> Adapter:
        return self.inner.train_adapter(name, examples, settings, deadline)

    def delete_adapter(self, adapter) -> None:
        self.inner.delete_adapter(adapter)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        self.inner.close()


def scoring_fails(inner) -> ScoreReplaced:
    """`inner`, except that scoring raises as a GPU out of memory would."""
    def score(pairs, adapter=None):
        raise MemoryError("planted: scoring ran out of memory")

    return ScoreReplaced(inner, score)
