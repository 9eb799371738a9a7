"""Which real ARC tasks the dry run's embedded default solves: the tiny offline model (random weights) on the hf
engine, transduction with per-task test-time training, on the CPU, one task at a time.

    PYTHONPATH=src .venv/bin/python benchmarks/dry_run_tasks.py                       # the colour-mapping candidates
    PYTHONPATH=src .venv/bin/python benchmarks/dry_run_tasks.py --families colour-map same-shape --seeds 0 1
    PYTHONPATH=src .venv/bin/python benchmarks/dry_run_tasks.py --option ttt_epochs=4 --budget 30
    PYTHONPATH=src .venv/bin/python benchmarks/dry_run_tasks.py --only-tasks --tasks arc-agi-2/evaluation:e8686506

A random-weight model knows nothing, so it can only solve what a LoRA learns in seconds from the task's own train
pairs. The candidates are chosen cheaply from the train pairs alone: colour-mapping tasks (every output has its
input's shape and one fixed table maps each input cell's colour to the output cell's colour) and, with
--families same-shape, small tasks whose grids all have one shape. Each runs the transduction solver under the
dry run's options (kaggle_env.tiny_dry_run_options on hf, changed with --option) within --budget seconds, about
what a dry-run task gets. "solved": every test output is among the first two candidates, the two attempts a
submission makes. --seeds runs each task once per solver seed (a different LoRA initialisation, data order and
augmentations). --trace K shows when in training a task is solved: every K optimizer steps of one full run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

DATASETS = ("arc-agi-2/training", "arc-agi-2/evaluation", "arc-agi-1/training", "arc-agi-1/evaluation")


def colour_table(task) -> dict[int, int] | None:
    """The one input colour -> output colour table every train pair follows cell by cell, or None (a pair changes
    shape, or one colour maps to two)."""
    table: dict[int, int] = {}
    for ex in task.train:
        if ex.input.shape != ex.output.shape:
            return None
        for a, b in zip(ex.input.ravel().tolist(), ex.output.ravel().tolist()):
            if table.setdefault(a, b) != b:
                return None
    return table


def is_colour_mapping(task) -> bool:
    """A colour table other than the identity explains every train pair."""
    table = colour_table(task)
    return table is not None and any(a != b for a, b in table.items())


def is_small_same_shape(task, max_side: int = 6) -> bool:
    """Every grid of the task (train and test, inputs and outputs) has one shape, at most max_side a side: the
    answer's cells sit at fixed offsets from the test input's, which is what a tiny model can learn to copy."""
    grids = [g for ex in (*task.train, *task.test) for g in (ex.input, ex.output) if g is not None]
    return len({g.shape for g in grids}) == 1 and max(grids[0].shape) <= max_side


FAMILIES = {"colour-map": is_colour_mapping, "same-shape": is_small_same_shape}


def candidate_tasks(datasets, families, max_cells: int) -> list[tuple[str, object]]:
    """(dataset, task) for each task of at most max_cells cells (Task.cost_estimate) in one of the families; a task
    in several datasets (ARC-AGI-2 training repeats most of ARC-AGI-1's) counts once, in the first."""
    from arc_submit.tasks import load_tasks

    found, seen = [], set()
    for name in datasets:
        for task_id, task in load_tasks(name).items():
            if task_id in seen or task.cost_estimate() > max_cells:
                continue
            if any(FAMILIES[f](task) for f in families):
                seen.add(task_id)
                found.append((name, task))
    return found


def named_tasks(specs) -> list[tuple[str, object]]:
    """'dataset:task_id' -> (dataset, task)."""
    from arc_submit.tasks import load_tasks

    out = []
    for spec in specs:
        name, _, task_id = spec.rpartition(":")
        out.append((name, load_tasks(name)[task_id]))
    return out


def shapes(task) -> str:
    """'3x3->3x3, 3x4->3x4 | test 3x3' (distinct train shapes, then the test inputs')."""
    train = sorted({f"{ex.input.shape[0]}x{ex.input.shape[1]}->{ex.output.shape[0]}x{ex.output.shape[1]}"
                    for ex in task.train})
    test = sorted({f"{ex.input.shape[0]}x{ex.input.shape[1]}" for ex in task.test})
    return f"{', '.join(train)} / test {', '.join(test)}"


def solve_one(task, engine, options: dict, budget_s: float) -> dict:
    from arc_submit.budget import Deadline
    from arc_submit.solvers import transduction

    from arc_submit.solvers import SolverContext

    opts = transduction.TRANSDUCTION.make_options(options)
    t0 = time.time()
    r = transduction.run(task, Deadline.in_seconds(budget_s), SolverContext.for_engine(engine), opts)
    seconds = time.time() - t0
    ranks = []  # per test input: where the answer is among the candidates (None: not there)
    for ex, cands in zip(task.test, r.candidates):
        ranks.append(next((i for i, c in enumerate(cands) if np.array_equal(np.asarray(c.grid), ex.output)), None))
    adapter = r.adapter
    return {"task_id": task.id, "shapes": shapes(task), "pairs": r.train_pairs,
            "steps": adapter.steps if adapter else 0,
            "loss": f"{adapter.losses[0]:.2f} -> {adapter.losses[-1]:.2f}" if adapter and adapter.losses else "-",
            "answer rank": ", ".join("-" if k is None else str(k + 1) for k in ranks),
            "solved": all(k is not None and k < 2 for k in ranks), "seconds": round(seconds, 1),
            "phases": {k: round(v, 1) for k, v in r.phases.items()}}


def answer_trace(task, engine, options: dict, every: int) -> str:
    """Whether the answer is in the top two, every `every` optimizer steps of one full training run (no deadline):
    'S' yes, '.' no. The same pairs, views, greedy sampling and vote as the solver, on the hf engine's peft model
    mid-training (a global optimizer hook: a benchmark-only look inside). A task the dry run relies on should
    turn 'S' well before the steps a busy machine leaves it, and stay 'S'."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from arc_submit.augment import augmentation_set
    from arc_submit.llm.engine import Sampling
    from arc_submit.solvers import transduction as td
    from arc_submit.solvers.common import task_rng

    opts = td.TRANSDUCTION.make_options(options)
    r = opts.prompt.resolved()
    aug = opts.augment.kwargs()
    ttt = augmentation_set(opts.ttt_augmentations, task_rng(opts.seed, task.id, 1), len(task.train), **aug)
    pairs = td.training_texts(task, ttt, engine, r, opts.train.max_seq_len, {})
    views = augmentation_set(opts.n_augmentations, task_rng(opts.seed, task.id, 2), len(task.train), **aug)
    items = td.view_prompts(task, views, engine, r, opts.max_prompt_tokens, {})
    sampling = Sampling(n=1, temperature=0.0, max_tokens=td.answer_token_budget(task, engine, r), seed=0,
                        logprobs=True)
    marks, steps = [], [0]

    def check(*_):
        steps[0] += 1
        if steps[0] % every:
            return
        model = engine.peft_model
        model.eval()
        with torch.no_grad():
            generations = engine.sampler.generate(model, [p for _, _, p in items], sampling)
        model.train()
        candidates, _ = td.vote(task, items, generations, r)
        right = all(any(np.array_equal(np.asarray(c.grid), ex.output) for c in cands[:2])
                    for ex, cands in zip(task.test, candidates))
        marks.append("S" if right else ".")

    hook = register_optimizer_step_post_hook(check)
    try:
        engine.train_adapter("trace", pairs, opts.train_settings())
    finally:
        hook.remove()
        engine.delete_adapter("trace")
    return "".join(marks)


def parse_option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--families", nargs="+", default=["colour-map"], choices=sorted(FAMILIES))
    parser.add_argument("--max-cells", type=int, default=400, help="skip larger tasks (Task.cost_estimate)")
    parser.add_argument("--tasks", nargs="*", default=[], help="dataset:task_id, run beside the candidates")
    parser.add_argument("--only-tasks", action="store_true", help="run --tasks alone, no candidate scan")
    parser.add_argument("--option", action="append", default=[], help="solver option key=JSON value, repeatable")
    parser.add_argument("--budget", type=float, default=35.0, help="seconds per task (about a dry-run task's share)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="solver seeds (the dry run uses 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a dry-run worker's share of 2 cores)")
    parser.add_argument("--trace", type=int, metavar="K",
                        help="instead: train each task fully and say every K steps whether the answer is in the top 2")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from arc_submit.kaggle_env import tiny_dry_run_options
    from arc_submit.llm import make_engine

    torch.set_num_threads(args.threads)
    options = {**tiny_dry_run_options("transduction", "hf"), **dict(parse_option(o) for o in args.option)}
    chosen = [] if args.only_tasks else candidate_tasks(args.datasets, args.families, args.max_cells)
    chosen += named_tasks(args.tasks)
    engine = make_engine("hf", "tiny", device="cpu")
    print(f"options {json.dumps(options, sort_keys=True)}; budget {args.budget:.0f} s per task; torch threads "
          f"{args.threads}; {len(chosen)} tasks; load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.trace:
        print(f"answer in the top 2 every {args.trace} steps (S yes, . no)\n| dataset | task | seed | trace |\n"
              f"|---|---|---|---|", flush=True)
        for name, task in chosen:
            for seed in args.seeds:
                trace = answer_trace(task, engine, {**options, "seed": seed}, args.trace)
                print(f"| {name} | {task.id} | {seed} | `{trace}` |", flush=True)
        engine.close()
        return 0
    header = ["dataset", "task", "train -> output shapes / test", "seed", "pairs", "steps", "loss", "answer rank",
              "solved", "seconds", "phases s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    rows = []
    for name, task in chosen:
        for seed in args.seeds:
            row = {"dataset": name, "seed": seed, **solve_one(task, engine, {**options, "seed": seed}, args.budget)}
            rows.append(row)
            phases = ", ".join(f"{k} {v}" for k, v in row["phases"].items())
            print(f"| {name} | {row['task_id']} | {row['shapes']} | {seed} | {row['pairs']} | {row['steps']} | "
                  f"{row['loss']} | {row['answer rank']} | {'yes' if row['solved'] else 'no'} | {row['seconds']} | "
                  f"{phases} |", flush=True)
    print(f"solved {sum(r['solved'] for r in rows)} of {len(rows)} runs ({len(chosen)} tasks x {len(args.seeds)} "
          f"seeds)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"options": options, "budget_s": args.budget, "rows": rows}, f, indent=1)
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
