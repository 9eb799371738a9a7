"""Transduction: the model writes each test output grid directly, after test-time training on the task itself.

Prompts, answers and training texts are written as the options' recipe says (llm/recipes.py: ours, or the format
a published model was trained on). Per task:
1. data prep: the training texts under `ttt_augmentations` augmentations (dihedral × colours × example order):
   leave-one-out pairs (each train example in turn is the "test", the others the context), or, where the recipe's
   authors trained so (NVARC, the ARChitects), each augmented task as one sequence with the loss on every output;
   the test prompts under
   `n_augmentations` views, the identity first. A prompt longer than the model's context drops its largest
   examples; a view whose prompt still does not fit is dropped. Each drop is logged.
2. adapter reset + training: a fresh LoRA for this task, trained until its steps are done or `train_fraction`
   of the task's time is used, whichever comes first.
3. decoding (`decoding`): greedy or sampled, every view of every test input, in calls sized to the time left
   (solvers.sampling); or dfs, every answer of each view whose probability is at least `min_prob` (llm/dfs.py),
   views searched in batches, stopped by the deadline with what it found.
4. voting: each answer is mapped back through its view's inverse; equal grids pool their votes. Candidates are
   ranked by votes, then by mean token log-probability, and emitted at once. With dfs a grid's support is the
   share of views that found it, and a note says per test input how many candidates and how much probability
   the search found (the report shows it).
5. scoring (scorer augmented or product): the best-voted grids re-ranked by the adapter's augmented
   log-probability, and emitted again. A task killed or out of memory while scoring keeps its votes.
The adapter is deleted at the end, so the next task starts from the base model.

    context = SolverContext.for_engine(engine)
    candidates = TRANSDUCTION.solve(task, Deadline.in_seconds(60), context,
                                    TRANSDUCTION.make_options({"n_augmentations": 8, "ttt_steps": 64}))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..augment import Augmentation, augmentation_set
from ..budget import Deadline
from ..candidates import Candidate, ranked_by_grid
from ..fileio import safe_file_name
from ..llm import prompts
from ..llm.engine import Adapter, Generation, Sampling, Search, TrainingText, TrainSettings
from ..llm.recipes import Recipe
from ..tasks import MAX_SIDE, Task
from . import Solver, SolverContext
from .common import (AugmentationOptions, LoraOptions, PhaseClock, PromptOptions, fit_examples, task_rng,
                     train_adapter_logged)
from .options import check_at_least, check_range
from .sampling import (generate_within, greedy_copies, predict_search_seconds, predict_seconds, probe_speed,
                       search_within)

log = logging.getLogger(__name__)
SOLVER = "transduction"


@dataclass(frozen=True)
class TransductionOptions:
    n_augmentations: int = 8  # views of each test input sampled (identity first)
    # How each view is decoded: greedy (one answer, temperature 0), sample (samples_per_augmentation answers at
    # `temperature`), dfs (every answer whose probability is at least min_prob, depth first: llm/dfs.py, as the
    # ARChitects and NVARC decoded). None: greedy at temperature 0, else sample (what temperature alone said
    # before this option existed).
    decoding: Literal["greedy", "sample", "dfs"] | None = None
    min_prob: float = 0.1  # dfs: the least probability (end token included) an answer of one view must have
    max_candidates_per_view: int = 8  # dfs: the most probable answers kept per view (the search bound rises to them)
    # dfs: views searched together, one KV cache row each: GPU memory grows with views × (prompt + answer) tokens
    # (8 views of 8k tokens of a Qwen3-4B: 9 GiB), beside the weights, in the room training uses.
    views_per_batch: int = 8
    samples_per_augmentation: int = 1  # samples per view (1 at temperature 0: greedy samples are all the same)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int | None = None  # answer length cap; None: from the largest grids of the task
    logprobs: bool = True  # rank equal-vote candidates by mean token log-probability
    ttt: bool = True  # test-time training on the task's own examples
    ttt_augmentations: int = 16  # augmented copies of the leave-one-out set
    ttt_epochs: int = 1
    ttt_steps: int | None = None  # optimizer steps at most; None: the epochs decide
    train_fraction: float = 0.5  # share of the task's time training may use (sampling needs the rest)
    max_prompt_tokens: int | None = None  # None: the engine's context less the answer
    max_sequences_per_call: int = 512
    # Re-ranking: "votes" keeps the vote order; "augmented" scores each distinct grid with the task's adapter under
    # the sampled views (NVARC, 2025: views that produced it + mean augmented log-probability); "product" ranks by
    # the augmented probabilities alone (the ARChitects' product of experts).
    scorer: Literal["votes", "augmented", "product"] = "votes"
    max_scored_candidates: int = 16  # per test input, best-voted first
    seed: int = 0
    prompt: PromptOptions = field(default_factory=PromptOptions)  # recipe, grid_format
    augment: AugmentationOptions = field(default_factory=AugmentationOptions)  # use_dihedral, permute_colours, ...
    train: LoraOptions = field(default_factory=LoraOptions)  # learning_rate, lora_rank, max_seq_len, ...

    def __post_init__(self):
        check_range("temperature", self.temperature, 0, 10)
        self._check_decoding()
        check_range("train_fraction", self.train_fraction, 0, 1)
        check_at_least("ttt_steps", self.ttt_steps, 0)
        self.prompt.resolved().layout(SOLVER)  # a recipe for another kind of model fails here, naming the choices

    def train_settings(self) -> TrainSettings:
        return self.train.settings(self.ttt_epochs, self.ttt_steps, self.seed, self.prompt.resolved())

    @property
    def decoding_mode(self) -> str:
        """greedy, sample or dfs: `decoding`, or what temperature says when it is not given."""
        return self.decoding or ("sample" if self.temperature > 0 else "greedy")

    def search(self, max_tokens: int) -> Search:
        return Search(min_prob=self.min_prob, max_tokens=max_tokens, max_candidates=self.max_candidates_per_view)

    def _check_decoding(self) -> None:
        # Checked whatever the decoding, so a bad value fails in the preflight before anyone switches to dfs.
        if not 0 < self.min_prob < 1:  # also False for NaN
            raise ValueError(f"option min_prob={self.min_prob!r} must be in (0, 1): the probability an answer of one "
                             f"view must reach to be kept by decoding: dfs (the winners used about 0.1)")
        for name in ("max_candidates_per_view", "views_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"option {name}={getattr(self, name)!r} must be at least 1")
        if self.decoding == "greedy" and self.temperature > 0:
            raise ValueError(f"option decoding=greedy with temperature={self.temperature}: greedy takes temperature 0; "
                             f"set decoding: sample to sample at that temperature")
        if self.decoding == "sample" and self.temperature == 0:
            raise ValueError("option decoding=sample with temperature=0: give a temperature above 0 (e.g. 1.0), or "
                             "use decoding: greedy")
        if self.decoding == "dfs" and self.temperature > 0:
            raise ValueError(f"option decoding=dfs with temperature={self.temperature}: the search follows the model's "
                             f"own probabilities; leave temperature at 0 (min_prob sets how wide it searches)")


@dataclass
class TransductionResult:
    candidates: list[list[Candidate]]  # per test input, best first
    phases: dict[str, float]  # seconds per phase
    adapter: Adapter | None = None
    train_pairs: int = 0
    samples: int = 0
    tokens: int = 0  # generated, over all samples
    parsed: int = 0  # samples that were valid grids
    dropped: dict[str, int] = field(default_factory=dict)  # examples / views dropped to fit the context
    masses: list[float | None] = field(default_factory=list)  # dfs, per prompt: probability of the answers found
    found: list[dict] = field(default_factory=list)  # dfs, per test input: candidates, mean mass, views searched


def solve(task: Task, deadline: Deadline, context: SolverContext,
          options: TransductionOptions) -> list[list[Candidate]]:
    """Ranked candidates per test input (see the module docstring); context.emit hears them after voting and
    again after re-ranking, so the worker journals them before anything later can fail."""
    return run(task, deadline, context, options).candidates


def answer_token_budget(task: Task, engine, r: Recipe) -> int:
    """Tokens an answer may take: the largest output the task suggests (train outputs, and test inputs scaled as
    the train examples scale), written out, plus a little; never less than one row, never beyond 30 × 30."""
    row_ratio = max(ex.output.shape[0] / ex.input.shape[0] for ex in task.train)
    col_ratio = max(ex.output.shape[1] / ex.input.shape[1] for ex in task.train)
    rows = max([ex.output.shape[0] for ex in task.train] + [int(np.ceil(ex.input.shape[0] * row_ratio)) for ex in task.test])
    cols = max([ex.output.shape[1] for ex in task.train] + [int(np.ceil(ex.input.shape[1] * col_ratio)) for ex in task.test])
    rows, cols = min(rows, MAX_SIDE), min(cols, MAX_SIDE)
    return engine.count_tokens(prompts.transduction_target(r, np.zeros((rows, cols), np.int8), engine.tokenizer)) + 4


def fitted_prompt(examples, test_input, engine, r: Recipe, limit: int | None, dropped: dict[str, int],
                  examples_key: str, prompt_key: str) -> str | None:
    """The transduction prompt for test_input, its largest examples dropped until it fits `limit` tokens;
    None when even one example does not fit. Drops are counted in `dropped` under the two keys."""
    def render(kept):
        return prompts.transduction_prompt(r, kept, test_input, engine.tokenizer).text

    kept, n_dropped = fit_examples(examples, render, engine.count_tokens, limit)
    if n_dropped:
        dropped[examples_key] = dropped.get(examples_key, 0) + n_dropped
    if kept is None:
        dropped[prompt_key] = dropped.get(prompt_key, 0) + 1
        return None
    return render(kept)


def training_texts(task: Task, augmentations: list[Augmentation], engine, r: Recipe, limit: int | None,
                   dropped: dict[str, int]) -> list[TrainingText]:
    """The recipe's test-time-training texts of every augmentation, each fitted into `limit` tokens."""
    if r.ttt_layout == "full_sequence":
        return [t for aug in augmentations
                if (t := full_sequence(aug.apply_examples(task.train), engine, r, limit, dropped)) is not None]
    pairs = []
    for aug in augmentations:
        examples = aug.apply_examples(task.train)
        for i, held_out in enumerate(examples):
            answer = prompts.transduction_target(r, held_out.output, engine.tokenizer)
            room = None if limit is None else limit - engine.count_tokens(answer) - 1
            prompt = fitted_prompt(examples[:i] + examples[i + 1:], held_out.input, engine, r, room, dropped,
                                   "train examples", "train pairs")
            if prompt is not None:
                pairs.append(TrainingText.pair(prompt, answer))
    return pairs


