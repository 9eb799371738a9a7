"""Depth-first search over answers (transduction's `decoding: dfs`): every completion of a prompt whose probability
stays at least `min_prob`, as the ARChitects (ARC Prize 2024) and NVARC (2025) decoded.

Why it is cheap: a prefix's probability only falls as it grows, so a branch below the bound goes with all its
descendants; and disjoint prefixes share a probability of 1, so at most 1/min_prob branches are alive at any depth.
A confident model costs about one greedy decode; an unsure one stops early, its branches under the bound. Once
`max_candidates` answers are found, the bound rises to the least probable of them: only a more probable answer
can still get in, so the search returns exactly the most probable max_candidates answers above min_prob.

Two parts:
- `search`: the search, in numpy, over a `Decoder` that says, for a batch of paths (answer tokens after a
  prompt), which next tokens keep the path above a bound. Each step takes one branch point per prompt (its most
  probable pending branch: depth first) and asks the decoder for all of them at once: one batched forward per
  step over the prompts still searching, never one generate() per branch.
- `KVDecoder`: that decoder on a transformers model (the hf engine; unsloth without fast_inference) with one KV
  cache row per prompt. A backtrack does not recompute: the abandoned path's cache columns are masked out of
  attention and each new token is appended as a column, at the position its path gives it. Every so often
  (`_compact`) the cache is rebuilt to hold only each row's prompt and live path, and rows whose search ended
  are dropped, so memory stays at prompt + max_tokens per prompt.

Deterministic: the order of the search is fixed (branches by probability, ties by token id; one branch per prompt
per step; compaction on a step count, never on the clock), so the same prompts and weights give the same batches,
the same forwards and the same answers. What that costs: no dynamic load balancing (a prompt whose search ended
leaves its row idle until the next compaction) and no early exit on the clock except the deadline, which only
truncates. NVARC's batched DFS was not deterministic and their fixed version cost 17%; on the tiny CPU model this
one gives identical candidates run to run (tests/test_dfs.py), GPU numerics not measured.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ..budget import Deadline
from .engine import Generation, Search, SearchResult

Path = tuple  # the answer's tokens so far (ints), after the prompt


@dataclass
class Branches:
    """The next tokens that keep a path at or above the bound, with the path's log-probability once each is taken."""
    tokens: np.ndarray  # int
    logprobs: np.ndarray  # float64, cumulative over the path


class Decoder(Protocol):
    def start(self, bounds: Sequence[float]) -> list[Branches]:
        """For every prompt, in order: the first answer tokens with log p >= its bound."""
        ...

    def advance(self, rows: Sequence[int], paths: Sequence[Path], logprobs: Sequence[float],
                bounds: Sequence[float]) -> list[Branches]:
        """For prompt rows[i], after paths[i] (whose log-probability is logprobs[i]): the next tokens whose path
        stays >= bounds[i]. A path's parent is always a prefix of the last path asked for that row (depth first)."""
        ...

    def retire(self, row: int) -> None:
        """The row's search ended: its cache may go."""
        ...


