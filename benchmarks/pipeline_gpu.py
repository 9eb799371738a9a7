"""The whole pipeline on a GPU machine: N ARC-AGI-2 evaluation tasks, a random-weight model, one worker per GPU.

    python benchmarks/pipeline_gpu.py --model /tmp/models/random-qwen0.5b --tasks 40 --minutes 7 --out runs/gpu

Build the model folder first (a separate process, so this one never touches CUDA before its workers do):
    python -c "from pathlib import Path; import sys; sys.path.insert(0, 'benchmarks'); import engines; \
               engines.model_folder('qwen0.5b', Path('/tmp/models'))"

Prints the run summary and a table: wall time, per-GPU busy fraction, tasks per worker, peak host RSS per process
tree, peak GPU memory per GPU. A random model solves nothing: this measures the plumbing (load, queue, TTT,
sampling, assembly), not accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

from arc_submit.config import EngineConfig, RunConfig, SolverConfig
from arc_submit.journal import read_events
from arc_submit.pipeline import run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--engine", default="vllm", choices=("vllm", "hf", "unsloth"))
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=7.0)
    parser.add_argument("--out", default="runs/gpu")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--solver-options", default="{}", help="JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    engine_options = {"max_model_len": 8192}
    if args.engine == "vllm":
        engine_options.update(gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=True)
    config = RunConfig(challenges="arc-agi-2/evaluation", n_tasks=args.tasks, out_dir=args.out,
                       time_limit_s=args.minutes * 60, safety_margin_s=30, monitor_interval_s=2,
                       engine=EngineConfig(args.engine, args.model, engine_options),
                       solver=SolverConfig("transduction", json.loads(args.solver_options)))
    shutil.rmtree(args.out, ignore_errors=True)
    result = run(config)
    print(result.summary())

    events = list(read_events(Path(args.out) / "journals"))
    per_worker = Counter(e["worker"] for e in events if e["event"] in ("done", "error"))
    loads = {e["worker"]: e["load_s"] for e in events if e["event"] == "ready"}
    print("\n| worker | tasks settled | engine load s | busy fraction |")
    print("|---|---|---|---|")
    for worker in sorted(set(per_worker) | set(loads)):
        print(f"| {worker} | {per_worker.get(worker, 0)} | {loads.get(worker, '')} | "
              f"{result.busy.get(worker, 0):.0%} |")
    print(f"\nwall {result.wall_s:.1f} s, peak host RSS (all trees at one instant) {result.peak_rss_gib:.2f} GiB")
    print("peak host RSS per tree GiB: " + ", ".join(f"{n} {g:.2f}" for n, g in result.peak_rss_gib_by_tree.items()))
    print("peak GPU memory MiB: " + ", ".join(f"gpu{g} {m}" for g, m in result.peak_gpu_mib.items()))
    return 0 if not result.problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
