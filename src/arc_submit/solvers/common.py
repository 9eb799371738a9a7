"""What the LLM solvers share: option checking, per-phase timing with a log line each, seeds, and fitting prompts
into the model's context by dropping examples.

Options arrive as plain keyword arguments from a YAML file or a notebook dict, so they are checked here by name
(a typo fails before the model does any work) and turned into the engine's value objects.
"""

from __future__ import annotations

import logging
import time
import zlib
from contextlib import contextmanager
from dataclasses import fields
from typing import Callable, Sequence

import numpy as np

from ..llm.engine import Adapter, TrainSettings
from ..tasks import Example

log = logging.getLogger(__name__)

# TrainSettings fields a solver forwards as they are (epochs and max_steps get solver-specific names).
TRAIN_FIELDS = ("learning_rate", "lr_schedule", "warmup_steps", "weight_decay", "max_grad_norm", "lora_rank",
                "lora_alpha", "lora_dropout", "target_modules", "batch_size", "grad_accumulation", "max_seq_len",
                "gradient_checkpointing", "base_adapter")
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainSettings) if f.name in TRAIN_FIELDS}
OPTION_CHOICES = {"scorer": ("votes", "augmented", "product")}
AUGMENTATION_DEFAULTS = dict(use_dihedral=True, permute_colours=True, keep_background=True, permute_order=True)


def resolve_options(solver: str, defaults: dict, options: dict) -> dict:
    """defaults updated by options; an unknown name raises ValueError listing the known ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{solver} solver: unknown option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(defaults))} (set them under solver.options)")
    merged = {**defaults, **options}
    for name, allowed in OPTION_CHOICES.items():
        if name in merged and merged[name] not in allowed:
            raise ValueError(f"{solver} solver: option {name}={merged[name]!r}; use one of {', '.join(allowed)}")
    if "prompt_format" in merged:  # a bad template fails here, before any model work, naming the field
        from ..llm.prompts import prompt_format

        try:
            prompt_format(merged["prompt_format"], merged.get("grid_format"))
        except (ValueError, ImportError, AttributeError) as e:
            raise ValueError(f"{solver} solver: {e}") from None
    for name in ("temperature", "train_fraction"):
        if name in merged and not 0 <= float(merged[name]) <= (1 if name == "train_fraction" else 10):
            raise ValueError(f"{solver} solver: option {name}={merged[name]!r} is out of range")
    return merged


def train_settings(opts: dict, epochs: int, max_steps: int | None) -> TrainSettings:
    values = {name: opts[name] for name in TRAIN_FIELDS}
    values["target_modules"] = tuple(values["target_modules"])
    return TrainSettings(epochs=int(epochs), max_steps=None if max_steps is None else int(max_steps),
                         seed=int(opts["seed"]), **values)


def task_rng(seed: int, task_id: str, salt: int = 0) -> np.random.Generator:
    """Different for every task, the same on every run (Python's hash() of a str is salted per process)."""
    return np.random.default_rng([int(seed), zlib.crc32(task_id.encode()), int(salt)])


class PhaseClock:
    """Wall time per phase of one task, a log line per phase, totals for the summary and the benchmark."""

    def __init__(self, solver: str, task_id: str):
        self.solver, self.task_id = solver, task_id
        self.seconds: dict[str, float] = {}
        self.started = time.time()

    @contextmanager
    def phase(self, name: str, what: Callable[[], str] | str = ""):
        t0 = time.time()
        ok = False
        try:
            yield
            ok = True
        finally:
            # `what` may read results of the phase: only ask for it when the phase finished.
            self.add(name, time.time() - t0, (what() if callable(what) else what) if ok else "failed")

    def add(self, name: str, seconds: float, what: str = "") -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        log.info("task %s %s: %s %.2fs%s", self.task_id, self.solver, name, seconds, f" ({what})" if what else "")

    def summary(self) -> str:
        parts = ", ".join(f"{name} {s:.2f}s" for name, s in self.seconds.items())
        return f"{parts}; total {time.time() - self.started:.2f}s"


def fit_examples(examples: Sequence[Example], render: Callable[[Sequence[Example]], str],
                 count_tokens: Callable[[str], int], limit: int | None,
                 min_examples: int = 1) -> tuple[tuple[Example, ...] | None, int]:
    """The examples to put in a prompt so render(examples) fits `limit` tokens: drop the largest first.

    Returns (examples kept in their order, number dropped), or (None, n) when even `min_examples` do not fit.
    Dropping the largest example frees the most tokens per example lost.
    """
    kept = list(examples)
    if limit is None:
        return tuple(kept), 0
    while True:
        if count_tokens(render(kept)) <= limit:
            return tuple(kept), len(examples) - len(kept)
        if len(kept) <= min_examples:
            return None, len(examples) - len(kept)
        largest = max(range(len(kept)), key=lambda i: (kept[i].input.size + (kept[i].output.size
                                                                                if kept[i].output is not None else 0), i))
        kept.pop(largest)


def engine_context_tokens(engine) -> int | None:
    """The model's context length when the engine says (ModelSettings.max_model_len), else None."""
    settings = getattr(engine, "model_settings", None)
    value = getattr(settings, "max_model_len", None)
    return int(value) if value else None


# Things a task's journal should say that are not candidates (training fell back to the base model, ...). The
# worker drains them after each task and journals them as `note` events, which the report shows.
_NOTES: list[dict] = []
# Per engine: out-of-memory failures in a row, and why training is off for good once they repeat.
_OOM_STREAK: dict[int, int] = {}
_TRAINING_OFF: dict[int, str] = {}
OOM_STREAK_LIMIT = 2  # training that ran out of memory this many times in a row is not tried again


def note(task_id: str, kind: str, text: str) -> None:
    _NOTES.append({"task_id": task_id, "kind": kind, "text": text})


def drain_notes() -> list[dict]:
    out = list(_NOTES)
    _NOTES.clear()
    return out


def is_out_of_memory(error: BaseException) -> bool:
    """torch.OutOfMemoryError (a RuntimeError), CUDA's 'out of memory' RuntimeErrors, and host MemoryError."""
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or "out of memory" in str(error).lower())