@dataclass
class _PromptSearch:
    """One prompt's depth-first search: a stack of pending branches, the best answers found so far."""
    max_candidates: int
    floor: float  # log(min_prob)
    stack: list = field(default_factory=list)  # (logprob, path): the most probable branch on top
    found: list = field(default_factory=list)  # min-heap of (logprob, path)

    def bound(self) -> float:
        """Below it nothing can enter the answers: min_prob, or the least of max_candidates answers found."""
        if len(self.found) < self.max_candidates:
            return self.floor
        return max(self.floor, self.found[0][0])

    def add_answer(self, logprob: float, path: Path) -> None:
        if len(self.found) < self.max_candidates:
            heapq.heappush(self.found, (logprob, path))
        elif logprob > self.found[0][0]:
            heapq.heapreplace(self.found, (logprob, path))

    def take(self, branches: Branches, path: Path, max_tokens: int, end_ids: frozenset) -> None:
        """Answers among the branches are kept; the others are pushed, the most probable last (popped first)."""
        order = np.lexsort((branches.tokens, -branches.logprobs))  # most probable first, ties by token id
        depth = len(path) + 1  # the answer's length once the next token is taken
        children = []
        for k in order:
            token, logprob = int(branches.tokens[k]), float(branches.logprobs[k])
            if token in end_ids:
                self.add_answer(logprob, path + (token,))
            elif depth < max_tokens:  # room left for at least the end token after it
                children.append((logprob, path + (token,)))
        self.stack.extend(reversed(children))

    def next_branch(self) -> tuple[float, Path] | None:
        """The most probable pending branch still above the bound (which may have risen since it was pushed)."""
        while self.stack:
            logprob, path = self.stack.pop()
            if logprob >= self.bound():
                return logprob, path
        return None

    def answers(self) -> list[tuple[float, Path]]:
        return sorted(self.found, key=lambda item: (-item[0], item[1]))


@dataclass
class SearchRun:
    answers: list[list[tuple[float, Path]]]  # per prompt, most probable first: (log-probability, tokens)
    complete: list[bool]
    steps: int
    stopped_by_deadline: bool


def search(decoder: Decoder, n_prompts: int, settings: Search, end_ids: frozenset,
           deadline: Deadline | None = None) -> SearchRun:
    """Depth-first search of every prompt at once (see the module docstring)."""
    floor = math.log(settings.min_prob)
    states = [_PromptSearch(settings.max_candidates, floor) for _ in range(n_prompts)]
    for state, branches in zip(states, decoder.start([floor] * n_prompts)):
        state.take(branches, (), settings.max_tokens, end_ids)
    live = set(range(n_prompts))
    steps, stopped = 0, False
    while True:
        if deadline is not None and deadline.passed() and any(s.stack for s in states):
            stopped = True
            break
        batch = []
        for i in sorted(live):
            branch = states[i].next_branch()
            if branch is None:
                live.discard(i)
                decoder.retire(i)
            else:
                batch.append((i, branch))
        if not batch:
            break
        out = decoder.advance([i for i, _ in batch], [path for _, (_, path) in batch],
                              [logprob for _, (logprob, _) in batch], [states[i].bound() for i, _ in batch])
        steps += 1
        for (i, (_, path)), branches in zip(batch, out):
            states[i].take(branches, path, settings.max_tokens, end_ids)
    complete = [not s.stack for s in states]
    return SearchRun([s.answers() for s in states], complete, steps, stopped)


# --- on a transformers model with a KV cache ------------------------------------------------------------------

COMPACT_SLACK = 64  # stale cache columns tolerated before a rebuild (besides the longest live path again)


