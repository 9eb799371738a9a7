"""What the LLM solvers share: the option groups both take (prompt layout, augmentations, LoRA training), per-phase
timing with a log line each, seeds, fitting prompts into the model's context by dropping examples, and training
that survives running out of memory.
"""

from __future__ import annotations

import logging
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Literal, Sequence, TypeVar

import numpy as np

from ..budget import Deadline
from ..llm.engine import Adapter, TrainingText, TrainSettings
from ..llm.recipes import Recipe, recipe
from ..tasks import Example
from . import TrainingNeeds
from .context import SolverContext

log = logging.getLogger(__name__)
T = TypeVar("T")


# --- option groups: their fields are written at the top level of solver.options (solvers/options.py) ---------

@dataclass(frozen=True)
class PromptOptions:
    recipe: str | dict = "arc-submit"  # a preset of llm/recipes.py (nvarc, architects-2024, ...), a dict of fields, or module:attribute
    grid_format: str | dict | None = None  # replaces the recipe's grid encoding (plain, row_numbers, shape_header, ...)

    def __post_init__(self):
        self.resolved()  # a bad recipe fails here, before any model work, naming the field

    def resolved(self) -> Recipe:
        return recipe(self.recipe, self.grid_format)


@dataclass(frozen=True)
class AugmentationOptions:
    """Which transforms the views and training copies draw from (augment.random_augmentation)."""
    use_dihedral: bool = True
    permute_colours: bool = True
    keep_background: bool = True
    permute_order: bool = True

    def kwargs(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LoraOptions:
    """The per-task LoRA training both LLM solvers take: TrainSettings' fields. Those left null take the recipe's
    value (the LoRA its authors trained: NVARC's rank 256, ...), else TrainSettings' default. Epochs, steps and the
    seed are each solver's own options (ttt_epochs / train_epochs, ...), given to `settings`."""
    learning_rate: float | None = None
    lr_schedule: Literal["linear", "constant"] = TrainSettings.lr_schedule
    warmup_steps: int = TrainSettings.warmup_steps
    weight_decay: float = TrainSettings.weight_decay
    max_grad_norm: float = TrainSettings.max_grad_norm
    lora_rank: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float = TrainSettings.lora_dropout
    use_rslora: bool | None = None
    target_modules: tuple[str, ...] | None = None
    batch_size: int = TrainSettings.batch_size
    grad_accumulation: int = TrainSettings.grad_accumulation
    max_seq_len: int = TrainSettings.max_seq_len
    gradient_checkpointing: bool = TrainSettings.gradient_checkpointing
    base_adapter: str | None = TrainSettings.base_adapter

    def __post_init__(self):
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ValueError(f"options batch_size={self.batch_size} and grad_accumulation={self.grad_accumulation} "
                             f"must be at least 1")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"option lora_rank={self.lora_rank} must be at least 1 (or null: the recipe's)")

    def settings(self, epochs: int, max_steps: int | None, seed: int, r: Recipe) -> TrainSettings:
        own = asdict(self)
        from_recipe = {"learning_rate": r.lora.learning_rate, "lora_rank": r.lora.rank, "lora_alpha": r.lora.alpha,
                       "use_rslora": r.lora.use_rslora, "target_modules": r.lora.target_modules}
        for name, value in from_recipe.items():
            if own[name] is None:
                own[name] = value
        return TrainSettings(epochs=epochs, max_steps=max_steps, seed=seed,
                             **{k: v for k, v in own.items() if v is not None})

    def needs(self, r: Recipe) -> TrainingNeeds:
        settings = self.settings(1, None, 0, r)
        return TrainingNeeds(max_seq_len=settings.max_seq_len, lora_rank=settings.lora_rank)


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


def fit_examples(examples: Sequence[Example], render: Callable[[Sequence[Example]], T],
                 count_tokens: Callable[[T], int], limit: int | None,
                 min_examples: int = 1) -> tuple[tuple[Example, ...] | None, int]:
    """The examples to put in a prompt (or a training text) so count_tokens(render(examples)) fits `limit` tokens:
    drop the largest first.

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


def train_adapter_logged(context: SolverContext, name: str, pairs: Sequence[TrainingText],
                         settings: TrainSettings, deadline: Deadline, clock: PhaseClock) -> Adapter | None:
    """engine.train_adapter with its two phases logged: adapter reset (fresh LoRA, optimizer, tokenising;
    for vLLM also saving it) and training. None means: sample the base model. That happens when no pair fits
    max_seq_len, and when training runs out of memory (noted for the journal); after the worker's training record
    (context.training) says it failed too often in a row, this worker does not try to train again."""
    health = context.training
    if health.off_reason is not None:
        clock.add("training", 0.0, f"skipped: {health.off_reason}")
        return None
    t0 = time.time()
    try:
        adapter = context.engine.train_adapter(name, list(pairs), settings, deadline)
    except ValueError as e:
        log.warning("task %s %s: no training: %s", clock.task_id, clock.solver, e)
        return None
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        _release_gpu_cache()
        streak = health.ran_out_of_memory()
        text = f"training ran out of memory ({type(e).__name__}: {str(e)[:200]}); sampling the base model"
        if health.off_reason is not None:
            text += f"; training is off for the rest of this worker's tasks ({streak} failures in a row)"
        log.warning("task %s %s: %s", clock.task_id, clock.solver, text)
        clock.add("training", time.time() - t0, "out of memory")
        context.note(clock.task_id, "training-oom", text)
        return None
    health.succeeded()
    clock.add("adapter reset", time.time() - t0 - adapter.train_s, f"rank {adapter.rank}")
    loss = (f", loss {adapter.first_loss:.3f} -> {adapter.last_loss:.3f}" if adapter.losses else "")
    clock.add("training", adapter.train_s, f"{adapter.steps} steps on {adapter.examples_seen} sequences{loss}"
              + (", stopped by the deadline" if adapter.stopped_by_deadline else ""))
    return adapter