def _release_gpu_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort: never turn a recovered failure into a new one
        pass


def train_adapter_logged(engine, name: str, pairs: Sequence[tuple[str, str]], settings: TrainSettings,
                         train_deadline: float, clock: PhaseClock) -> Adapter | None:
    """engine.train_adapter with its two phases logged: adapter reset (fresh LoRA, optimizer, tokenising;
    for vLLM also saving it) and training. None means: sample the base model. That happens when no pair fits
    max_seq_len, and when training runs out of memory (noted for the journal); after OOM_STREAK_LIMIT failures
    in a row (a training copy that cannot load) this engine does not try to train again."""
    if id(engine) in _TRAINING_OFF:
        clock.add("training", 0.0, f"skipped: {_TRAINING_OFF[id(engine)]}")
        return None
    t0 = time.time()
    try:
        adapter = engine.train_adapter(name, list(pairs), settings, train_deadline)
    except ValueError as e:
        log.warning("task %s %s: no training: %s", clock.task_id, clock.solver, e)
        return None
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        _release_gpu_cache()
        streak = _OOM_STREAK[id(engine)] = _OOM_STREAK.get(id(engine), 0) + 1
        text = f"training ran out of memory ({type(e).__name__}: {str(e)[:200]}); sampling the base model"
        if streak >= OOM_STREAK_LIMIT:
            _TRAINING_OFF[id(engine)] = f"training ran out of memory {streak} times in a row on this worker"
            text += f"; training is off for the rest of this worker's tasks ({streak} failures in a row)"
        log.warning("task %s %s: %s", clock.task_id, clock.solver, text)
        clock.add("training", time.time() - t0, "out of memory")
        note(clock.task_id, "training-oom", text)
        return None
    _OOM_STREAK[id(engine)] = 0
    clock.add("adapter reset", time.time() - t0 - adapter.train_s, f"rank {adapter.rank}")
    loss = (f", loss {adapter.first_loss:.3f} -> {adapter.last_loss:.3f}" if adapter.losses else "")
    clock.add("training", adapter.train_s, f"{adapter.steps} steps on {adapter.examples_seen} sequences{loss}"
              + (", stopped by the deadline" if adapter.stopped_by_deadline else ""))
    return adapter
