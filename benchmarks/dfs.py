"""Depth-first search over answers against greedy decoding, over the same views of each task after the same
test-time training: seconds per task and candidates found (transduction's `decoding: dfs`, llm/dfs.py).

    PYTHONPATH=src .venv/bin/python benchmarks/dfs.py                          # CPU: the tiny model, the dry-run tasks
    PYTHONPATH=src python benchmarks/dfs.py --engine hf --model /models/qwen3-4b --tasks arc-agi-2/evaluation:10 \\
        --option recipe=nvarc --train-s 120 --out benchmarks/results/dfs-<gpu>-<date>.md

Per task: one LoRA trained (the transduction solver's texts and settings, within --train-s seconds), the test
inputs' --views views (the identity first, as the solver makes them), then each decoding over those same prompts
with that adapter: greedy (one generate() of every view) and dfs at each --min-prob (engine.dfs in batches of
views_per_batch). Training is not counted; decoding is, prompts included. Columns, averaged over tasks:
seconds decoding, distinct grids per test input after voting, answers found per view, probability mass found
per view (dfs: the share of the model's answers its candidates cover), forward steps (dfs), and "right@2": test
inputs whose answer is among the first two candidates (when the dataset has solutions).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="hf")
    p.add_argument("--model", default="tiny")
    p.add_argument("--tasks", nargs="*", default=None,
                   help="DATASET:N (the first N tasks) or DATASET:id,id; default: the dry run's 8 tasks")
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--min-prob", type=float, nargs="*", default=[0.05, 0.1, 0.2])
    p.add_argument("--train-s", type=float, default=40.0, help="test-time training budget per task")
    p.add_argument("--option", action="append", default=[], help="a transduction option, key=value (repeatable)")
    p.add_argument("--engine-option", action="append", default=[], help="an engine option, key=value")
    p.add_argument("--out", default=None, help="also write the table (markdown) here")
    return p.parse_args()


def load(specs):
    from arc_submit.kaggle_env import DRY_RUN_SLICE
    from arc_submit.tasks import load_tasks

    if not specs:
        specs = [f"{name}:{','.join(ids)}" for name, ids in DRY_RUN_SLICE.items()]
    tasks = {}
    for spec in specs:
        name, _, which = spec.partition(":")
        every = load_tasks(name)
        ids = list(every)[:int(which)] if which.isdigit() else (which.split(",") if which else list(every))
        tasks.update({tid: every[tid] for tid in ids})
    return tasks


def key_values(pairs) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def decode_all(engine, task, items, adapter, opts, max_tokens, r, min_probs):
    """{decoding: row of measurements} for one task, every decoding over the same prompts and adapter."""
    from arc_submit.llm.engine import Sampling, Search
    from arc_submit.solvers.transduction import vote

    texts = [p for _, _, p in items]
    rows = {}
    t0 = time.time()
    greedy = engine.generate(texts, Sampling(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=True), adapter)
    rows["greedy"] = measure(task, items, greedy, time.time() - t0, r, vote(task, items, greedy, r)[0])
    for p in min_probs:
        search = Search(min_prob=p, max_tokens=max_tokens, max_candidates=opts.max_candidates_per_view)
        t0 = time.time()
        completions, masses, steps = [], [], 0
        for start in range(0, len(texts), opts.views_per_batch):
            found = engine.dfs(texts[start:start + opts.views_per_batch], search, adapter)
            completions += found.completions
            masses += [found.mass(k) for k in range(len(found.completions))]
            steps += found.steps
        seconds = time.time() - t0
        ranked = vote(task, items, completions, r, per_view=True)[0]
        rows[f"dfs {p:g}"] = measure(task, items, completions, seconds, r, ranked, masses, steps)
    return rows


def measure(task, items, generations, seconds, r, ranked, masses=None, steps=None) -> dict:
    right = [t.output is not None and any(np.array_equal(c.grid, t.output) for c in cands[:2])
             for t, cands in zip(task.test, ranked)]
    return {"seconds": seconds, "grids per test input": float(np.mean([len(c) for c in ranked])),
            "answers per view": float(np.mean([len(g) for g in generations])),
            "mass per view": None if masses is None else float(np.mean(masses)),
            "steps": steps, "right@2": sum(right), "test inputs": len(task.test)}


def table(per_task: list[dict]) -> str:
    names = list(per_task[0])
    lines = ["| decoding | s/task | grids per test input | answers per view | p mass per view | dfs steps | right@2 |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        rows = [t[name] for t in per_task]
        mass = [r["mass per view"] for r in rows if r["mass per view"] is not None]
        steps = [r["steps"] for r in rows if r["steps"] is not None]
        lines.append(f"| {name} | {np.mean([r['seconds'] for r in rows]):.2f} | "
                     f"{np.mean([r['grids per test input'] for r in rows]):.2f} | "
                     f"{np.mean([r['answers per view'] for r in rows]):.2f} | "
                     f"{f'{np.mean(mass):.3f}' if mass else '-'} | {f'{np.mean(steps):.0f}' if steps else '-'} | "
                     f"{sum(r['right@2'] for r in rows)}/{sum(r['test inputs'] for r in rows)} |")
    return "\n".join(lines)


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    from arc_submit.augment import augmentation_set
    from arc_submit.budget import Deadline
    from arc_submit.kaggle_env import tiny_dry_run_options
    from arc_submit.llm import make_engine
    from arc_submit.solvers import transduction
    from arc_submit.solvers.common import task_rng
    from arc_submit.solvers.transduction import TRANSDUCTION

    base = tiny_dry_run_options("transduction", args.engine) if args.model == "tiny" else {}
    opts = TRANSDUCTION.make_options({**base, "n_augmentations": args.views, **key_values(args.option)})
    engine = make_engine(args.engine, args.model, **key_values(args.engine_option))
    r = opts.prompt.resolved()
    tasks = load(args.tasks)
    per_task, trained_steps = [], []
    for tid, task in tasks.items():
        max_tokens = opts.max_tokens or transduction.answer_token_budget(task, engine, r)
        limit = opts.max_prompt_tokens or engine.model_settings.max_model_len - max_tokens
        ttt = augmentation_set(opts.ttt_augmentations, task_rng(opts.seed, tid, 1), len(task.train),
                               **opts.augment.kwargs())
        pairs = transduction.training_texts(task, ttt, engine, r, opts.train.max_seq_len, {})
        adapter = engine.train_adapter("bench", pairs, opts.train_settings(), Deadline.in_seconds(args.train_s)) \
            if pairs else None
        trained_steps.append(adapter.steps if adapter else 0)
        views = augmentation_set(opts.n_augmentations, task_rng(opts.seed, tid, 2), len(task.train),
                                 **opts.augment.kwargs())
        items = transduction.view_prompts(task, views, engine, r, limit, {})
        if items:
            per_task.append(decode_all(engine, task, items, adapter, opts, max_tokens, r, args.min_prob))
            print(tid, {k: round(v["seconds"], 2) for k, v in per_task[-1].items()}, flush=True)
        engine.delete_adapter("bench")
    text = "\n".join([
        f"# dfs against greedy, {datetime.date.today().isoformat()}", "",
        f"engine {args.engine}, model {args.model}, {len(per_task)} tasks ({', '.join(tasks)}), {args.views} views, "
        f"test-time training up to {args.train_s:g} s per task (mean {np.mean(trained_steps):.0f} steps), "
        f"max_candidates_per_view {opts.max_candidates_per_view}, views_per_batch {opts.views_per_batch}", "",
        table(per_task), ""])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    engine.close()


if __name__ == "__main__":
    main()
