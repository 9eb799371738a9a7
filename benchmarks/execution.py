"""Throughput, latency and memory of sandboxed program execution (arc_submit.execution).

Runs N generated programs (default 2,000: realistic numpy grid transforms written for this benchmark, plus 5%
adversarial ones) over real ARC-AGI-1 training tasks; one run = one program on every train and test input of
its task. Every program text is distinct (as LLM samples are), so de-duplication saves nothing here.

Rows: "runner/32" (the design: a runner forked from a warm zygote runs up to 32 programs, replaced after any
timeout, crash or stray child) with 1 and 2 workers on the mixed set, and on realistic programs only; "fork each"
(a fresh fork per program, programs_per_process=1). The persistent in-process pool this design was compared with
(6,305 runs/s on realistic programs, 2 workers; execution.py's docstring) is no longer an option of the executor:
it was unsafe, and kept only for this comparison.

    .venv/bin/python benchmarks/execution.py [--programs 2000] [--timeout 0.5]
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time

import numpy as np
import psutil

from arc_submit.execution import Executor, error_counts
from arc_submit.tasks import load_tasks

# Realistic grid transforms, in the style LLM-written ARC programs take: numpy one-liners and python loops.
# {a} {b} {k} are filled per sample.
REALISTIC = [
    "return np.rot90(grid, {k})",
    "return np.flip(grid, axis={axis})",
    "return grid.T.copy()",
    "out = grid.copy()\n    out[grid == {a}] = {b}\n    return out",
    "out = grid.copy()\n    out[grid == {a}] = {b}\n    out[grid == {b}] = {a}\n    return out",
    "rows, cols = np.nonzero(grid != {a})\n    if rows.size == 0:\n        return grid\n"
    "    return grid[rows.min():rows.max() + 1, cols.min():cols.max() + 1]",
    "if grid.shape[0] * {k} > 30 or grid.shape[1] * {k} > 30:\n        return grid\n    return np.tile(grid, ({k}, {k}))",
    "if grid.shape[0] * {k} > 30 or grid.shape[1] * {k} > 30:\n        return grid\n"
    "    return np.kron(grid, np.ones(({k}, {k}), dtype=int))",
    "out = np.zeros_like(grid)\n    for c in range(grid.shape[1]):\n        col = [v for v in grid[:, c] if v != 0]\n"
    "        if col:\n            out[-len(col):, c] = col\n    return out",
    "out = grid.copy()\n    out[out == 0] = {b}\n    return out",
    "out = grid.copy()\n    out[0, :] = {b}\n    out[-1, :] = {b}\n    out[:, 0] = {b}\n    out[:, -1] = {b}\n    return out",
    "return np.full_like(grid, np.bincount(grid.ravel(), minlength=10).argmax())",
    "if grid.shape[1] * 2 > 30:\n        return grid\n    return np.hstack([grid, grid[:, ::-1]])",
    "if grid.shape[0] * 2 > 30:\n        return grid\n    return np.vstack([grid, grid[::-1]])",
    "return np.where(grid == {a}, {a}, 0)",
    "return np.maximum(grid, grid[:, ::-1])",
    "return grid[::2, ::2]",
    # flood fill the background reachable from the border; colour what stays enclosed
    "h, w = grid.shape\n    seen = np.zeros_like(grid, dtype=bool)\n    stack = [(r, c) for r in range(h) for c in range(w)"
    "\n             if (r in (0, h - 1) or c in (0, w - 1)) and grid[r, c] == 0]\n    while stack:\n"
    "        r, c = stack.pop()\n        if seen[r, c]:\n            continue\n        seen[r, c] = True\n"
    "        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):\n            rr, cc = r + dr, c + dc\n"
    "            if 0 <= rr < h and 0 <= cc < w and not seen[rr, cc] and grid[rr, cc] == 0:\n"
    "                stack.append((rr, cc))\n    out = grid.copy()\n    out[(grid == 0) & ~seen] = {b}\n    return out",
    # the largest 4-connected object, cropped
    "from collections import deque\n    h, w = grid.shape\n    label = -np.ones((h, w), dtype=int)\n    best = []\n"
    "    for r in range(h):\n        for c in range(w):\n            if grid[r, c] == 0 or label[r, c] >= 0:\n"
    "                continue\n            cells, queue = [], deque([(r, c)])\n            label[r, c] = 1\n"
    "            while queue:\n                y, x = queue.popleft()\n                cells.append((y, x))\n"
    "                for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):\n"
    "                    if 0 <= yy < h and 0 <= xx < w and label[yy, xx] < 0 and grid[yy, xx] != 0:\n"
    "                        label[yy, xx] = 1\n                        queue.append((yy, xx))\n"
    "            if len(cells) > len(best):\n                best = cells\n    if not best:\n        return grid\n"
    "    ys, xs = zip(*best)\n    return grid[min(ys):max(ys) + 1, min(xs):max(xs) + 1]",
    # extend every coloured cell to the right edge
    "out = grid.copy()\n    for r in range(grid.shape[0]):\n        for c in range(grid.shape[1]):\n"
    "            if grid[r, c] != 0:\n                out[r, c:] = np.where(out[r, c:] == 0, grid[r, c], out[r, c:])\n"
    "    return out",
    # outline: keep coloured cells that touch the background
    "p = np.pad(grid, 1)\n    inner = (p[:-2, 1:-1] != 0) & (p[2:, 1:-1] != 0) & (p[1:-1, :-2] != 0) & (p[1:-1, 2:] != 0)\n"
    "    return np.where((grid != 0) & ~inner, grid, 0)",
    "counts = np.bincount(grid.ravel(), minlength=10)\n    counts[0] = 0\n"
    "    return np.array([[int(counts.argmax())]])",
]

ADVERSARIAL = [  # one hang in three kinds, as LLM output goes wrong: loops, crashes, bad outputs
    "while True:\n        pass",
    "while True:\n        try:\n            while True:\n                pass\n        except:\n            pass",
    "raise ValueError('model wrote a bug')",
    "return None",
    "return np.zeros((40, 40), dtype=int)",
    "return grid * 0.5",
    "import sys\n    sys.exit(1)",
    "import os\n    os._exit(0)",
    "big = np.ones(10 * 1024**3, dtype=np.uint8)\n    return grid",
    "print('x' * 10_000_000)\n    return grid",
    "def f(n):\n        return f(n + 1)\n    return f(0)",
    "return grid[",  # syntax error
]


def make_programs(n: int, task_ids: list[str], adversarial_share: float, seed: int = 0,
                  realistic_only: bool = False) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    programs = []
    for i in range(n):
        task_id = task_ids[i % len(task_ids)]
        adversarial = not realistic_only and rng.random() < adversarial_share
        body = rng.choice(ADVERSARIAL if adversarial else REALISTIC).format(
            a=rng.randrange(10), b=rng.randrange(10), k=rng.randrange(1, 4), axis=rng.randrange(2))
        programs.append((task_id, f"import numpy as np\n\n# sample {i}\ndef transform(grid):\n    {body}\n"))
    return programs


class PeakRss:
    """Peak summed RSS of this process's descendants (the workers and their program children), sampled."""

    def __init__(self, interval_s: float = 0.02):
        self.peak, self._stop, self._interval = 0, threading.Event(), interval_s
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(label: str, programs, tasks, workers: int, timeout_s: float, programs_per_process: int = 32) -> dict:
    by_task: dict[str, list[str]] = {}
    for task_id, code in programs:
        by_task.setdefault(task_id, []).append(code)
    batches = [(codes, [ex.input for ex in (*tasks[tid].train, *tasks[tid].test)]) for tid, codes in by_task.items()]
    with Executor(workers=workers, timeout_s=timeout_s, programs_per_process=programs_per_process) as ex:
        ex.run(["def transform(grid):\n    return grid\n"], batches[0][1])  # zygotes up before the clock starts
        with PeakRss() as rss:
            started = time.perf_counter()
            per_task = ex.run_tasks(batches)
            wall = time.perf_counter() - started
        restarts = ex.restarts
    results = [r for rs in per_task for r in rs]
    seconds = np.array([r.seconds for r in results])
    counts = error_counts(results)
    hangs = int(np.sum(seconds > timeout_s + 1.0))
    # Waiting out deliberate timeouts is the price of the timeout, not of the executor: shown separately.
    busy_without_timeouts = wall - counts["timeout"] * timeout_s / workers
    return {"label": label, "workers": workers, "programs": len(results), "wall_s": wall,
            "runs_per_s": len(results) / wall, "runs_per_s_excl_timeouts": len(results) / busy_without_timeouts,
            "p50_ms": 1000 * np.percentile(seconds, 50), "p99_ms": 1000 * np.percentile(seconds, 99),
            "peak_rss_mb": rss.peak / 2**20, "hangs": hangs, "restarts": restarts,
            "classes": ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=100, help="first N arc-agi-1/training tasks")
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--adversarial", type=float, default=0.05)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    tasks = load_tasks("arc-agi-1/training", limit=args.tasks)
    ids = list(tasks)
    mixed = make_programs(args.programs, ids, args.adversarial)
    realistic = make_programs(args.programs, ids, 0.0, seed=1, realistic_only=True)
    runs = [("runner/32, 5% adversarial", mixed, 1, 32), ("runner/32, 5% adversarial", mixed, 2, 32),
            ("fork each, 5% adversarial", mixed, 2, 1), ("runner/32, realistic only", realistic, 2, 32),
            ("fork each, realistic only", realistic, 2, 1)]
    rows = [measure(label, progs, tasks, w, args.timeout, n) for label, progs, w, n in runs]
    inputs_per_run = np.mean([len(t.train) + len(t.test) for t in tasks.values()])
    print(f"\n{args.programs} programs over {len(tasks)} arc-agi-1/training tasks "
          f"(mean {inputs_per_run:.1f} inputs per run), timeout {args.timeout:g} s, "
          f"{len(os.sched_getaffinity(0))} CPUs, load average before: {load_before:.2f}")
    header = (f"| {'programs (runner, mix)':<26} | workers | runs | wall s | runs/s | runs/s excl. timeout waits "
              f"| p50 ms | p99 ms | peak RSS MB | hangs | restarts | outcomes")
    print(header)
    print("|" + "|".join("-" * (len(c) + 2) for c in header.strip("| ").split(" | ")) + "|")
    for r in rows:
        print(f"| {r['label']:<26} | {r['workers']:>7} | {r['programs']:>4} | {r['wall_s']:>6.2f} | "
              f"{r['runs_per_s']:>6.0f} | {r['runs_per_s_excl_timeouts']:>26.0f} | {r['p50_ms']:>6.1f} | "
              f"{r['p99_ms']:>6.1f} | {r['peak_rss_mb']:>11.0f} | {r['hangs']:>5} | {r['restarts']:>8} | "
              f"{r['classes']}")


if __name__ == "__main__":
    main()