def full_sequence(examples, engine, r: Recipe, limit: int | None, dropped: dict[str, int]) -> TrainingText | None:
    """The task's examples as one training sequence, its largest examples dropped until it fits `limit` tokens
    (NVARC cut its first ones; the largest free the most room); None when even one does not fit."""
    def length(text: TrainingText) -> int:
        return sum(engine.count_tokens(segment) for segment, _ in text.segments)

    kept, n_dropped = fit_examples(examples, lambda kept: prompts.full_sequence_text(r, kept, engine.tokenizer),
                                   length, limit)
    if n_dropped:
        dropped["train examples"] = dropped.get("train examples", 0) + n_dropped
    if kept is None:
        dropped["train sequences"] = dropped.get("train sequences", 0) + 1
        return None
    return prompts.full_sequence_text(r, kept, engine.tokenizer)


def view_prompts(task: Task, views: list[Augmentation], engine, r: Recipe, limit: int | None,
                 dropped: dict[str, int]) -> list[tuple[int, Augmentation, str]]:
    """(test index, view, prompt), view-major: if time runs out, every test input has had its first views."""
    out = []
    for aug in views:
        augmented = aug.apply_task(task)
        for t, test in enumerate(augmented.test):
            prompt = fitted_prompt(augmented.train, test.input, engine, r, limit, dropped, "test examples", "views")
            if prompt is not None:
                out.append((t, aug, prompt))
    return out


