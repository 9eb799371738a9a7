"""The run: icecuber on the CPU, one worker per GPU on the LLM solver, one deadline; then assemble, validate, score.

    tasks ─┬─► icecuber (subprocesses, niced) ── each answer file ──┐
           └─► tasks handed out largest first ─► workers ─ emit ────┴─► journals ─► assembly ─► submission.json

submission.json exists, complete and valid, from before the first task starts (every task's fallback), and is
re-assembled from the journals whenever a task settles, every `assemble_every_s` and at the end. So a run killed
at any moment leaves a valid file with every answer journaled before the kill, and re-running with the same
out_dir resumes: settled tasks are not solved again and finished icecuber programs are not run again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from . import run_folder
from .budget import Deadline, run_deadline
from .config import RunConfig
from .assembly import Assembly, PeriodicAssembly
from .fileio import safe_file_name
from .journal import (JOURNAL_GLOB, Journal, JournalError, TaskRecord, collect, finished_solvers, read_events,
                      settled_task_ids)
from .resources import GIB, ResourceMonitor, gpu_memory_used_mib
from .submission import ScoreReport, score, validate
from .tasks import Task, load_solutions, load_tasks, skipped_task_entries

if TYPE_CHECKING:
    from .icecuber import IcecuberRun

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
    warnings: list[str] = field(default_factory=list)  # what went wrong without costing the file (shown loudly)
    # resident less file-backed pages (a model file read through mmap): resources.py says why both are shown
    peak_private_gib_by_tree: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"submission: {self.submission_path} ({'valid' if not self.problems else 'INVALID'})",
                 f"tasks: {self.n_tasks}  " + "  ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())),
                 f"wall time: {self.wall_s:.1f} s   peak host RSS (all processes): {self.peak_rss_gib:.2f} GiB"]
        if self.busy:
            lines.append("busy fraction: " + "  ".join(f"{w}: {f:.0%}" for w, f in self.busy.items()))
        if self.peak_rss_gib_by_tree:
            lines.append("peak RSS GiB: " + "  ".join(f"{n}: {g:.2f}" for n, g in self.peak_rss_gib_by_tree.items()))
        if self.peak_private_gib_by_tree:
            lines.append("peak private GiB: " + "  ".join(f"{n}: {g:.2f}"
                                                           for n, g in self.peak_private_gib_by_tree.items()))
        if self.peak_gpu_mib:
            lines.append("peak GPU MiB: " + "  ".join(f"gpu{g}: {m}" for g, m in self.peak_gpu_mib.items()))
        if self.score is not None:
            lines.append(f"score: {self.score.score:.4f} ({self.score.tasks_fully_solved}/{len(self.score.tasks)} "
                         f"tasks fully solved)")
        lines += [f"WARNING: {w}" for w in self.warnings]
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


def run(config: RunConfig) -> RunResult:
    """The whole run (module docstring). Before anything is written: ConfigError for an unusable output folder,
    TaskFormatError for unusable challenges, RunFolderMismatch for a folder that holds another run."""
    config.validate()
    started = config.started_at or time.time()  # the notebook passes the kernel's start: the limit counts from it
    deadline = run_deadline(config.time_limit_s, config.safety_margin_s, started)
    out_dir = run_folder.prepare_out_dir(config.out_dir)
    tasks = load_tasks(config.challenges, config.solutions, skip_invalid=config.skip_invalid, limit=config.n_tasks)
    this_run = run_folder.fingerprint(tasks, config)
    if config.fresh:
        run_folder.move_old_run_aside(out_dir)
        run_folder.prepare_out_dir(out_dir)
    else:
        run_folder.check_same_run(out_dir, this_run)
    run_folder.record(out_dir, this_run, config)
    handler = _log_to_file(out_dir)
    try:
        return _run(config, tasks, started, deadline, out_dir)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run(config: RunConfig, tasks: dict[str, Task], started: float, deadline: Deadline, out_dir: Path) -> RunResult:
    journal_dir = out_dir / "journals"
    log.info("%d tasks from %s; deadline in %.0f s", len(tasks), config.challenges, deadline.remaining())
    warnings: list[str] = []
    skipped = skipped_task_entries(config.challenges, tasks) if config.skip_invalid and not config.n_tasks else {}
    if skipped:
        warnings.append(f"{len(skipped)} invalid task(s) skipped, each answered [[0]] so the file lists every task: "
                        f"{', '.join(sorted(skipped)[:10])}")
        log.error("%s", warnings[-1])
    assembly = PeriodicAssembly(out_dir, tasks, config.priority, config.assemble_every_s, skipped=skipped,
                                weights=config.solver_weights)
    first = assembly.now()  # from here on a valid, complete submission.json exists
    records = first.records if first is not None else collect(journal_dir, tasks)
    order = tasks_to_solve(tasks, records, [s.name for s in config.solvers])

    # Every journal this run may write, and every one the folder holds, opens now: a folder in the place of one
    # fails here, named, not in a worker (nor, on a resume with nothing left to solve, unnoticed).
    held = [path.name[len("journal-"):-len(".jsonl")] for path in sorted(journal_dir.glob(JOURNAL_GLOB))]
    _open_journals(journal_dir, ["icecuber", "supervisor", *held])
    gpus: list[str | None] = visible_gpus()  # this machine's
    launcher = _launcher(config, tasks, order, records, deadline, journal_dir, gpus) if order else None
    if launcher is not None:
        try:
            _open_journals(journal_dir, [f"worker-{i}" for i in range(len(launcher.slots))])
        except JournalError:
            launcher.close()  # a Ray instance started for the run stops with it
            raise
    # L4 emulation (tests and benchmarks on bigger cards): the ballast goes on before any worker sees the GPU. Ray
    # actors put their own on the GPU Ray gives them (ray_workers.py).
    ballast = _start_ballast(config, launcher.slots) if launcher is not None and config.backend == "local" else None
    monitor = ResourceMonitor(interval=config.monitor_interval_s, gpu=bool(gpus)).start()
    monitor.watch("main", os.getpid())  # with icecuber's processes, which are its children
    try:
        with Journal(journal_dir, "icecuber") as ice_journal:
            ice = _start_icecuber(config, tasks, deadline, out_dir, ice_journal, warnings)
            if launcher is not None:
                _solve_on_workers(config, order, launcher, journal_dir, deadline, monitor, ice, assembly)
            _finish_icecuber(ice, deadline, ice_journal, warnings, assembly)
    finally:
        monitor.stop()
        if ballast is not None:
            ballast.stop()
        if launcher is not None:
            launcher.close()

    final = assembly.now()
    if final is None:  # the periodic one logs and carries on; the last one must not fail quietly
        raise RuntimeError(f"assembling {out_dir / 'submission.json'} failed at the end (see the log above); the "
                           f"file from the last successful assembly is in place")
    return _finish(config, tasks, final, started, monitor, out_dir, warnings, deadline)


def _open_journals(journal_dir: Path, names: list[str]) -> None:
    for name in dict.fromkeys(names):
        Journal(journal_dir, name).close()


def _start_ballast(config: RunConfig, worker_gpus: list):
    gpus = sorted({g for g in worker_gpus if g is not None})
    if not config.emulate_gpu_gib or not gpus:
        return None
    from .gpu_ballast import Ballast

    return Ballast(gpus, config.emulate_gpu_gib)


def _launcher(config: RunConfig, tasks: dict[str, Task], order: list[str], records: dict[str, TaskRecord],
              deadline: Deadline, journal_dir: Path, gpus: list[str]):
    """What starts the workers: processes on this machine (one per visible GPU, or cpu_workers), or Ray actors
    across the cluster config.ray_address names (one per GPU there, or cpu_workers); `workers` overrides both."""
    from .worker_process import WorkerRun

    finished = {tid: sorted(names) for tid, names in finished_solvers(records).items() if tid in set(order)}
    if config.backend == "ray":
        from . import ray_workers

        cluster = ray_workers.connect(config)
        return ray_workers.RayLauncher(WorkerRun(config, tasks, deadline, finished), str(journal_dir), cluster)
    from .local_workers import ProcessLauncher

    n_workers = config.workers or (len(gpus) if gpus else config.cpu_workers)
    slots = [gpus[i % len(gpus)] for i in range(n_workers)] if gpus else [None] * n_workers
    return ProcessLauncher(WorkerRun(config, tasks, deadline, finished), str(journal_dir), slots)


def tasks_to_solve(tasks: dict[str, Task], records: dict[str, TaskRecord], solvers: list[str]) -> list[str]:
    """Tasks not settled (by every solver of the chain) by an earlier run in this folder, largest first."""
    settled = settled_task_ids(records, solvers)
    if settled & set(tasks):
        log.info("resuming: %d task(s) already settled", len(settled & set(tasks)))
    return sorted((t for t in tasks if t not in settled), key=lambda t: (-tasks[t].cost_estimate(), t))


def _start_icecuber(config: RunConfig, tasks: dict[str, Task], deadline: Deadline, out_dir: Path,
                    journal: Journal, warnings: list[str]):
    """A running icecuber handle that journals every answer as it lands, or None (not configured, or unusable:
    the run goes on without it, saying so)."""
    if config.icecuber.dir is None:
        return None
    from . import icecuber

    def on_answer(task_id: str, test_index: int, ranked) -> None:
        # One snapshot per test input: each answer file replaces icecuber's ranking so far with the merged one.
        journal.candidates(task_id, test_index, tasks[task_id].test[test_index].input, ranked, snapshot="icecuber")

    options = {"resume": True, **config.icecuber.options}
    try:
        return icecuber.start_run(config.icecuber.dir, tasks, out_dir / "icecuber", deadline, on_answer, **options)
    except (icecuber.IcecuberUnavailable, ValueError, TypeError) as e:  # TypeError/ValueError: bad options
        warnings.append(f"icecuber unavailable, the run went on without it: {e}")
        log.error("icecuber unavailable, continuing without it: %s", e)
        return None


def _solve_on_workers(config: RunConfig, order: list[str], launcher, journal_dir: Path, deadline: Deadline,
                      monitor: ResourceMonitor, ice: IcecuberRun | None, assembly: PeriodicAssembly) -> None:
    from tqdm.auto import tqdm

    from .worker_pool import PoolProgress, WorkerPool

    pool = WorkerPool(config, order, launcher, str(journal_dir), deadline, monitor,
                      ram_ceiling_bytes=worker_ram_ceiling(config, psutil.virtual_memory().total))
    bar = tqdm(total=len(order), desc="tasks", unit="task")

    def on_tick(progress: PoolProgress) -> None:
        bar.update(max(progress.settled - bar.n, 0))
        assembly.maybe((progress.settled, progress.emitted, ice.poll()["answered"] if ice is not None else 0))

    result = pool.run(on_tick)
    # Tasks the deadline kept from starting are skipped, not done: the bar says so instead of showing 100%.
    bar.update(max(len(order) - len(result.unstarted_tasks) - bar.n, 0))
    bar.close()
    log.info("workers finished=%s killed=%s unstarted=%d", result.finished, result.killed_tasks,
             len(result.unstarted_tasks))


def _finish_icecuber(run, deadline: Deadline, journal: Journal, warnings: list[str],
                     assembly: PeriodicAssembly) -> None:
    """Let icecuber use the time left (re-assembling meanwhile), stop it, and journal each task's run statuses
    (its answers are journaled already, as they landed)."""
    if run is None:
        return
    try:
        while not run.done and not deadline.passed():
            run.join(min(assembly.min_gap_s, deadline.remaining()))
            assembly.maybe(run.poll()["answered"])
        run.wait(deadline)  # at the deadline: stops what still runs
        run.stop()
        for task_id, status in sorted(run.statuses().items()):
            journal.write("icecuber-status", task_id, status=status)
    except Exception:
        log.exception("icecuber failed; continuing with the answers journaled so far")
    if run.failure is not None:
        warnings.append(run.failure)
        journal.run_event("icecuber-failed", error=run.failure)


def _finish(config: RunConfig, tasks: dict[str, Task], final: Assembly, started: float, monitor, out_dir: Path,
            warnings: list[str], deadline: Deadline) -> RunResult:
    """Validate, score (when solutions are known), report."""
    from . import report

    problems = validate(final.submission, tasks)
    if final.read.describe():  # the file was written from what could be read; say what could not
        warnings.append(f"journals: {final.read.describe()}")
    scored = None
    if all(t.has_solutions for t in tasks.values()) or config.solutions:
        solutions = (load_solutions(config.solutions) if config.solutions
                     else {tid: [ex.output for ex in t.test] for tid, t in tasks.items()})
        scored = score(final.submission, {tid: solutions[tid] for tid in tasks if tid in solutions})
    journal_dir = out_dir / "journals"
    events = list(read_events(journal_dir))  # in time order across the workers' journals
    statuses: dict[str, int] = {}
    for tid in tasks:
        status = final.records[tid].status if tid in final.records else "pending"
        statuses[status] = statuses.get(status, 0) + 1
    result = RunResult(
        submission_path=out_dir / "submission.json", problems=problems, score=scored, wall_s=time.time() - started,
        n_tasks=len(tasks), statuses=statuses, busy=report.busy_fractions(events),
        peak_rss_gib=monitor.peak_rss() / GIB, report_dir=out_dir,
        peak_rss_gib_by_tree={n: b / GIB for n, b in monitor.peaks_by_tree().items()},
        peak_gpu_mib=monitor.peak_gpu_mib(), warnings=warnings,
        peak_private_gib_by_tree={n: b / GIB for n, b in monitor.private_peaks_by_tree().items()})
    _write_report(result, tasks, final, events, monitor, out_dir, deadline.at)
    log.info("run finished\n%s", result.summary())
    return result


def _write_report(result: RunResult, tasks, final: Assembly, events, monitor, out_dir: Path,
                  deadline_at: float) -> None:
    """Report files; a failure here is logged, never allowed to cost the submission already written."""
    from . import report

    try:
        rows = report.task_rows(tasks, final.records, final.choices, result.score)
        precision = report.attempt_precision(tasks, final.choices) if result.score else []
        report.write_table(rows, out_dir, result.summary().splitlines() + [f"precision {p}" for p in precision])
        report.timeline_png(events, out_dir / "timeline.png", deadline_at)
        report.memory_png(monitor.samples, out_dir / "memory.png")
        # A few tasks to look at: solved ones first when scores are known, else the first ones.
        solved = [t.task_id for t in result.score.tasks if t.solved] if result.score else []
        for tid in (solved + [t for t in tasks if t not in solved])[:6]:
            attempts = [[e["attempt_1"], e["attempt_2"]] for e in final.submission[tid]]
            sources = [["+".join(c.solvers) for c in picked] + [""] * (2 - len(picked))
                       for picked in final.choices[tid]]
            report.task_png(tasks[tid], attempts, out_dir / "tasks" / f"{safe_file_name(tid)}.png", sources)
    except Exception:
        log.exception("writing the report failed (the submission is unaffected)")
