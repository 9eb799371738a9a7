"""Sampling that stops at a deadline: engine.generate() in calls sized to fit the time left.

generate() itself cannot be interrupted, so the only way to stop in time is to never start a call that would
not finish. Each engine gets a small speed model, probed once and refitted after every call for the life of the
process (only a worker's first task pays for the probe). A call is predicted to take

    prefill_s × prompt tokens + max_tokens × (step_s + context_s × context) × (1 + batch_growth × (sequences − 1))

ARC prompts run to 8k tokens, so prompt processing and the context's share of a decoding step both matter (a
step at 7k tokens of context was 35× one at 100 on the 2-core CPU). A batch costs about as much per step as one
sequence on a GPU (batch_growth ≈ 0) and grows with the batch on a CPU. Prompt tokens count once per prompt,
except on an engine that says it processes the prompt again for every sample (`Engine.prefills_per_sample`:
transformers' num_return_sequences, in the hf engine and unsloth without fast_inference).

The speed model belongs to the worker (SolverContext.speed), made for its engine: every solver on that worker
reads and refines the same one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from ..budget import Deadline
from ..llm.engine import Generation, Sampling, Search

if TYPE_CHECKING:
    from ..llm.engine import Adapter, Engine

log = logging.getLogger(__name__)

PROBE_STEPS = 8
PROBE_BATCH = 8
GROWTH_LIMIT = 4
PROBE_TOKENS = 12  # the short probe prompt: the decoding step with almost no context
MARGIN_S = 0.05  # time kept back for the bookkeeping after the last call
SAFETY = 1.25  # predictions were up to 1.5× short for batches larger than any measured on a CPU


@dataclass
class SpeedModel:
    prefills_per_sample: bool = False  # the engine's: a prompt is processed again for every sample
    prefill_s: float = 0.0  # seconds per prompt token processed
    step_s: float | None = None  # seconds per decoding step of one sequence with (almost) no context
    context_s: float = 0.0  # seconds each token of context adds to a decoding step
    batch_growth: float = 0.0  # relative growth of a decoding step per further sequence in the batch
    largest_work: int = 0  # sequences × max_tokens of the largest call made
    # Depth-first search (decoding: dfs) is one forward of one new token per searching prompt per step, like a
    # decoding step of that many sequences; how many steps a search takes depends on how sure the model is. Both
    # refitted after each search: forwards per token of max_tokens (a sure model ≈ its answer's share of
    # max_tokens; every branch explored adds its length), and a search step's seconds over a decoding step's
    # (the search's own bookkeeping per step).
    search_steps_per_token: float = 1.5
    search_step_scale: float = 1.0

    @classmethod
    def for_engine(cls, engine: Engine) -> "SpeedModel":
        """Nothing measured yet (probe_speed does it at the first sampling); how the engine processes prompts."""
        return cls(prefills_per_sample=engine.prefills_per_sample)

    def prompt_cost(self, prompt_tokens: Sequence[int], per_prompt: int, logprobs: bool = False) -> int:
        """Prompt tokens a call processes: once per prompt, or (prefills_per_sample) again per sample and once
        more per sample for the log-probability pass."""
        if not self.prefills_per_sample:
            return sum(prompt_tokens)
        return sum(prompt_tokens) * per_prompt * (2 if logprobs else 1)

    def allows(self, sequences: int, max_tokens: int) -> bool:
        """A call at most GROWTH_LIMIT times the largest seen (one sequence always). Extrapolating far beyond
        what was measured goes badly wrong (on a CPU a step grows with the batch and the context, on a GPU it
        hardly does): calls grow geometrically instead, the model refitted after each."""
        return sequences == 1 or sequences * max_tokens <= GROWTH_LIMIT * self.largest_work

    def step(self, context: int, sequences: int) -> float:
        return (self.step_s + self.context_s * context) * (1 + self.batch_growth * max(sequences - 1, 0))

    def predict(self, prompt_cost: int, context: int, sequences: int, max_tokens: int) -> float:
        return self.prefill_s * prompt_cost + max_tokens * self.step(context + max_tokens, sequences)

    def observe(self, seconds: float, prompt_cost: int, context: int, sequences: int, steps: int,
                max_tokens: int) -> None:
        """Refit the decoding terms to a finished call (the prefill rate stays as probed)."""
        self.largest_work = max(self.largest_work, sequences * max_tokens)
        per_step = max(seconds - self.prefill_s * prompt_cost, 0.0) / max(steps, 1)
        single = self.step_s + self.context_s * (context + steps / 2)
        if sequences == 1:
            # Scale both terms so one sequence's step is what was just seen (damped: one call is noisy).
            factor = min(max(per_step / single, 0.25), 4.0)
            self.step_s *= factor
            self.context_s *= factor
        else:
            self.batch_growth = max(0.0, per_step / single - 1) / (sequences - 1)

    def predict_search(self, prompt_tokens: Sequence[int], max_tokens: int) -> float:
        """Seconds one dfs call over these prompts should take: each prompt processed once, then the steps."""
        steps = self.search_steps_per_token * max_tokens
        return (self.prefill_s * sum(prompt_tokens)
                + steps * self.search_step_scale * self.step(max(prompt_tokens) + max_tokens, len(prompt_tokens)))

    def observe_search(self, seconds: float, prompt_tokens: Sequence[int], steps: int, max_tokens: int) -> None:
        """Refit the search terms to a finished dfs call (damped: one task's certainty says little of the next)."""
        ratio = steps / max(max_tokens, 1)
        self.search_steps_per_token = 0.5 * self.search_steps_per_token + 0.5 * max(ratio, 0.1)
        if steps and self.step_s is not None:  # unprobed (no training before it): no decoding step to scale
            per_step = max(seconds - self.prefill_s * sum(prompt_tokens), 0.0) / steps
            decoding = self.step(max(prompt_tokens) + max_tokens, len(prompt_tokens))
            scale = min(max(per_step / max(decoding, 1e-9), 0.25), 8.0)
            self.search_step_scale = 0.5 * self.search_step_scale + 0.5 * scale


def probe_speed(engine: Engine, speed: SpeedModel, prompt: str, sampling: Sampling, deadline: Deadline,
                adapter: Adapter | None = None) -> SpeedModel:
    """`speed` filled in by four short timed calls of `engine` when nothing is known yet (their text is thrown
    away): a few steps on a tiny prompt, alone (the bare step) and as a batch (its growth with the batch), one
    token of `prompt` (≈ its processing), a few steps of a variant of `prompt` (without its first token, so a
    prefix cache cannot serve it: the step at long context). Both variants are cut from `prompt`'s own tokens: a
    model's vocabulary may hold nothing else (NVARC's has 16 tokens). Gives up, knowing nothing, if the deadline
    passes."""
    if speed.step_s is not None:
        return speed
    quiet = replace(sampling, n=1, logprobs=False, stop=())
    ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    short, uncached = engine.tokenizer.decode(ids[-PROBE_TOKENS:]), engine.tokenizer.decode(ids[1:])

    def timed(text: str, max_tokens: int, n: int = 1) -> tuple[float, int]:
        t0 = time.time()
        # Temperature 1: at 0 an engine may decode one sequence and copy it n times.
        out = engine.generate([text], replace(quiet, n=n, max_tokens=max_tokens, temperature=1.0), adapter)
        return time.time() - t0, max(max(g.n_tokens for g in out[0]), 1)

    n_prompt, n_short = engine.count_tokens(prompt), engine.count_tokens(short)
    calls = [(short, PROBE_STEPS, 1), (short, PROBE_STEPS, PROBE_BATCH), (prompt, 1, 1), (uncached, PROBE_STEPS, 1)]
    timings = []
    for text, max_tokens, n in calls:
        if deadline.passed():  # a fresh engine's first call can be slow (kernels, caches)
            log.info("sampling speed probe stopped by the deadline")
            return speed
        timings.append(timed(text, max_tokens, n))
    (short_s, short_steps), (batch_s, batch_steps), (one_s, _), (many_s, many_steps) = timings
    long_step = max((many_s - one_s) / max(many_steps - 1, 1), 1e-5)
    speed.prefill_s = max(one_s - long_step, 0.0) / max(n_prompt, 1)
    speed.step_s = max((short_s - speed.prefill_s * n_short) / short_steps, 1e-5)
    speed.context_s = max(long_step - speed.step_s, 0.0) / max(n_prompt, 1)
    batch_step = (batch_s - speed.prefill_s * speed.prompt_cost([n_short], PROBE_BATCH)) / batch_steps
    speed.batch_growth = max(batch_step / speed.step_s - 1, 0.0) / (PROBE_BATCH - 1)
    speed.largest_work = PROBE_BATCH * PROBE_STEPS
    log.info("sampling speed probe: %.3f ms per prompt token, %.2f ms per step + %.4f ms per token of context, "
             "+%.0f%% per further sequence in a batch", 1000 * speed.prefill_s, 1000 * speed.step_s,
             1000 * speed.context_s, 100 * speed.batch_growth)
    return speed


def predict_seconds(speed: SpeedModel, prompt_tokens: Sequence[int], per_prompt: int, max_tokens: int,
                    max_sequences_per_call: int = 512, logprobs: bool = False) -> float:
    """Time sampling `per_prompt` samples of each prompt should take (0 when the engine was never probed)."""
    if speed.step_s is None or not prompt_tokens or per_prompt <= 0:
        return 0.0
    sequences = len(prompt_tokens) * per_prompt
    cap = max(max_sequences_per_call, 1)
    calls = -(-sequences // cap)
    return (speed.prefill_s * speed.prompt_cost(prompt_tokens, per_prompt, logprobs)
            + calls * max_tokens * speed.step(max(prompt_tokens) + max_tokens, min(sequences, cap)))


@dataclass
class SamplingRun:
    generations: list[list[Generation]]  # per prompt, possibly fewer than asked (none) if time ran out
    calls: int
    sequences: int
    stopped_by_deadline: bool


def generate_within(engine: Engine, speed: SpeedModel, prompts: Sequence[str], n: int | Sequence[int],
                    sampling: Sampling, adapter: Adapter | None, deadline: Deadline,
                    max_sequences_per_call: int = 512, prompt_tokens: Sequence[int] | None = None) -> SamplingRun:
    """`n` samples of each prompt (or n[i] of prompt i; sampling.n is ignored), prompts in order, as far as the
    deadline allows.

    Calls batch whole prompts that fit; a prompt whose n samples do not fit one call is split over several,
    each with its own seed so the parts differ.
    """
    results: list[list[Generation]] = [[] for _ in prompts]
    asked = [n] * len(prompts) if isinstance(n, int) else [int(k) for k in n]
    work = deque((i, k) for i, k in enumerate(asked) if k > 0)
    calls = sequences = 0
    stopped = False
    if work and deadline.remaining() > MARGIN_S:
        probe_speed(engine, speed, prompts[work[0][0]], sampling, deadline, adapter)
    tokens = list(prompt_tokens) if prompt_tokens is not None else [engine.count_tokens(p) for p in prompts]
    while work:
        left = deadline.remaining() - MARGIN_S
        first, wanted = work[0]

        def fits(batch: list[int], per_prompt: int) -> bool:
            size = len(batch) * per_prompt
            context = max(tokens[i] for i in batch)
            return size <= max_sequences_per_call and speed.allows(size, sampling.max_tokens) and SAFETY * speed.predict(
                speed.prompt_cost([tokens[i] for i in batch], per_prompt, sampling.logprobs), context, size,
                sampling.max_tokens) <= left

        # The most samples of the first prompt that fit; if all do, as many more prompts as fit with as many.
        per_prompt = 0
        if speed.step_s is not None:
            while per_prompt < wanted and fits([first], per_prompt + 1):
                per_prompt += 1
        if per_prompt < 1:
            stopped = True
            break
        batch = [first]
        if per_prompt == wanted:
            for i, k in list(work)[1:]:
                if k != per_prompt or not fits(batch + [i], per_prompt):
                    break
                batch.append(i)
        for _ in batch:
            work.popleft()
        if per_prompt < wanted:
            work.appendleft((first, wanted - per_prompt))
        seed = None if sampling.seed is None else sampling.seed + calls
        cost = speed.prompt_cost([tokens[i] for i in batch], per_prompt, sampling.logprobs)
        predicted = speed.predict(cost, max(tokens[i] for i in batch), len(batch) * per_prompt, sampling.max_tokens)
        t0 = time.time()
        out = engine.generate([prompts[i] for i in batch], replace(sampling, n=per_prompt, seed=seed), adapter)
        steps = max((g.n_tokens for gens in out for g in gens), default=1)
        log.debug("generate: %d prompts × %d samples, %d steps in %.2fs (predicted at most %.2fs for %d steps)",
                  len(batch), per_prompt, steps, time.time() - t0, predicted, sampling.max_tokens)
        speed.observe(time.time() - t0, cost, max(tokens[i] for i in batch), len(batch) * per_prompt, steps,
                      sampling.max_tokens)
        for i, gens in zip(batch, out):
            results[i].extend(gens)
        calls += 1
        sequences += len(batch) * per_prompt
    if stopped:
        log.info("sampling stopped by the deadline: %d of %d samples not drawn", sum(k for _, k in work),
                 sum(asked))
    return SamplingRun(results, calls, sequences, stopped)


def greedy_copies(n: int, temperature: float) -> int:
    """Samples worth drawing per prompt: at temperature 0 every sample is the same text, so one."""
    return 1 if temperature == 0 else max(int(n), 0)


def predict_search_seconds(speed: SpeedModel, prompt_tokens: Sequence[int], max_tokens: int,
                           views_per_batch: int) -> float:
    """Time searching every prompt (decoding: dfs) should take, in batches of views_per_batch (0 when the
    engine was never probed)."""
    if speed.step_s is None or not prompt_tokens:
        return 0.0
    size = max(views_per_batch, 1)
    return sum(speed.predict_search(prompt_tokens[i:i + size], max_tokens) for i in range(0, len(prompt_tokens), size))


@dataclass
class SearchWithin:
    generations: list[list[Generation]]  # per prompt: its answers found, most probable first (none if not searched)
    masses: list[float | None]  # per prompt: their total probability; None for a prompt never searched
    calls: int
    steps: int
    stopped_by_deadline: bool


def search_within(engine: Engine, speed: SpeedModel, prompts: Sequence[str], search: Search,
                  adapter: Adapter | None, deadline: Deadline, views_per_batch: int,
                  prompt_tokens: Sequence[int] | None = None) -> SearchWithin:
    """Depth-first search of every prompt (decoding: dfs), views_per_batch prompts per engine call, in order, as
    far as the deadline allows. A search stops at its deadline with what it found, but the first forward over
    its prompts cannot be cut: a call starts only when that fits. The batches never depend on the clock, so the
    same task gives the same searches (the clock only cuts them short)."""
    tokens = list(prompt_tokens) if prompt_tokens is not None else [engine.count_tokens(p) for p in prompts]
    out = SearchWithin([[] for _ in prompts], [None] * len(prompts), 0, 0, False)
    size = max(views_per_batch, 1)
    for start in range(0, len(prompts), size):
        batch = list(range(start, min(start + size, len(prompts))))
        left = deadline.remaining() - MARGIN_S
        if left <= 0 or SAFETY * speed.prefill_s * sum(tokens[i] for i in batch) > left:
            out.stopped_by_deadline = True
            break
        t0 = time.time()
        found = engine.dfs([prompts[i] for i in batch], search, adapter, Deadline(deadline.at - MARGIN_S))
        seconds = time.time() - t0
        if all(found.complete):  # a cut search says nothing of how long a whole one takes
            speed.observe_search(seconds, [tokens[i] for i in batch], found.steps, search.max_tokens)
        log.debug("dfs: %d prompts, %d steps in %.2fs", len(batch), found.steps, seconds)
        for k, i in enumerate(batch):
            out.generations[i] = found.completions[k]
            out.masses[i] = found.mass(k)
        out.calls += 1
        out.steps += found.steps
        if found.stopped_by_deadline:
            out.stopped_by_deadline = True
            break
    if out.stopped_by_deadline:
        log.info("dfs stopped by the deadline: %d of %d prompts searched (the last batch cut short)", sum(
            1 for m in out.masses if m is not None), len(prompts))
    return out