def augmented_logprobs(engine, items: list[tuple[int, Augmentation, str]], test_index: int, grids: list,
                       adapter, r: Recipe) -> list[float]:
    """Per grid: the mean over the test input's views of log p(the grid, as that view shows it | the view's prompt),
    with the task's adapter; all grids × views go to the engine in one batch (their prompts repeat: prefix reuse)."""
    views = [(aug, prompt) for t, aug, prompt in items if t == test_index]
    if not views or not grids:
        return [float("-inf")] * len(grids)
    pairs = [TrainingText.pair(prompt, prompts.transduction_target(r, aug.apply_grid(grid), engine.tokenizer))
             for grid in grids for aug, prompt in views]
    sums = engine.score(pairs, adapter)
    return [float(np.mean(sums[i * len(views):(i + 1) * len(views)])) for i in range(len(grids))]


def rescore(engine, task: Task, items, candidates: list[list[Candidate]], adapter, r: Recipe,
            limit: int, product: bool = False) -> list[list[Candidate]]:
    """The "augmented" scorer: each test input's best-voted `limit` grids ranked by votes + mean augmented
    log-probability ("product": by the augmented log-probability alone); the rest keep their vote order after."""
    out = []
    for t, cands in enumerate(candidates):
        head, tail = cands[:limit], cands[limit:]
        logps = augmented_logprobs(engine, items, t, [c.grid for c in head], adapter, r)
        rescored = [Candidate(c.grid, c.solver, lp, c.count, c.detail + f"; augmented log-prob {lp:.2f}", c.support)
                    for c, lp in zip(head, logps)]
        # augmented: NVARC's views + mean log-prob; product: the ARChitects' product of the views' probabilities
        # (the same views for every grid, so the mean log-prob orders it), votes left out.
        rescored.sort(key=(lambda c: -c.score) if product else (lambda c: -(c.count + c.score)))
        out.append(rescored + tail)
    return out


