"""The run's report, next to submission.json: a per-task table and pictures a person would rather look at.

- report.md / tasks.csv: per task: status, solver(s) of the chosen attempts, seconds, candidates, score if known
- timeline.png: one row per worker, a bar per task labelled with its id (green done, red error/killed/timeout),
  and the run's deadline
- memory.png: host RSS per process tree and free RAM over time
- tasks/<id>.png: a few tasks with their train pairs, test input, attempts and (if known) the answer
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on Kaggle or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from .fileio import safe_file_name, write_bytes_atomic, write_text_atomic  # noqa: E402
from .journal import TaskRecord  # noqa: E402
from .select import Choice  # noqa: E402
from .submission import ScoreReport  # noqa: E402
from .tasks import Task  # noqa: E402

# The palette ARC viewers use, so pictures look like the tasks people know.
ARC_COLOURS = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B",
               "#7FDBFF", "#870C25"]
ARC_CMAP = ListedColormap(ARC_COLOURS)
STATUS_COLOURS = {"done": "#2ECC40", "error": "#FF4136", "killed": "#B10DC9", "timeout": "#FF851B"}


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def task_rows(tasks: Mapping[str, Task], records: Mapping[str, TaskRecord],
              choices: Mapping[str, Sequence[Sequence[Choice]]], score: ScoreReport | None) -> list[dict]:
    per_task_score = {t.task_id: t for t in score.tasks} if score else {}
    rows = []
    for task_id, task in tasks.items():
        rec = records.get(task_id)
        picked = choices.get(task_id, [])
        solvers = sorted({s for per_test in picked for c in per_test for s in c.solvers})
        n_cands = sum(c.count for cands in (rec.candidates.values() if rec else []) for c in cands)
        ts = per_task_score.get(task_id)
        rows.append({
            "task_id": task_id,
            "status": rec.status if rec else "pending",
            "solvers": "+".join(solvers) or "fallback",
            "seconds": round(rec.seconds, 1) if rec else 0.0,
            "candidates": n_cands,
            "per solver": per_solver_cell(rec),
            "tests": len(task.test),
            "score": "" if ts is None else round(ts.fraction, 3),
        })
    return rows


def attempt_precision(tasks: Mapping[str, Task], choices: Mapping[str, Sequence[Sequence[Choice]]]) -> list[str]:
    """Per solver, when the answers are known: how often its grid in attempt_1 / attempt_2 was right
    ("icecuber: attempt_1 12/40 right, attempt_2 3/25 right"). A grid several solvers proposed counts for each."""
    tally: dict[str, list[int]] = {}
    for tid, task in tasks.items():
        for t, picked in enumerate(choices.get(tid, [])):
            truth = task.test[t].output if t < len(task.test) else None
            if truth is None:
                continue
            for slot, choice in enumerate(picked[:2]):
                right = np.array_equal(np.asarray(choice.grid), truth)
                for solver in choice.solvers:
                    counts = tally.setdefault(solver, [0, 0, 0, 0])
                    counts[2 * slot] += right
                    counts[2 * slot + 1] += 1
    return [f"{solver}: attempt_1 {c[0]}/{c[1]} right, attempt_2 {c[2]}/{c[3]} right"
            for solver, c in sorted(tally.items())]


# Notes whose text the table shows: dfs's candidates and probability mass found per test input (transduction's
# `decoding: dfs`); other notes (an out-of-memory fallback) show their kind only.
SHOWN_NOTES = frozenset({"dfs"})


def per_solver_cell(rec: TaskRecord | None) -> str:
    """'induction 12.3s 4 cands, transduction 20.1s 8 cands' from the solver events; notes (OOM) appended."""
    if rec is None:
        return ""
    parts = []
    for e in rec.events:
        if e["event"] == "solver-done":
            parts.append(f"{e.get('solver')} {e.get('seconds', 0):.1f}s {e.get('candidates', 0)} cands")
        elif e["event"] in ("solver-error", "solver-skipped"):
            parts.append(f"{e.get('solver')} {e['event'].split('-')[1]}")
        elif e["event"] == "note" and e.get("kind") in SHOWN_NOTES:
            parts.append(f"{e.get('kind')}: {e.get('text')}")
        elif e["event"] == "note":
            parts.append(f"note: {e.get('kind')}")
    return ", ".join(parts)


def write_table(rows: list[dict], out_dir: Path, summary_lines: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["task_id"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_dir / "tasks.csv", buf.getvalue())
    header = "| " + " | ".join(rows[0]) + " |" if rows else ""
    lines = ["# arc_submit run report", "", *summary_lines, "", header,
             "|" + "---|" * (len(rows[0]) if rows else 1)]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    write_text_atomic(out_dir / "report.md", text)
    return text


def task_bars(events: list[dict]) -> dict[str, list[tuple[float, float, str, str]]]:
    """Per worker: (start, end, final status, task id) of each task, from its start to its final event."""
    bars: dict[str, list[tuple[float, float, str, str]]] = {}
    open_starts: dict[tuple[str, str], float] = {}
    final = {"done", "error", "killed", "timeout"}
    for e in events:
        worker = e.get("worker", "")
        if e["event"] == "start":
            open_starts[(worker, e["task_id"])] = e["t"]
        elif e["event"] in final:
            # The supervisor journals kills on behalf of the worker it killed.
            if worker == "supervisor" and "worker_id" in e:
                worker = f"worker-{e['worker_id']}"
            t0 = open_starts.pop((worker, e["task_id"]), None)
            if t0 is not None:
                bars.setdefault(worker, []).append((t0, e["t"], e["event"], e["task_id"]))
    return bars


LABEL_FONT_PT = 8
ROW_HEIGHT_IN = 0.7  # tall enough for an 8-character task id written upright across a narrow bar


def _label_bar(ax, x0: float, width: float, row: int, task_id: str, px_per_s: float) -> None:
    """The task id on its bar: level where it fits, upright where only the bar's height does, else none (a bar a
    few pixels wide; report.md lists every task). Width estimate: a digit is about 0.6 em."""
    text_px = len(task_id) * 0.6 * LABEL_FONT_PT * ax.figure.dpi / 72
    bar_px = width * px_per_s
    if bar_px >= text_px + 4:
        rotation = 0
    elif bar_px >= 1.4 * LABEL_FONT_PT * ax.figure.dpi / 72:
        rotation = 90
    else:
        return
    ax.text(x0 + width / 2, row, task_id, rotation=rotation, ha="center", va="center", fontsize=LABEL_FONT_PT,
            color="black", clip_on=True)


def timeline_figure(events: list[dict], deadline_at: float | None = None):
    """Per-worker timeline from journal events (a matplotlib Figure, or None when no task finished): a bar per
    task labelled with its id, and the run's deadline (`Deadline.at`, time.time() seconds) as a dashed line."""
    bars = task_bars(events)
    if not bars:
        return None
    t_min = min(b[0] for bs in bars.values() for b in bs)
    t_end = max(b[1] for bs in bars.values() for b in bs)
    # The axis reaches the deadline so a run that ended early shows the time it left unused.
    right = max(t_end, deadline_at or t_end) - t_min
    right = right * 1.03 if right > 0 else 1.0
    workers = sorted(bars, key=lambda w: (len(w), w))
    fig, ax = plt.subplots(figsize=(12, 1 + ROW_HEIGHT_IN * len(workers)))
    ax.set_xlim(0, right)
    ax.set_ylim(-0.5, len(workers) - 0.5)
    px_per_s = ax.get_position().width * fig.get_figwidth() * fig.dpi / right
    for row, worker in enumerate(workers):
        for t0, t1, status, task_id in bars[worker]:
            width = max(t1 - t0, 0.05)
            ax.barh(row, width, left=t0 - t_min, color=STATUS_COLOURS.get(status, "#888"), edgecolor="white",
                    height=0.8)
            _label_bar(ax, t0 - t_min, width, row, task_id, px_per_s)
    if deadline_at is not None:
        x = deadline_at - t_min
        ax.axvline(x, color="black", linestyle="--", linewidth=1)
        # Inside the plot, just left of the line, on white: a bar running up to the deadline must not hide it.
        ax.annotate("deadline", (x, len(workers) - 0.5), xytext=(-3, -3), textcoords="offset points",
                    ha="right", va="top", rotation=90, fontsize=8,
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    ax.set_yticks(range(len(workers)), workers)
    ax.set_xlabel("seconds since the first task started")
    ax.set_title("tasks per worker (green done, red error, purple killed, orange timeout)")
    return fig


def timeline_png(events: list[dict], path: Path, deadline_at: float | None = None) -> Path | None:
    """timeline_figure saved as a PNG; None (nothing written) when no task finished."""
    fig = timeline_figure(events, deadline_at)
    return None if fig is None else _save(fig, path)


def busy_fractions(events: list[dict]) -> dict[str, float]:
    """Per worker: time inside tasks / (last end − first start over all workers)."""
    spans: dict[str, float] = {}
    open_starts: dict[tuple[str, str], float] = {}
    t_first, t_last = None, None
    for e in events:
        worker = e.get("worker", "")
        if worker == "supervisor" and "worker_id" in e:
            worker = f"worker-{e['worker_id']}"
        if e["event"] == "start":
            open_starts[(worker, e["task_id"])] = e["t"]
            t_first = e["t"] if t_first is None else min(t_first, e["t"])
        elif e["event"] in ("done", "error", "killed", "timeout"):
            t0 = open_starts.pop((worker, e["task_id"]), None)
            if t0 is not None:
                spans[worker] = spans.get(worker, 0.0) + e["t"] - t0
                t_last = e["t"] if t_last is None else max(t_last, e["t"])
    if t_first is None or t_last is None or t_last <= t_first:
        return {}
    return {w: s / (t_last - t_first) for w, s in sorted(spans.items())}


def memory_png(samples, path: Path) -> Path | None:
    if len(samples) < 2:
        return None
    t0 = samples[0].t
    ts = [s.t - t0 for s in samples]
    names = sorted({n for s in samples for n in s.tree_rss})
    fig, ax = plt.subplots(figsize=(10, 4))
    for name in names:
        ax.plot(ts, [s.tree_rss.get(name, 0) / 2**30 for s in samples], label=f"{name} RSS")
    ax.plot(ts, [sum(s.tree_rss.values()) / 2**30 for s in samples], "k--", label="all RSS")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS GiB")
    # Free RAM is on another scale (often 10× the RSS): its own axis keeps the RSS lines readable.
    free_ax = ax.twinx()
    free_ax.plot(ts, [s.host_available / 2**30 for s in samples], "k:", label="host available")
    free_ax.set_ylabel("host available GiB")
    free_ax.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    free_lines = free_ax.get_legend_handles_labels()
    ax.legend(lines[0] + free_lines[0], lines[1] + free_lines[1], fontsize=7, ncol=2)
    ax.set_title("host memory")
    return _save(fig, path)


def _draw(ax, grid, title: str) -> None:
    g = np.asarray(grid)
    ax.imshow(g, cmap=ARC_CMAP, vmin=0, vmax=9, interpolation="nearest")
    # Cell lines, as ARC viewers draw them: a 1x1 black grid must not look like a big black answer.
    ax.set_xticks(np.arange(-0.5, g.shape[1], 1), minor=True)
    ax.set_yticks(np.arange(-0.5, g.shape[0], 1), minor=True)
    ax.grid(which="minor", color="#555555", linewidth=0.4)
    ax.tick_params(which="both", length=0)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def task_png(task: Task, attempts: Sequence[Sequence[list]], path: Path,
             solved_by: Sequence[Sequence[str]] = ()) -> Path:
    """Train pairs on top; per test input: the input, attempt 1, attempt 2 and the answer if known. solved_by:
    per test input, per attempt, the solver(s) it came from ("" marks the fallback, labelled as such)."""
    cols = max(2 * len(task.train), 4)
    rows = 1 + len(task.test)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ex in enumerate(task.train):
        for j, (grid, label) in enumerate(((ex.input, f"train {i} in"), (ex.output, f"train {i} out"))):
            axes[0][2 * i + j].axis("on")
            _draw(axes[0][2 * i + j], grid, label)
    for t, ex in enumerate(task.test):
        panels = [(ex.input, f"test {t} in")]
        for a, grid in enumerate(attempts[t] if t < len(attempts) else []):
            right = ex.output is not None and np.array_equal(np.asarray(grid), ex.output)
            source = solved_by[t][a] if t < len(solved_by) and a < len(solved_by[t]) else None
            origin = "" if source is None else f" ({source or 'fallback'})"
            panels.append((grid, f"attempt {a + 1}{origin}" + (" ✓" if right else "")))
        if ex.output is not None:
            panels.append((ex.output, "answer"))
        for j, (grid, label) in enumerate(panels[:cols]):
            axes[t + 1][j].axis("on")
            _draw(axes[t + 1][j], grid, label)
    fig.suptitle(task.id)
    return _save(fig, path)


def pictures_to_show(report_dir: Path, score: ScoreReport | None) -> list[Path]:
    """The task pictures of a report folder, those of tasks with a right answer first, then by name."""
    solved = {safe_file_name(t.task_id) for t in score.tasks if t.solved} if score else set()  # pictures' names
    return sorted((Path(report_dir) / "tasks").glob("*.png"), key=lambda p: (p.stem not in solved, p.name))
