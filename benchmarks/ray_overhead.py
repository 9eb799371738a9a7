"""What the Ray backend costs over the local one: the same N tasks, identical settings, run once per backend.

    python benchmarks/ray_overhead.py --model /tmp/models/random-qwen0.5b --tasks 10 --out runs/ray-overhead
    python benchmarks/ray_overhead.py --engine hf --model tiny --tasks 3 --emulate-gpu-gib 0   # CPU: the plumbing

On the GPU machine, benchmarks/ray_overhead.sh (gpu_session.sh ray-overhead) builds the random-weight model and runs
this under L4 emulation. Each backend runs the first N ARC-AGI-2 evaluation tasks through transduction with the
same engine, model, seed, time limit and solver options, into OUT/<backend>/ (emptied first); `backend: ray`
starts a Ray instance on this machine for the run unless --ray-address names a cluster to join.

From each run's journals (OUT/<backend>/journals) a row per backend, then Ray less local:
- settled: tasks with a final event (done / error / timeout / killed / skipped), of which done
- load s: the workers' `ready` events' load_s (one per engine load, so a restarted worker shows two)
- wall s: pipeline.run's wall time (RunResult.wall_s); the whole call, Ray's start and stop included, is printed
  below the table
- busy s: the sum of the `done` / `error` events' seconds (a task's time inside its worker)
- hand-out gap ms: per worker, from one task's final event (`done` or `error`, journaled by the worker) to that
  worker's next `start`: the round trip of asking for and receiving the next task; mean and max over all gaps
- first hand-out ms: per worker, from its `ready` to its first `start`
- overhead s/task: (workers × wall − Σ load − busy) / settled: what neither loading nor solving accounts for, per
  task (one worker: (wall − load − busy) / tasks), the run's start-up and ending included
- the last row, Ray less local: settled, the loads' sum, wall and busy divided by the tasks, the gaps, the overhead
  per task
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "src"))  # after an installed or PYTHONPATH arc_submit: never shadows it

from arc_submit.journal import FINAL_EVENTS, read_events  # noqa: E402

WORKER_FINAL = ("done", "error")  # the final events a worker journals itself, right before it asks for the next task
BACKENDS = ("local", "ray")


def summarize(journals: str | Path, wall_s: float | None = None) -> dict:
    """One backend's row from its journals folder. wall_s: the run's wall time (None: the journals' first to last
    event, which leaves out what came before the first worker journaled)."""
    events = list(read_events(journals))
    final: dict[str, str] = {}  # task -> its last final event
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e["task_id"] is not None and e["event"] in FINAL_EVENTS:
            final[e["task_id"]] = e["event"]
        by_worker[e["worker"]].append(e)
    loads = [e["load_s"] for e in events if e["event"] == "ready" and isinstance(e.get("load_s"), (int, float))]
    busy = sum(e.get("seconds") or 0.0 for e in events if e["event"] in WORKER_FINAL)
    gaps, first = [], []
    workers = set()
    for worker, evs in by_worker.items():
        ended_at = ready_at = None
        for e in evs:  # one journal's own order (read_events keeps it)
            if e["event"] == "ready":
                workers.add(worker)
                ready_at, ended_at = e["t"], None  # a restarted worker: its gap to the first task is a hand-out too
            elif e["event"] == "start":
                if ended_at is not None:
                    gaps.append(e["t"] - ended_at)
                elif ready_at is not None:
                    first.append(e["t"] - ready_at)
                ended_at = ready_at = None
            elif e["event"] in WORKER_FINAL and e["task_id"] is not None:
                ended_at = e["t"]
    if wall_s is None:
        wall_s = (events[-1]["t"] - events[0]["t"]) if events else 0.0
    settled = len(final)
    n_workers = max(len(workers), 1)
    overhead = (n_workers * wall_s - sum(loads) - busy) / settled if settled else None
    return {"settled": settled, "statuses": dict(Counter(final.values())), "workers": len(workers),
            "load_s": loads, "wall_s": wall_s, "busy_s": busy,
            "gap_ms_mean": statistics.mean(gaps) * 1e3 if gaps else None,
            "gap_ms_max": max(gaps) * 1e3 if gaps else None, "gaps": len(gaps),
            "first_ms_mean": statistics.mean(first) * 1e3 if first else None,
            "overhead_s_per_task": overhead}


def _num(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _diff(a, b):
    return None if a is None or b is None else a - b


def table(rows: dict[str, dict]) -> str:
    """Markdown: a row per backend (in the order given), then Ray less local when both ran."""
    lines = ["| backend | settled (done) | workers | load s | wall s | busy s | hand-out gap ms mean / max (n) | "
             "first hand-out ms | overhead s/task |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['settled']} ({r['statuses'].get('done', 0)}) | {r['workers']} | "
                     f"{' / '.join(f'{x:.1f}' for x in r['load_s']) or '-'} | {r['wall_s']:.1f} | {r['busy_s']:.1f} | "
                     f"{_num(r['gap_ms_mean'])} / {_num(r['gap_ms_max'])} ({r['gaps']}) | "
                     f"{_num(r['first_ms_mean'])} | {_num(r['overhead_s_per_task'], 2)} |")
    if "ray" in rows and "local" in rows:
        ray, local = rows["ray"], rows["local"]
        n = max(ray["settled"], local["settled"], 1)
        per_task = lambda key: _diff(ray[key], local[key]) / n if _diff(ray[key], local[key]) is not None else None
        lines.append(f"| ray − local | {ray['settled'] - local['settled']:+d} | | "
                     f"{_num(_diff(sum(ray['load_s']), sum(local['load_s'])), 1)} (all loads) | "
                     f"{_num(per_task('wall_s'), 2)}/task | {_num(per_task('busy_s'), 2)}/task | "
                     f"{_num(_diff(ray['gap_ms_mean'], local['gap_ms_mean']))} / "
                     f"{_num(_diff(ray['gap_ms_max'], local['gap_ms_max']))} | "
                     f"{_num(_diff(ray['first_ms_mean'], local['first_ms_mean']))} | "
                     f"{_num(_diff(ray['overhead_s_per_task'], local['overhead_s_per_task']), 2)} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="a model folder (engines.model_folder), or tiny: the built-in one")
    p.add_argument("--engine", default="vllm", choices=("vllm", "hf"))
    p.add_argument("--tasks", type=int, default=10, help="the first N ARC-AGI-2 evaluation tasks")
    p.add_argument("--minutes", type=float, default=3.0, help="each run's time limit (30 s of it kept back)")
    p.add_argument("--out", default="runs/ray-overhead")
    p.add_argument("--emulate-gpu-gib", type=float, default=22.3, help="L4 emulation; 0: none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS, help="run in this order")
    p.add_argument("--ray-address", default=None, help="the cluster to join; none: a Ray instance for the run")
    p.add_argument("--workers", type=int, default=None, help="none: one per GPU (cpu_workers without one)")
    p.add_argument("--cuda-graphs", action="store_true", help="vllm: CUDA graphs (slower start); default eager")
    p.add_argument("--engine-options", default="{}", help="more engine options, JSON")
    p.add_argument("--solver-options", default="{}", help="transduction options, JSON")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace, backend: str) -> dict:
    """load_config's keyword arguments for one backend's run: everything but backend, ray_address and out_dir is
    the same for both."""
    engine_options = {"max_model_len": 8192}
    if args.engine == "vllm" and not args.cuda_graphs:
        engine_options["enforce_eager"] = True
    engine_options.update(json.loads(args.engine_options))
    out = {"challenges": "arc-agi-2/evaluation", "n_tasks": args.tasks, "out_dir": str(Path(args.out) / backend),
           "time_limit_s": args.minutes * 60, "safety_margin_s": 30, "monitor_interval_s": 2, "seed": args.seed,
           "emulate_gpu_gib": args.emulate_gpu_gib or None, "backend": backend,
           "engine": {"kind": args.engine, "model": args.model, "options": engine_options},
           "solver": {"name": "transduction", "options": json.loads(args.solver_options)},
           "priority": ["transduction"]}
    if args.workers is not None:
        out["workers"] = args.workers
    if backend == "ray" and args.ray_address:
        out["ray_address"] = args.ray_address
    return out


def run_backend(args: argparse.Namespace, backend: str) -> tuple[dict, float]:
    """One backend's run; its row and the whole call's seconds (Ray's start and shutdown included)."""
    from arc_submit.config import load_config
    from arc_submit.pipeline import run

    config = load_config(None, **overrides(args, backend))
    shutil.rmtree(config.out_dir, ignore_errors=True)
    t0 = time.time()
    result = run(config)
    call_s = time.time() - t0
    print(f"## {backend}\n{result.summary()}\n", flush=True)
    row = summarize(Path(config.out_dir) / "journals", result.wall_s)
    row["call_s"] = call_s
    row["problems"] = result.problems
    return row, call_s


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    rows = {}
    for backend in args.backends:
        rows[backend], _ = run_backend(args, backend)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "ray_overhead.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(table(rows))
    print("\n" + "; ".join(f"{b}: run() wall {r['wall_s']:.1f} s, whole call {r['call_s']:.1f} s"
                           for b, r in rows.items()))
    print(f"total wall time {time.time() - t0:.1f} s ({len(args.backends)} runs, {args.tasks} tasks each, "
          f"engine {args.engine}, model {args.model}, emulate_gpu_gib {args.emulate_gpu_gib or None})")
    return 0 if all(r["settled"] == args.tasks and not r["problems"] for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
