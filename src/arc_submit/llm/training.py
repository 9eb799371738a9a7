"""Per-task LoRA training shared by the engines: tokenise training texts (`engine.TrainingText`) with the loss on
their trained segments only, then a plain AdamW loop that stops cleanly at a deadline.

A plain loop rather than a Trainer: per-task start-up has to stay well under a second, and the loop must be
able to stop between any two optimizer steps when the task's time is up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..budget import Deadline
from .engine import TrainingText, TrainSettings

log = logging.getLogger(__name__)
IGNORE = -100  # label of tokens that carry no loss (the prompt, padding)


@dataclass(frozen=True)
class TokenizedText:
    input_ids: list[int]
    trained: list[bool]  # per token: does it carry the loss

    @property
    def first_trained(self) -> int:
        return self.trained.index(True)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)


def count_tokens(tokenizer, text: str) -> int:
    """What every engine's count_tokens answers: the prompt's length as generate() will feed it."""
    return len(prompt_ids(tokenizer, text))


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt exactly as generate() feeds it (BOS added once when the tokenizer uses one)."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))  # a chat template may already have written the BOS
    return tokenizer(prompt, add_special_tokens=add_special)["input_ids"]


def tokenize_text(tokenizer, text: TrainingText) -> TokenizedText:
    """Each segment tokenised on its own (the first as a prompt, with its BOS), as generation sees a prompt and then
    the tokens the model writes; a completion's end-of-sequence token is in its text."""
    ids: list[int] = []
    trained: list[bool] = []
    for i, (segment, carries_loss) in enumerate(text.segments):
        piece = prompt_ids(tokenizer, segment) if i == 0 else tokenizer(segment, add_special_tokens=False)["input_ids"]
        ids += piece
        trained += [carries_loss] * len(piece)
    if not any(trained):
        raise ValueError(f"a training text's trained segments tokenise to nothing: {text.segments!r:.200}")
    return TokenizedText(ids, trained)


def collate(batch: Sequence[TokenizedText], pad_id: int):
    """Right-padded input_ids, attention_mask, labels (IGNORE where no loss, and on padding) as torch tensors."""
    import torch

    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, t in enumerate(batch):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        mask[i, :n] = 1
        trained = torch.tensor(t.trained)
        labels[i, :n] = torch.where(trained, ids[i, :n], torch.full_like(ids[i, :n], IGNORE))
    return ids, mask, labels


def completion_logprobs(model, batch: Sequence[TokenizedText], pad_id: int, device):
    """Per sequence: (sum of log p over trained tokens, number of tokens), one forward pass.

    Only the positions that predict completion tokens go through the LM head (`logits_to_keep`), so an 8k-token
    prompt does not materialise 8k × vocab logits.
    """
    import torch

    ids, mask, labels = collate(batch, pad_id)
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    first = min(t.first_trained for t in batch) - 1  # logits at position p predict token p + 1
    keep = torch.arange(max(first, 0), ids.shape[1] - 1, device=device)
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
    targets = labels[:, keep + 1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    valid = targets != IGNORE
    return (picked * valid).sum(dim=1), valid.sum(dim=1)


@dataclass
class TrainResult:
    steps: int
    examples_seen: int
    losses: list[float]
    stopped_by_deadline: bool
    train_s: float


def _schedule(settings: TrainSettings, total_steps: int):
    def factor(step: int) -> float:
        if settings.warmup_steps and step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        if settings.lr_schedule == "constant" or total_steps <= 0:
            return 1.0
        return max(0.0, 1.0 - step / total_steps)
    return factor


def run_training(model, pairs: Sequence[TokenizedText], settings: TrainSettings, pad_id: int, device,
                 deadline: Deadline | None = None, progress_name: str = "") -> TrainResult:
    """Train the trainable parameters of `model` (the active LoRA) on `pairs`; stop early at `deadline`.

    The loss of a step is the mean over all trained tokens of its micro-batches (token-weighted, so
    accumulation gives the same gradient as one big batch). Before each step the loop checks that the
    longest step so far still fits before the deadline: it stops between steps, never in the middle of one.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    total_steps = settings.planned_steps(len(pairs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings, total_steps))
    rng = np.random.default_rng(settings.seed)
    order = [int(i) for _ in range(settings.epochs) for i in rng.permutation(len(pairs))]
    per_step = settings.batch_size * settings.grad_accumulation

    model.train()
    losses: list[float] = []
    seen = 0
    stopped = False
    longest_step = 0.0
    start = time.time()
    try:
        for step in range(total_steps):
            if deadline is not None and time.time() + longest_step > deadline.at:
                stopped = True
                break
            t0 = time.time()
            chosen = [pairs[i] for i in order[step * per_step:(step + 1) * per_step]]
            if not chosen:
                break
            n_tokens = sum(t.n_trained for t in chosen)
            step_loss = 0.0
            for m in range(0, len(chosen), settings.batch_size):
                micro = chosen[m:m + settings.batch_size]
                logp_sum, _ = completion_logprobs(model, micro, pad_id, device)
                loss = -logp_sum.sum() / n_tokens
                loss.backward()
                step_loss += float(loss.detach())
            if settings.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            seen += len(chosen)
            longest_step = max(longest_step, time.time() - t0)
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()
    train_s = time.time() - start
    log.info("adapter %s: %d/%d steps, %d sequences, loss %s -> %s in %.2fs%s", progress_name, len(losses),
             total_steps, seen, f"{losses[0]:.4f}" if losses else "-", f"{losses[-1]:.4f}" if losses else "-",
             train_s, " (stopped at the deadline)" if stopped else "")
    return TrainResult(len(losses), seen, losses, stopped, train_s)
