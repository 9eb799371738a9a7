"""The shared task queue under load: makespan against the ideal, busy fraction per worker, a worker SIGKILLed
mid-run and its task retried. Runs `pipeline.run` for real (spawned workers, journals, assembly).

    python benchmarks/task_queue.py --workers 4 --kill-after 10                      # CPU: 4 workers, a sleeping solver
    python benchmarks/task_queue.py --workers 2 --engine hf --model tiny --solver transduction --tasks 20   # one GPU

The CPU default is the named TEST DOUBLE `doubles.solvers:cost_sleeper` (sleeps in proportion to the real task's
size) on the 120 ARC-AGI-2 evaluation tasks: the queue's behaviour without a model's noise. Prints a table; with
--out, writes report.md, timeline.png and memory.png there too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the solver test double

from arc_submit.config import EngineConfig, RunConfig, SolverConfig  # noqa: E402
from arc_submit.journal import read_events  # noqa: E402


def killer(journal_dir: Path, after: int, stop: threading.Event, killed: list) -> None:
    """Once `after` tasks are done, SIGKILL the worker of a task in flight (its pid is in the task's start event)."""
    while not stop.is_set():
        events = list(read_events(journal_dir)) if journal_dir.is_dir() else []
        done = {e["task_id"] for e in events if e["event"] == "done"}
        if len(done) >= after:
            in_flight = [e for e in events if e["event"] == "start" and e["task_id"] not in done]
            if in_flight:
                victim = in_flight[-1]
                try:
                    os.kill(victim["pid"], signal.SIGKILL)
                    killed.append((victim["task_id"], victim["worker"], victim["pid"]))
                except ProcessLookupError:
                    continue
                return
        time.sleep(0.2)


def queue_stats(events: list[dict], n_workers: int) -> dict:
    spans = defaultdict(list)  # worker -> [(start, end)]
    starts = {}
    for e in sorted(events, key=lambda e: e["t"]):
        if e["event"] == "start":
            starts[e["task_id"]] = (e["t"], e["worker"])
        elif e["event"] in ("done", "error", "killed", "timeout") and e["task_id"] in starts:
            t0, worker = starts.pop(e["task_id"])
            spans[worker].append((t0, e["t"]))
    work = sum(b - a for ss in spans.values() for a, b in ss)
    first = min(a for ss in spans.values() for a, _ in ss)
    last = max(b for ss in spans.values() for _, b in ss)
    busy = {w: sum(b - a for a, b in ss) / max(max(b for _, b in ss) - min(a for a, _ in ss), 1e-9)
            for w, ss in sorted(spans.items())}
    return {"makespan_s": last - first, "ideal_s": work / n_workers, "busy": busy, "tasks": sum(map(len, spans.values()))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--tasks", type=int, default=120)
    p.add_argument("--solver", default="doubles.solvers:cost_sleeper")
    p.add_argument("--options", default="{seconds_per_kcell: 0.5}", help="solver options, YAML")
    p.add_argument("--engine", default="none")
    p.add_argument("--model", default="tiny")
    p.add_argument("--kill-after", type=int, default=10, help="SIGKILL a busy worker once this many tasks are done")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--emulate-gpu-gib", type=float)
    p.add_argument("--out", default="runs/queue")
    args = p.parse_args()
    import yaml

    from arc_submit.pipeline import run
    from arc_submit.submission import validate
    from arc_submit.tasks import load_tasks

    out = Path(args.out)
    config = RunConfig(challenges="arc-agi-2/evaluation", n_tasks=args.tasks, out_dir=str(out), workers=args.workers,
                       time_limit_s=args.minutes * 60, safety_margin_s=30, monitor_interval_s=1.0,
                       emulate_gpu_gib=args.emulate_gpu_gib, engine=EngineConfig(args.engine, args.model),
                       solver=SolverConfig(args.solver, yaml.safe_load(args.options) or {}))
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=killer, args=(out / "journals", args.kill_after, stop, killed), daemon=True)
    watcher.start()
    t0 = time.time()
    result = run(config)
    stop.set()
    events = list(read_events(out / "journals"))
    stats = queue_stats(events, args.workers)
    tasks = load_tasks("arc-agi-2/evaluation", limit=args.tasks)
    import json

    submission = json.loads((out / "submission.json").read_text())
    retried = [(tid, [e["event"] for e in events if e["task_id"] == tid and e["event"] in ("start", "killed", "done")])
               for tid, _, _ in killed]
    print(f"| workers | tasks | makespan s | ideal s | ratio | busy (first to last task) | killed | retried as | "
          f"valid | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    busy = ", ".join(f"{w} {f:.1%}" for w, f in stats["busy"].items())
    print(f"| {args.workers} | {len(tasks)} | {stats['makespan_s']:.1f} | {stats['ideal_s']:.1f} | "
          f"{stats['makespan_s'] / stats['ideal_s']:.3f} | {busy} | {killed} | {retried} | "
          f"{not validate(submission, tasks)} | {time.time() - t0:.1f} |")
    print(f"statuses {result.statuses}; peak RSS GiB {result.peak_rss_gib_by_tree}; peak GPU MiB {result.peak_gpu_mib}")


if __name__ == "__main__":
    main()