class KVDecoder:
    """`Decoder` on a transformers causal LM (a peft model too), one KV cache row per prompt; see the module
    docstring. `allowed`: token ids a branch may continue with (None: all), the end tokens always among them."""

    def __init__(self, model, prompt_ids: Sequence[Sequence[int]], device, pad_id: int,
                 allowed: Sequence[int] | None = None, end_ids: frozenset = frozenset()):
        import torch

        self.model, self.device, self.pad_id = model, device, pad_id
        self.lengths = [len(p) for p in prompt_ids]
        self.prompt_width = max(self.lengths)
        self.prompt_ids = prompt_ids
        self.slot = list(range(len(prompt_ids)))  # prompt -> cache row (None once dropped)
        self.paths: list[Path] = [() for _ in prompt_ids]  # the path each row's columns hold
        self.columns: list[list[int]] = [[] for _ in prompt_ids]  # where each path token sits in the cache
        self.retired: set[int] = set()
        self.cache = None
        self.arguments = _forward_arguments(model)
        self.mask = None  # [rows, width] long: 1 where a row may attend
        self.allowed = None
        if allowed is not None:
            vocab = int(model.config.vocab_size)
            keep = torch.zeros(vocab, dtype=torch.bool)
            keep[[t for t in set(allowed) | set(end_ids) if 0 <= t < vocab]] = True
            self.allowed = keep.to(device)

    def start(self, bounds: Sequence[float]) -> list[Branches]:
        import torch

        width = self.prompt_width
        ids = [[self.pad_id] * (width - len(p)) + list(p) for p in self.prompt_ids]
        self.mask = torch.tensor([[0] * (width - n) + [1] * n for n in self.lengths], device=self.device)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(torch.tensor(ids, device=self.device), positions, last_only=True)
        return self._branches(out.logits[:, -1], range(len(self.prompt_ids)), [0.0] * len(self.prompt_ids), bounds)

    def advance(self, rows, paths, logprobs, bounds) -> list[Branches]:
        import torch

        self._maybe_compact()
        n_rows, width = self.mask.shape
        tokens = torch.full((n_rows, 1), self.pad_id, device=self.device)
        positions = torch.zeros((n_rows, 1), dtype=torch.long, device=self.device)
        new_column = torch.zeros((n_rows, 1), dtype=self.mask.dtype, device=self.device)
        for row, path in zip(rows, paths):
            slot, parent = self.slot[row], path[:-1]
            if self.paths[row][:len(parent)] != parent:
                raise RuntimeError(f"dfs: row {row} was asked for {path}, not a child of a prefix of {self.paths[row]}")
            stale = self.columns[row][len(parent):]
            if stale:  # backtracking: the abandoned suffix leaves attention, its columns stay until compaction
                self.mask[slot, stale] = 0
            self.columns[row] = self.columns[row][:len(parent)] + [width]
            self.paths[row] = path
            tokens[slot, 0], positions[slot, 0], new_column[slot, 0] = path[-1], self.lengths[row] + len(parent), 1
        self.mask = torch.cat([self.mask, new_column], dim=1)
        out = self._forward(tokens, positions)
        slots = [self.slot[row] for row in rows]
        return self._branches(out.logits[slots, -1], rows, logprobs, bounds)

    def retire(self, row: int) -> None:
        self.retired.add(row)

    def _forward(self, input_ids, positions, last_only: bool = False):
        """One forward with the cache; transformers 5.2x calls it `cache` (`past_key_values` before), and only the
        last position's logits are wanted after a prompt (a 150k vocabulary over 8k prompt tokens would not fit)."""
        names = self.arguments
        kwargs = dict(input_ids=input_ids, attention_mask=self.mask, position_ids=positions, use_cache=True)
        if self.cache is not None:
            kwargs["cache" if "cache" in names else "past_key_values"] = self.cache
        if last_only:
            for name in ("logits_to_keep", "num_logits_to_keep"):
                if name in names:
                    kwargs[name] = 1
                    break
        out = self.model(**kwargs)
        self.cache = out["cache"] if "cache" in names else out["past_key_values"]
        return out

    def _branches(self, logits, rows, logprobs, bounds) -> list[Branches]:
        """Thresholded on the device (a vocabulary of 150k per row stays there); only the survivors come back."""
        import torch

        logp = torch.log_softmax(logits.float(), dim=-1)
        if self.allowed is not None:
            logp = logp.masked_fill(~self.allowed[:logp.shape[-1]], float("-inf"))
        need = torch.tensor([b - lp for b, lp in zip(bounds, logprobs)], device=logp.device, dtype=logp.dtype)
        out = []
        for k, (row_logp, cumulative) in enumerate(zip(logp, logprobs)):
            tokens = torch.nonzero(row_logp >= need[k]).flatten()
            values = row_logp[tokens].double().cpu().numpy()
            out.append(Branches(tokens.cpu().numpy(), cumulative + values))
        return out

    # --- keeping the cache small ---------------------------------------------------------------------------

    def _layers(self):
        """The cache's per-layer (keys, values) holders when it is transformers' DynamicCache of plain layers;
        None for any other cache (a sliding-window layer, another library's): then it is never compacted (it only
        grows: still exact, just larger)."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(self.cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            return None
        return layers

    def _maybe_compact(self) -> None:
        alive = [r for r, s in enumerate(self.slot) if s is not None and r not in self.retired]
        longest = max((len(self.columns[r]) for r in alive), default=0)
        stale_columns = self.mask.shape[1] - self.prompt_width - longest
        dropped_rows = sum(1 for r in self.retired if self.slot[r] is not None)
        if alive and (stale_columns > longest + COMPACT_SLACK or 2 * dropped_rows >= len(alive) > 0) \
                and self._layers() is not None:
            self._compact(alive, longest)

    def _compact(self, alive: list[int], longest: int) -> None:
        """Rebuild the cache with only the live rows, each holding its prompt then its path's columns in order."""
        import torch

        width = self.prompt_width + longest
        index = torch.zeros((len(alive), width), dtype=torch.long)
        mask = torch.zeros((len(alive), width), dtype=self.mask.dtype)
        old_mask = self.mask.cpu()
        for new, row in enumerate(alive):
            old, columns = self.slot[row], self.columns[row]
            index[new, :self.prompt_width] = torch.arange(self.prompt_width)
            mask[new, :self.prompt_width] = old_mask[old, :self.prompt_width]
            index[new, self.prompt_width:self.prompt_width + len(columns)] = torch.tensor(columns, dtype=torch.long)
            mask[new, self.prompt_width:self.prompt_width + len(columns)] = 1
        rows = torch.tensor([self.slot[r] for r in alive], device=self.device)
        index = index.to(self.device)
        for layer in self._layers():
            heads, dim = layer.keys.shape[1], layer.keys.shape[3]
            gather = index[:, None, :, None].expand(-1, heads, -1, dim)
            layer.keys = torch.gather(layer.keys.index_select(0, rows), 2, gather)
            layer.values = torch.gather(layer.values.index_select(0, rows), 2, gather)
        self.mask = mask.to(self.device)
        for row in range(len(self.slot)):
            self.slot[row] = None
        for new, row in enumerate(alive):
            self.slot[row] = new
            self.columns[row] = list(range(self.prompt_width, self.prompt_width + len(self.columns[row])))


