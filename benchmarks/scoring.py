"""What the augmented scorer costs per task on a GPU: 16 candidate grids × 8 views scored with the task's adapter
in one batch (`transduction.augmented_logprobs`), for random-weight models of real shapes (benchmarks/l4.py builds
them), on real ARC-AGI-2 evaluation tasks.

    python benchmarks/scoring.py --shapes qwen2.5-0.5b qwen3-4b --tasks 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "src"))  # after PYTHONPATH: a checkout given there wins
sys.path.insert(0, str(ROOT / "benchmarks"))

from arc_submit.augment import augmentation_set  # noqa: E402
from arc_submit.llm import TrainSettings, make_engine  # noqa: E402
from arc_submit.llm.recipes import recipe  # noqa: E402
from arc_submit.solvers import transduction  # noqa: E402
from arc_submit.solvers.common import task_rng  # noqa: E402
from arc_submit.tasks import load_tasks  # noqa: E402


def candidates_for(task, n: int, rng) -> list:
    """n distinct plausible grids: the test input and copies with a few cells changed."""
    base = task.test[0].input
    out, seen = [base], {base.tobytes()}
    while len(out) < n:
        g = base.copy()
        for _ in range(rng.integers(1, 4)):
            g[rng.integers(0, g.shape[0]), rng.integers(0, g.shape[1])] = rng.integers(0, 10)
        if g.tobytes() not in seen:
            seen.add(g.tobytes())
            out.append(g)
    return out


def main() -> None:
    from l4 import build_shaped_model

    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen3-4b"])
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--views", type=int, default=8)
    args = p.parse_args()
    tasks = [t for t in load_tasks("arc-agi-2/evaluation").values() if t.cost_estimate() < 3000][:args.tasks]
    print("| shape | task | prompt tokens (mean) | pairs | first call s | scoring s | pairs/s |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        model = build_shaped_model(shape, Path("/tmp/l4-models") / shape)
        engine = make_engine("hf", str(model), device="cuda", max_model_len=8192)
        fmt = recipe("arc-submit")
        for task in tasks:
            rng = np.random.default_rng(0)
            pairs = transduction.training_texts(task, augmentation_set(2, task_rng(0, task.id, 1), len(task.train)),
                                                engine, fmt, 4096, {})
            adapter = engine.train_adapter("bench", pairs, TrainSettings(max_steps=4, lora_rank=32, lora_alpha=64))
            views = augmentation_set(args.views, task_rng(0, task.id, 2), len(task.train))
            items = [it for it in transduction.view_prompts(task, views, engine, fmt, 8192, {}) if it[0] == 0]
            grids = candidates_for(task, args.candidates, rng)
            t0 = time.time()
            transduction.augmented_logprobs(engine, items, 0, grids[:2], adapter, fmt)  # warm-up
            warm = time.time() - t0
            t0 = time.time()
            transduction.augmented_logprobs(engine, items, 0, grids, adapter, fmt)
            took = time.time() - t0
            n_pairs = len(grids) * len(items)
            tokens = np.mean([engine.count_tokens(prompt) for _, _, prompt in items])
            print(f"| {shape} | {task.id} | {tokens:.0f} | {n_pairs} | {warm:.2f} | {took:.2f} | {n_pairs / took:.1f} |",
                  flush=True)
            engine.delete_adapter(adapter)
        engine.close()


if __name__ == "__main__":
    main()