def vote(task: Task, items: list[tuple[int, Augmentation, str]],
         generations: list[list[Generation]], r: Recipe, per_view: bool = False) -> tuple[list[list[Candidate]], int]:
    """Parse, map back, pool equal grids; candidates ranked by votes, then mean log-probability.

    A grid's support is its share of the samples drawn for its test input, or with `per_view` (dfs, whose views
    give several answers each) its share of the views: a grid every view found has support 1."""
    proposals: list[list] = [[] for _ in task.test]  # per test input: (grid, (view name, mean log-prob))
    samples = [0] * len(task.test)  # drawn per test input, parsed or not: the denominator of a grid's support
    for (t, aug, _), gens in zip(items, generations):
        samples[t] += 1 if per_view else len(gens)
        for g in gens:
            grid = prompts.grid_from_completion(r, g.text)
            if grid is not None:
                proposals[t].append((aug.invert_grid(grid), (aug.name, g.mean_logprob)))
    candidates = [[_voted(group, samples[t]) for group in ranked_by_grid(
        proposed, lambda group: (-len(group.members), -_mean_logprob(group)))] for t, proposed in enumerate(proposals)]
    return candidates, sum(len(p) for p in proposals)


def _mean_logprob(group) -> float:
    logprobs = [lp for _, lp in group.members if lp is not None]
    return float(np.mean(logprobs)) if logprobs else 0.0


def _voted(group, samples: int) -> Candidate:
    views = list(dict.fromkeys(name for name, _ in group.members))
    shown = " ".join(views[:4]) + (" …" if len(views) > 4 else "")
    votes = len(group.members)
    return Candidate(group.grid, SOLVER, _mean_logprob(group), votes, f"{votes} votes from views {shown}",
                     support=min(votes / samples, 1.0))


def search_views(engine, speed, items, search: Search, adapter, deadline: Deadline, opts: TransductionOptions,
                 prompt_tokens: list[int], clock: PhaseClock, result: TransductionResult) -> list[list[Generation]]:
    """decoding: dfs. Every view's answers above min_prob (solvers.sampling.search_within); their masses go to
    `result`. A view the deadline left unsearched has no answers (and mass None)."""
    with clock.phase("search", lambda: f"{result.samples} answers above p={search.min_prob:g} from {len(items)} "
                                       f"views in {run_.calls} calls, {run_.steps} steps"
                                       + (", stopped by the deadline" if run_.stopped_by_deadline else "")):
        run_ = search_within(engine, speed, [p for _, _, p in items], search, adapter, deadline,
                             opts.views_per_batch, prompt_tokens)
        result.samples = sum(len(g) for g in run_.generations)
    result.masses = run_.masses
    return run_.generations


def found_per_test(task: Task, items, masses: list[float | None], candidates: list[list[Candidate]]) -> list[dict]:
    """Per test input: distinct grids found, the views searched, and the mean over them of the probability the
    model puts on the answers found (1 would be every answer it could give)."""
    out = []
    for t in range(len(task.test)):
        searched = [m for (test, _, _), m in zip(items, masses) if test == t and m is not None]
        out.append({"candidates": len(candidates[t]), "views": len(searched),
                    "mass": float(np.mean(searched)) if searched else 0.0})
    return out


def describe_found(found: list[dict]) -> str:
    """The dfs note the report shows: 'test 0: 3 candidates, p mass 0.82 over 8 views; test 1: ...'."""
    return "; ".join(f"test {t}: {f['candidates']} candidates, p mass {f['mass']:.2f} over {f['views']} views"
                     for t, f in enumerate(found))


