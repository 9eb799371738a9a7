"""The run: icecuber on the CPU, one worker per GPU on the LLM solver, one deadline; then assemble, validate, score.

    tasks ─┬─► icecuber (subprocesses, niced) ───────────────────────────────┐
           └─► queue (largest first) ─► workers ─► journals ─► select ─► submission.json ─► validate ─► score

A submission.json with every task is written whatever fails: a solver error, a dead worker, the deadline, a
missing model or icecuber. Re-running with the same out_dir resumes: settled tasks are not solved again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .budget import Deadline, run_deadline
from .config import RunConfig
from .journal import Journal, collect, read_events, settled_task_ids
from .resources import GIB, ResourceMonitor, gpu_memory_used_mib
from .select import select_attempts
from .submission import ScoreReport, assemble, score, validate, write_submission
from .tasks import Task, load_solutions, load_tasks

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    submission_path: Path
    problems: list[str]  # validation problems (empty: valid)
    score: ScoreReport | None
    wall_s: float
    n_tasks: int
    statuses: dict[str, int] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)  # per-worker busy fraction
    peak_rss_gib: float = 0.0
    report_dir: Path | None = None
    peak_rss_gib_by_tree: dict[str, float] = field(default_factory=dict)  # main (with icecuber), worker-N
    peak_gpu_mib: dict[int, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"submission: {self.submission_path} ({'valid' if not self.problems else 'INVALID'})",
                 f"tasks: {self.n_tasks}  " + "  ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())),
                 f"wall time: {self.wall_s:.1f} s   peak host RSS (all processes): {self.peak_rss_gib:.2f} GiB"]
        if self.busy:
            lines.append("busy fraction: " + "  ".join(f"{w}: {f:.0%}" for w, f in self.busy.items()))
        if self.peak_rss_gib_by_tree:
            lines.append("peak RSS GiB: " + "  ".join(f"{n}: {g:.2f}" for n, g in self.peak_rss_gib_by_tree.items()))
        if self.peak_gpu_mib:
            lines.append("peak GPU MiB: " + "  ".join(f"gpu{g}: {m}" for g, m in self.peak_gpu_mib.items()))
        if self.score is not None:
            lines.append(f"score: {self.score.score:.4f} ({self.score.tasks_fully_solved}/{len(self.score.tasks)} "
                         f"tasks fully solved)")
        lines += [f"problem: {p}" for p in self.problems[:20]]
        return "\n".join(lines)


def visible_gpus() -> list[str]:
    """GPU ids this run may use, without initialising CUDA in the main process."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in sorted(gpu_memory_used_mib())]


def worker_ram_ceiling(config: RunConfig, total_bytes: int) -> float:
    """Host RAM the workers together may use: ram_ceiling_gb, or 90% of the machine less icecuber's share
    (its own ceiling: icecuber.options.ram_ceiling_gb, by default half the machine) when icecuber runs."""
    if config.ram_ceiling_gb:
        return config.ram_ceiling_gb * GIB
    icecuber_share = 0.0
    if config.icecuber.dir is not None:
        ice_gb = config.icecuber.options.get("ram_ceiling_gb")
        icecuber_share = ice_gb * GIB if ice_gb else total_bytes / 2
    return max(0.9 * total_bytes - icecuber_share, 0.25 * total_bytes)


