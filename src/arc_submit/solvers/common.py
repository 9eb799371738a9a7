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
from typing import Callable, Literal, Sequence

import numpy as np

from ..budget import Deadline
from ..llm import prompts
from ..llm.engine import LLAMA_LINEAR_MODULES, Adapter, TrainSettings
from ..tasks import Example
from . import TrainingNeeds
from .context import SolverContext

log = logging.getLogger(__name__)


# --- option groups: their fields are written at the top level of solver.options (solvers/options.py) ---------

@dataclass(frozen=True)
class PromptOptions:
    prompt_format: str | dict = "arc-submit"  # a preset of llm/prompts.py, a dict of PromptFormat fields, or module:attribute
    grid_format: str | None = None  # overrides the prompt format's grid encoding (plain, row_numbers, shape_header)

    def __post_init__(self):
        self.format()  # a bad template fails here, before any model work, naming the field

    def format(self) -> prompts.PromptFormat:
        try:
            return prompts.prompt_format(self.prompt_format, self.grid_format)
        except (ImportError, AttributeError) as e:  # module:attribute that does not resolve
            raise ValueError(f"prompt_format {self.prompt_format!r}: {type(e).__name__}: {e}") from None


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
    """The per-task LoRA training both LLM solvers take: TrainSettings' fields with its defaults. Epochs, steps and
    the seed are each solver's own options (ttt_epochs / train_epochs, ...), given to `settings`."""
    learning_rate: float = TrainSettings.learning_rate
    lr_schedule: Literal["linear", "constant"] = TrainSettings.lr_schedule
    warmup_steps: int = TrainSettings.warmup_steps
    weight_decay: float = TrainSettings.weight_decay
    max_grad_norm: float = TrainSettings.max_grad_norm
    lora_rank: int = TrainSettings.lora_rank
    lora_alpha: int = TrainSettings.lora_alpha
    lora_dropout: float = TrainSettings.lora_dropout
    target_modules: tuple[str, ...] = LLAMA_LINEAR_MODULES
    batch_size: int = TrainSettings.batch_size
    grad_accumulation: int = TrainSettings.grad_accumulation
    max_seq_len: int = TrainSettings.max_seq_len
    gradient_checkpointing: bool = TrainSettings.gradient_checkpointing
    base_adapter: str | None = TrainSettings.base_adapter

    def __post_init__(self):
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ValueError(f"options batch_size={self.batch_size} and grad_accumulation={self.grad_accumulation} "
                             f"must be at least 1")

    def settings(self, epochs: int, max_steps: int | None, seed: int) -> TrainSettings:
        return TrainSettings(epochs=epochs, max_steps=max_steps, seed=seed, **asdict(self))

    def needs(self) -> TrainingNeeds:
        return TrainingNeeds(max_seq_len=self.max_seq_len, lora_rank=self.lora_rank)


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


def train_adapter_logged(context: SolverContext, name: str, pairs: Sequence[tuple[str, str]],
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