def run(task: Task, deadline: Deadline, context: SolverContext, opts: TransductionOptions) -> TransductionResult:
    engine, speed = context.engine, context.speed
    clock = PhaseClock(SOLVER, task.id)
    r = opts.prompt.resolved()
    dropped: dict[str, int] = {}
    result = TransductionResult([[] for _ in task.test], clock.seconds, dropped=dropped)
    adapter_name = f"{SOLVER}-{safe_file_name(task.id)}"  # also its folder's name: ids are data
    try:
        with clock.phase("data prep", lambda: f"{result.train_pairs} training pairs, {len(items)} prompts"
                                              + (f", dropped {dropped}" if dropped else "")):
            max_tokens = opts.max_tokens or answer_token_budget(task, engine, r)
            context_tokens = engine.model_settings.max_model_len
            prompt_limit = opts.max_prompt_tokens or (context_tokens - max_tokens if context_tokens else None)
            wants_training = opts.ttt and opts.ttt_augmentations > 0 and opts.ttt_steps != 0
            pairs = []
            if wants_training and len(task.train) >= (1 if r.ttt_layout == "full_sequence" else 2):
                train_limit = min(opts.train.max_seq_len, context_tokens or opts.train.max_seq_len)
                ttt_augs = augmentation_set(opts.ttt_augmentations, task_rng(opts.seed, task.id, 1), len(task.train),
                                            **opts.augment.kwargs())
                pairs = training_texts(task, ttt_augs, engine, r, train_limit, dropped)
            result.train_pairs = len(pairs)
            views = augmentation_set(opts.n_augmentations, task_rng(opts.seed, task.id, 2), len(task.train),
                                     **opts.augment.kwargs())
            items = view_prompts(task, views, engine, r, prompt_limit, dropped)
            prompt_tokens = [engine.count_tokens(p) for _, _, p in items]
        if dropped:
            log.warning("task %s %s: prompts over the context limit; dropped %s", task.id, SOLVER, dropped)

        n = greedy_copies(opts.samples_per_augmentation, opts.temperature)
        sampling = Sampling(n=1, temperature=opts.temperature, top_p=opts.top_p, max_tokens=max_tokens,
                            seed=opts.seed, logprobs=opts.logprobs)
        adapter = None
        if pairs and items and not deadline.passed():
            # Training may use train_fraction of the time, but never what sampling every view needs.
            if speed.step_s is None:  # a worker's first task: time the engine once
                with clock.phase("speed probe"):
                    probe_speed(engine, speed, items[0][2], sampling, deadline)
            if opts.decoding_mode == "dfs":
                sampling_s = predict_search_seconds(speed, prompt_tokens, max_tokens, opts.views_per_batch)
            else:
                sampling_s = predict_seconds(speed, prompt_tokens, n, max_tokens, opts.max_sequences_per_call,
                                             sampling.logprobs)
            left = deadline.remaining()
            train_s = min(left * opts.train_fraction, left - sampling_s)
            if train_s < 0.1:
                log.info("task %s %s: no time to train (%.1fs left, sampling needs about %.1fs)", task.id, SOLVER,
                         left, sampling_s)
                pairs = []
            if pairs:
                adapter = train_adapter_logged(context, adapter_name, pairs, opts.train_settings(),
                                               Deadline.in_seconds(train_s), clock)
        result.adapter = adapter

        if items and not deadline.passed():
            dfs = opts.decoding_mode == "dfs"
            if dfs:
                generations = search_views(engine, speed, items, opts.search(max_tokens), adapter, deadline, opts,
                                           prompt_tokens, clock, result)
            else:
                with clock.phase("sampling", lambda: f"{run_.sequences} samples of up to {max_tokens} tokens in "
                                                     f"{run_.calls} calls"
                                                     + (", stopped by the deadline" if run_.stopped_by_deadline else "")):
                    run_ = generate_within(engine, speed, [p for _, _, p in items], n, sampling, adapter, deadline,
                                           opts.max_sequences_per_call, prompt_tokens)
                generations = run_.generations
                result.samples = run_.sequences
            result.tokens = sum(g.n_tokens for gens in generations for g in gens)
            with clock.phase("voting", lambda: f"{result.parsed} of {result.samples} samples are grids"):
                result.candidates, result.parsed = vote(task, items, generations, r, per_view=dfs)
            context.emit(result.candidates)  # journaled now: scoring can still fail, run out of memory or time
            if dfs:
                result.found = found_per_test(task, items, result.masses, result.candidates)
                context.note(task.id, "dfs", describe_found(result.found))
            if opts.scorer != "votes" and any(result.candidates) and not deadline.passed():
                with clock.phase("scoring", lambda: f"{sum(min(len(c), opts.max_scored_candidates) for c in result.candidates)} grids x views"):
                    result.candidates = rescore(engine, task, items, result.candidates, adapter, r,
                                                opts.max_scored_candidates, opts.scorer == "product")
                context.emit(result.candidates)
    finally:
        engine.delete_adapter(adapter_name)
    log.info("task %s %s: %s", task.id, SOLVER, clock.summary())
    return result


TRANSDUCTION = Solver(SOLVER, solve, TransductionOptions,
                      training=lambda options: options.train.needs(options.prompt.resolved()))