def _log_to_file(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    return handler


def _start_icecuber(config: RunConfig, tasks: dict[str, Task], deadline: Deadline, out_dir: Path):
    """A running icecuber handle, or None (not configured, or unusable: the run goes on without it)."""
    if config.icecuber.dir is None:
        return None
    from .solvers import icecuber

    try:
        run = icecuber.start_run(config.icecuber.dir, tasks, out_dir / "icecuber", deadline, **config.icecuber.options)
    except (icecuber.IcecuberUnavailable, ValueError, TypeError) as e:  # TypeError/ValueError: bad options
        log.warning("icecuber unavailable, continuing without it: %s", e)
        return None
    return run


def _finish_icecuber(run, journal_dir: Path) -> None:
    """Stop icecuber and journal its candidates (kept from every run that finished before a kill or the deadline)."""
    if run is None:
        return
    try:
        run.stop()
        per_test = run.candidates()
    except Exception:
        log.exception("icecuber failed; continuing with the LLM candidates only")
        return
    with Journal(journal_dir, "icecuber") as journal:
        for (task_id, test_index), cands in sorted(per_test.items()):
            journal.candidates(task_id, test_index, cands)
        for task_id, status in sorted(run.statuses().items()):
            journal.write("icecuber-status", task_id, status=status)


def run(config: RunConfig) -> RunResult:
    config.validate()
    started = time.time()
    deadline = run_deadline(config.time_limit_s, config.safety_margin_s, started)
    out_dir = Path(config.out_dir)
    journal_dir = out_dir / "journals"
    journal_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to_file(out_dir)
    try:
        return _run(config, started, deadline, out_dir, journal_dir)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run(config: RunConfig, started: float, deadline: Deadline, out_dir: Path, journal_dir: Path) -> RunResult:
    from tqdm.auto import tqdm

    from . import report
    from .workers import WorkerPool

    tasks = load_tasks(config.challenges, config.solutions, skip_invalid=config.skip_invalid, limit=config.n_tasks)
    log.info("%d tasks from %s; deadline in %.0f s", len(tasks), config.challenges, deadline.remaining())
    settled = settled_task_ids(journal_dir)
    order = sorted((t for t in tasks if t not in settled), key=lambda t: (-tasks[t].cost_estimate(), t))
    if settled:
        log.info("resuming: %d task(s) already settled in %s", len(settled & set(tasks)), journal_dir)

    gpus: list[str | None] = visible_gpus()
    n_workers = config.workers or (len(gpus) if gpus else config.cpu_workers)
    worker_gpus = [gpus[i % len(gpus)] for i in range(n_workers)] if gpus else [None] * n_workers
    monitor = ResourceMonitor(interval=config.monitor_interval_s, gpu=bool(gpus)).start()
    monitor.watch("main", os.getpid())  # with icecuber's processes, which are its children
    ceiling = worker_ram_ceiling(config, psutil.virtual_memory().total)
    ice = _start_icecuber(config, tasks, deadline, out_dir)

    if order:
        pool = WorkerPool(config, tasks, order, worker_gpus, str(journal_dir), deadline, monitor)
        bar = tqdm(total=len(order), desc="tasks", unit="task")

        def on_tick(p: WorkerPool) -> None:
            done = len(order) - len(p.queued) - sum(s.task_id is not None for s in p.slots)
            bar.update(max(done - bar.n, 0))
            sample = monitor.samples[-1] if monitor.samples else None
            # Only the workers count here: icecuber (under 'main') enforces its own ceiling, and a GPU worker
            # must never die for memory icecuber uses.
            workers_rss = sum(v for k, v in sample.tree_rss.items() if k.startswith("worker-")) if sample else 0
            if workers_rss > ceiling:
                victim = p.largest_worker()
                if victim is not None and victim.task_id is not None:
                    log.warning("RAM ceiling %.1f GiB reached: killing worker %d", ceiling / GIB, victim.worker_id)
                    p.kill_worker(victim, "killed", f"RAM ceiling {ceiling / GIB:.1f} GiB reached")
                    monitor.sample()
            if ice is not None:
                ice.poll()

        pool_result = pool.run(on_tick)
        bar.update(len(order) - bar.n)
        bar.close()
        log.info("workers finished=%s killed=%s unstarted=%d", pool_result.finished, pool_result.killed_tasks,
                 len(pool_result.unstarted_tasks))
    if ice is not None:
        ice.wait(deadline)
    _finish_icecuber(ice, journal_dir)
    monitor.stop()

    records = collect(journal_dir)
    choices = {tid: [select_attempts(records[tid].candidates.get(i, []), config.priority)
                     if tid in records else [] for i in range(len(task.test))]
               for tid, task in tasks.items()}
    submission = assemble(tasks, choices)
    sub_path = write_submission(out_dir / "submission.json", submission)
    problems = validate(submission, tasks)
    scored = None
    if all(t.has_solutions for t in tasks.values()) or config.solutions:
        solutions = (load_solutions(config.solutions) if config.solutions
                     else {tid: [ex.output for ex in t.test] for tid, t in tasks.items()})
        scored = score(submission, {tid: solutions[tid] for tid in tasks if tid in solutions})

    events = sorted(read_events(journal_dir), key=lambda e: e["t"])  # journals interleave in time
    statuses: dict[str, int] = {}
    for tid in tasks:
        status = records[tid].status if tid in records else "pending"
        statuses[status] = statuses.get(status, 0) + 1
    result = RunResult(sub_path, problems, scored, time.time() - started, len(tasks), statuses,
                       report.busy_fractions(events), monitor.peak_rss() / GIB, out_dir,
                       {n: b / GIB for n, b in monitor.peaks_by_tree().items()}, monitor.peak_gpu_mib())
    _write_report(result, tasks, records, choices, submission, events, monitor, out_dir)
    log.info("run finished\n%s", result.summary())
    return result


def _write_report(result: RunResult, tasks, records, choices, submission, events, monitor, out_dir: Path) -> None:
    """Report files; a failure here is logged, never allowed to cost the submission already written."""
    from . import report

    try:
        rows = report.task_rows(tasks, records, choices, result.score)
        report.write_table(rows, out_dir, result.summary().splitlines())
        report.timeline_png(events, out_dir / "timeline.png")
        report.memory_png(monitor.samples, out_dir / "memory.png")
        # A few tasks to look at: solved ones first when scores are known, else the first ones.
        solved = [t.task_id for t in result.score.tasks if t.solved] if result.score else []
        for tid in (solved + [t for t in tasks if t not in solved])[:6]:
            attempts = [[e["attempt_1"], e["attempt_2"]] for e in submission[tid]]
            report.task_png(tasks[tid], attempts, out_dir / "tasks" / f"{tid}.png")
    except Exception:
        log.exception("writing the report failed (the submission is unaffected)")