def _forward_arguments(model) -> set[str]:
    """The argument names of the causal LM's own forward (a peft model's is generic: look through it)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def run_dfs(model, tokenizer, device, prompt_ids: Sequence[Sequence[int]], search_settings: Search,
            deadline: Deadline | None = None, max_rows: int = 64) -> SearchResult:
    """Every prompt searched (in batches of max_rows, in order) on `model`; answers decoded as generate's are
    (special tokens skipped). Call inside torch.inference_mode() and the adapter's context."""
    end_ids = frozenset({int(tokenizer.eos_token_id)})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    completions: list[list[Generation]] = []
    complete: list[bool] = []
    steps, stopped = 0, False
    for start in range(0, len(prompt_ids), max(1, max_rows)):
        group = prompt_ids[start:start + max(1, max_rows)]
        if stopped or (deadline is not None and deadline.passed()):
            stopped = True
            completions += [[] for _ in group]
            complete += [False] * len(group)
            continue
        decoder = KVDecoder(model, group, device, pad, search_settings.tokens, end_ids)
        run = search(decoder, len(group), search_settings, end_ids, deadline)
        del decoder  # its cache
        steps += run.steps
        stopped = stopped or run.stopped_by_deadline
        complete += run.complete
        completions += [[Generation(tokenizer.decode(list(path), skip_special_tokens=True), len(path), True,
                                    logprob, tuple(path)) for logprob, path in answers] for answers in run.answers]
    return SearchResult(completions, complete, steps, stopped)
