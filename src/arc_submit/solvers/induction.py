"""Induction: the model writes Python programs; run them, keep the outputs of those that fit, learn from the rest.

Search and learn with hindsight relabelling, per task, for `epochs` epochs:
1. sampling: `predictions_per_epoch` programs from `prompt_augmentations` augmented views of the task (a view's
   program works in the view's frame: it runs on the view's inputs, and its outputs are mapped back). Prompts are
   written as the recipe says (BARC's model: colour names, one test input per prompt, its preamble prefilled).
2. execution: every program on every train and test input, sandboxed (arc_submit.execution), scored on the train
   examples (exact matches, then pixel accuracy).
3. early stop: when every test input has two distinct outputs from programs that reproduce every train example,
   more search cannot change the two attempts.
4. relabelling (data prep): a program that ran on every train input is a correct solution to the task made of its
   own outputs. One per distinct behaviour, best train fit first, at most `relabel_per_epoch` per epoch, join a
   pool; the best `relabel_pool` of it are the next training set.
5. adapter reset + training: the engine trains a fresh LoRA for the task on that set, and the next epoch samples
   from it. (Engines start every adapter fresh, so "a step further" is a fresh adapter on the growing pool.)
Candidates come from programs whose train fit (share of train examples reproduced) is at least `min_train_fit`,
ranked by train fit, then by the number of programs that produced the grid. The adapter is deleted at the end.

Defaults from the field: 128 predictions as 1×128 (no learning); 2×64 or 4×32 search and learn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..augment import Augmentation, augmentation_set
from ..budget import Deadline
from ..candidates import Candidate, grid_key, ranked_by_grid
from ..execution import ExecutionSettings, Executor
from ..fileio import safe_file_name
from ..llm import prompts
from ..llm.engine import Adapter, Sampling, TrainingText, TrainSettings
from ..llm.recipes import Recipe
from ..tasks import Example, Grid, Task
from . import Solver, SolverContext
from .common import (AugmentationOptions, LoraOptions, PhaseClock, PromptOptions, fit_examples, task_rng,
                     train_adapter_logged)
from .options import check_at_least, check_range
from .sampling import generate_within

log = logging.getLogger(__name__)
SOLVER = "induction"


@dataclass(frozen=True)
class InductionOptions:
    epochs: int = 1  # search-and-learn epochs (epochs - 1 learning steps)
    predictions_per_epoch: int = 128
    prompt_augmentations: int = 8  # distinct augmented prompts per epoch, the samples spread over them
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None  # program length cap; None: the recipe's (BARC: 2048), else 1024
    min_train_fit: float = 1.0  # share of train examples a program must reproduce for its test outputs to count
    early_stop: bool = True
    relabel_per_epoch: int = 32
    relabel_pool: int = 64  # training set size of a learning step (best of all relabelled so far)
    skip_identity: bool = True  # a program that returns its input teaches nothing
    train_epochs: int = 1
    train_steps: int | None = None
    train_fraction: float = 0.3  # share of an epoch's time its learning step may use
    max_prompt_tokens: int | None = None  # None: the engine's context less max_tokens
    max_sequences_per_call: int = 512
    seed: int = 0
    prompt: PromptOptions = field(default_factory=PromptOptions)  # recipe, grid_format
    augment: AugmentationOptions = field(default_factory=AugmentationOptions)  # use_dihedral, permute_colours, ...
    train: LoraOptions = field(default_factory=LoraOptions)  # learning_rate, lora_rank, max_seq_len, ...
    # The sandbox's settings, written at the top level too: entry (BARC's model writes transform), library_dir (a
    # folder of modules programs import, BARC's with common.py), colour_aliases, timeout_s, memory_mb, workers
    # (None: every CPU this process may use), landlock, programs_per_process, queue_depth.
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)

    def __post_init__(self):
        check_range("temperature", self.temperature, 0, 10)
        check_range("train_fraction", self.train_fraction, 0, 1)
        check_range("min_train_fit", self.min_train_fit, 0, 1)
        check_at_least("train_steps", self.train_steps, 0)
        check_at_least("max_tokens", self.max_tokens, 1)
        self.prompt.resolved().layout(SOLVER)  # a recipe for another kind of model fails here, naming the choices

    def train_settings(self) -> TrainSettings:
        return self.train.settings(self.train_epochs, self.train_steps, self.seed, self.prompt.resolved())

    def answer_tokens(self) -> int:
        return self.max_tokens or self.prompt.resolved().layout(SOLVER).max_tokens or 1024


@dataclass(eq=False)
class Program:
    code: str
    view: Augmentation  # the frame it was written in
    tests: tuple[int, ...]  # the test inputs its prompt showed
    epoch: int
    outputs: tuple[Grid | None, ...]  # per train input then test input, in the task's frame (None: failed)
    view_outputs: tuple[Grid | None, ...]  # the same in the view's frame (what relabelling trains on)
    exact: int  # train examples reproduced
    accuracy: float  # mean pixel accuracy over the train examples (0 for a wrong shape or an error)

    def fit(self, n_train: int) -> float:
        return self.exact / n_train

    def ran_on_train(self, n_train: int) -> bool:
        return all(o is not None for o in self.outputs[:n_train])


@dataclass
class InductionResult:
    candidates: list[list[Candidate]]
    phases: dict[str, float]
    programs: list[Program] = field(default_factory=list)  # every program that was executed
    samples: int = 0
    tokens: int = 0  # generated, over all samples
    epochs_run: int = 0
    stopped_early: bool = False
    learning_steps: int = 0
    relabelled: int = 0  # size of the relabelled pool at the end
    adapter: Adapter | None = None


def solve(task: Task, deadline: Deadline, context: SolverContext, options: InductionOptions) -> list[list[Candidate]]:
    """Ranked candidates per test input (see the module docstring); context.emit hears the ranking after every
    epoch, so a task stopped mid-search keeps what it found."""
    return run(task, deadline, context, options).candidates


# --- execution ---------------------------------------------------------------------------------------------

def train_fit(task: Task, outputs) -> tuple[int, float]:
    """(train examples reproduced exactly, mean pixel accuracy over the train examples)."""
    exact, accuracy = 0, 0.0
    for ex, out in zip(task.train, outputs):
        if out is not None and out.shape == ex.output.shape:
            same = float(np.mean(out == ex.output))
            accuracy += same
            exact += same == 1.0
    return exact, accuracy / len(task.train)


def execute(task: Task, sampled: list[tuple[str, Augmentation, tuple[int, ...]]], epoch: int, executor: Executor,
            deadline: Deadline, workers: int, timeout_s: float) -> list[Program]:
    """Run each (code, view, tests shown) on the view's train and test inputs, in chunks that fit the time left."""
    inputs = [ex.input for ex in (*task.train, *task.test)]
    programs: list[Program] = []
    at = 0
    while at < len(sampled):
        left = deadline.remaining()
        if left < 0.05:
            log.info("task %s %s: execution stopped by the deadline, %d of %d programs not run", task.id, SOLVER,
                     len(sampled) - at, len(sampled))
            break
        # A chunk all of whose programs could time out still ends about when the time does.
        chunk = sampled[at: at + workers * int(min(max(left // max(timeout_s, 1e-3), 1), 8))]
        at += len(chunk)
        by_view: dict[Augmentation, list[int]] = {}
        for i, (_, view, _) in enumerate(chunk):
            by_view.setdefault(view, []).append(i)
        views = list(by_view)
        batches = [([chunk[i][0] for i in by_view[v]], [v.apply_grid(g) for g in inputs]) for v in views]
        for view, results in zip(views, executor.run_tasks(batches)):
            for i, result in zip(by_view[view], results):
                view_outputs = tuple(o.grid if o.ok else None for o in result.outcomes)
                outputs = tuple(None if g is None else view.invert_grid(g) for g in view_outputs)
                exact, accuracy = train_fit(task, outputs)
                programs.append(Program(chunk[i][0], view, chunk[i][2], epoch, outputs, view_outputs, exact, accuracy))
    return programs


# --- candidates, early stop, relabelling -------------------------------------------------------------------

def fitting(task: Task, programs: list[Program], min_fit: float) -> list[Program]:
    return [p for p in programs if p.fit(len(task.train)) >= min_fit]


def candidates_from(task: Task, programs: list[Program], min_fit: float) -> list[list[Candidate]]:
    """Per test input: grids from programs with train fit >= min_fit, by best fit, then programs behind them."""
    n_train = len(task.train)
    fit = fitting(task, programs, min_fit)

    def best(group) -> Program:
        return max(group.members, key=lambda p: (p.exact, p.accuracy))

    def score(group) -> float:
        # Exact matches order the candidates; pixel accuracy (< 1/1000 of a match) breaks ties.
        return best(group).fit(n_train) + best(group).accuracy / 1000

    def candidate(group) -> Candidate:
        top = best(group)
        detail = (f"{len(group.members)} programs; best reproduces {top.exact}/{n_train} train examples "
                  f"(pixel accuracy {top.accuracy:.3f}); epochs {sorted({p.epoch for p in group.members})}")
        # Support: the share of train examples the best program behind the grid reproduces (1.0: verified).
        return Candidate(group.grid, SOLVER, score(group), len(group.members), detail, support=top.fit(n_train))

    out = []
    for t in range(len(task.test)):
        proposals = [(p.outputs[n_train + t], p) for p in fit if p.outputs[n_train + t] is not None]
        out.append([candidate(g) for g in ranked_by_grid(proposals, lambda g: (-score(g), -len(g.members)))])
    return out


def early_stop_reached(task: Task, programs: list[Program]) -> bool:
    """Every test input has two distinct outputs from programs that reproduce every train example."""
    n_train = len(task.train)
    solving = fitting(task, programs, 1.0)
    return all(len({grid_key(p.outputs[n_train + t]) for p in solving if p.outputs[n_train + t] is not None}) >= 2
               for t in range(len(task.test)))


def behaviour(task: Task, program: Program) -> tuple:
    """What a program did to the train inputs, in the task's frame: equal for programs that relabel alike."""
    return tuple(grid_key(g) for g in program.outputs[:len(task.train)])


@dataclass(frozen=True)
class Relabelled:
    prompt: str
    completion: str
    rank: tuple  # smaller is better: (-exact matches, -pixel accuracy, code length)


def relabel(task: Task, programs: list[Program], engine, r: Recipe, limit: int | None = None,
            cap: int | None = None, skip_identity: bool = True, seen: set | None = None) -> list[Relabelled]:
    """Hindsight relabelling: a (prompt, completion) pair for each program that ran on every train input.

    Each program's task: the view's train inputs (in the view's example order) with the program's own outputs,
    plus the test inputs its prompt showed, exactly as the sampling prompt shows a task; its completion is the
    program.
    One per behaviour (`seen` carries behaviours across epochs), best train fit first, shorter code first among
    equals, at most `cap`.
    """
    n_train = len(task.train)
    seen = set() if seen is None else seen
    ranked = sorted((p for p in programs if p.ran_on_train(n_train)),
                    key=lambda p: (-p.exact, -p.accuracy, len(p.code)))
    out = []
    for p in ranked:
        key = behaviour(task, p)
        if key in seen:
            continue
        if skip_identity and all(np.array_equal(out, ex.input) for out, ex in zip(p.outputs, task.train)):
            continue
        order = p.view.order or tuple(range(n_train))
        examples = [Example(p.view.apply_grid(task.train[i].input), p.view_outputs[i]) for i in order]
        test_inputs = [p.view.apply_grid(task.test[t].input) for t in p.tests]
        kept, _ = fit_examples(examples, lambda ex: prompts.induction_prompt(r, ex, test_inputs, engine.tokenizer).text,
                               engine.count_tokens, limit)
        if kept is None:
            continue
        seen.add(key)
        out.append(Relabelled(prompts.induction_prompt(r, kept, test_inputs, engine.tokenizer).text,
                              prompts.induction_target(r, p.code, engine.tokenizer), (-p.exact, -p.accuracy, len(p.code))))
        if cap is not None and len(out) >= cap:
            break
    return out


# --- sampling ----------------------------------------------------------------------------------------------

def view_prompts(task: Task, views: list[Augmentation], engine, r: Recipe, limit: int | None):
    """(view, test inputs shown, prompt) per view and group of test inputs (the recipe's tests_per_prompt) whose
    prompt fits `limit` (examples dropped largest first if needed)."""
    out = []
    for view in views:
        augmented = view.apply_task(task)
        for group in prompts.test_groups(r, len(augmented.test)):
            test_inputs = [augmented.test[t].input for t in group]
            kept, dropped = fit_examples(augmented.train,
                                         lambda ex: prompts.induction_prompt(r, ex, test_inputs, engine.tokenizer).text,
                                         engine.count_tokens, limit)
            if dropped or kept is None:
                log.warning("task %s %s: view %s over the context limit: %s", task.id, SOLVER, view.name,
                            "dropped" if kept is None else f"{dropped} examples left out")
            if kept is not None:
                out.append((view, group, prompts.induction_prompt(r, kept, test_inputs, engine.tokenizer).text))
    return out


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def run(task: Task, deadline: Deadline, context: SolverContext, opts: InductionOptions) -> InductionResult:
    engine = context.engine
    clock = PhaseClock(SOLVER, task.id)
    r = opts.prompt.resolved()
    max_tokens = opts.answer_tokens()
    n_train, epochs = len(task.train), opts.epochs
    result = InductionResult([[] for _ in task.test], clock.seconds)
    adapter_name = f"{SOLVER}-{safe_file_name(task.id)}"  # also its folder's name: ids are data
    context_tokens = engine.model_settings.max_model_len
    limit = opts.max_prompt_tokens or (context_tokens - max_tokens if context_tokens else None)
    train_limit = min(opts.train.max_seq_len, context_tokens or opts.train.max_seq_len)
    sampling = Sampling(n=1, temperature=opts.temperature, top_p=opts.top_p, max_tokens=max_tokens,
                        seed=opts.seed)
    pool: list[Relabelled] = []  # every epoch's relabelled programs, best first
    seen: set = set()
    adapter = None
    try:
        for epoch in range(epochs):
            if deadline.passed():
                break
            learns_after = epoch < epochs - 1
            share = deadline.remaining() / (epochs - epoch)
            # Sampling leaves room for this epoch's execution (a tenth) and its learning step.
            sampling_deadline = deadline.within(share * (0.9 - (opts.train_fraction if learns_after else 0)))

            with clock.phase("data prep", lambda: f"epoch {epoch}: {len(items)} prompts"):
                # The identity and fresh random views each epoch: new views, new programs.
                n_views = max(1, min(opts.prompt_augmentations, opts.predictions_per_epoch))
                views = augmentation_set(n_views, task_rng(opts.seed, task.id, 100 + epoch), n_train,
                                         **opts.augment.kwargs())
                items = view_prompts(task, views, engine, r, limit)
            if not items:
                break
            counts = split_evenly(opts.predictions_per_epoch, len(items))
            with clock.phase("sampling", lambda: f"epoch {epoch}: {run_.sequences} samples in {run_.calls} calls"
                                                 + (", stopped by the deadline" if run_.stopped_by_deadline else "")):
                run_ = generate_within(engine, context.speed, [p for _, _, p in items], counts, sampling, adapter,
                                       sampling_deadline, opts.max_sequences_per_call)
            result.samples += run_.sequences
            result.tokens += sum(g.n_tokens for gens in run_.generations for g in gens)
            sampled = [(code, view, group) for (view, group, _), gens in zip(items, run_.generations)
                       for code in (prompts.code_from_completion(r, g.text) for g in gens) if code is not None]

            with clock.phase("execution", lambda: f"epoch {epoch}: {len(sampled)} programs from {run_.sequences} "
                                                  f"samples, {sum(p.fit(n_train) == 1 for p in new)} fit all train"):
                new = []
                if sampled:
                    new = execute(task, sampled, epoch, context.programs.for_settings(opts.execution), deadline,
                                  opts.execution.resolved_workers(), opts.execution.timeout_s)
            result.programs.extend(new)
            result.epochs_run = epoch + 1
            if new:
                context.emit(candidates_from(task, result.programs, opts.min_train_fit))
            if opts.early_stop and early_stop_reached(task, result.programs):
                result.stopped_early = True
                log.info("task %s %s: early stop after epoch %d: two distinct answers from programs that solve "
                         "every train example", task.id, SOLVER, epoch)
                break
            if not learns_after or deadline.passed():
                continue

            with clock.phase("data prep", lambda: f"epoch {epoch}: relabelled {len(fresh)} programs, pool {len(pool)}"):
                fresh = relabel(task, new, engine, r, train_limit, opts.relabel_per_epoch, opts.skip_identity, seen)
                pool = sorted(pool + fresh, key=lambda item: item.rank)
                training = [TrainingText.pair(item.prompt, item.completion) for item in pool[:opts.relabel_pool]]
            train_s = deadline.remaining() / (epochs - epoch - 1) * opts.train_fraction
            if training and train_s >= 0.1:
                # Training replaces the task's adapter; if it fails, the next epoch samples the base model.
                adapter = train_adapter_logged(context, adapter_name, training, opts.train_settings(),
                                               Deadline.in_seconds(train_s), clock)
                if adapter is not None:
                    result.learning_steps += 1
        result.relabelled = len(pool)
        result.adapter = adapter
        with clock.phase("ranking"):
            result.candidates = candidates_from(task, result.programs, opts.min_train_fit)
    finally:
        engine.delete_adapter(adapter_name)
    log.info("task %s %s: %s", task.id, SOLVER, clock.summary())
    return result


# Support 1.0 means a program reproduced every train pair: later solvers of the chain may be skipped.
INDUCTION = Solver(SOLVER, solve, InductionOptions, verifies=True,
                   training=lambda options: options.train.needs(options.prompt.resolved()))
