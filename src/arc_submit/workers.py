"""Worker processes (one per GPU, or N on a CPU) pulling tasks one at a time, and their supervisor.

Why tasks are pulled and not pre-split: task costs differ by 100×, so any static split leaves GPUs idle while
another still has a backlog. Tasks go out largest first (longest-processing-time-first keeps the tail short).

Each worker has one pipe to the supervisor, and the supervisor hands out every task over it: a worker asks
(`ready`, then `end` after each task) and gets the next task or None. No queue or lock is shared, so a worker
killed at any moment cannot take a lock with it and jam the others (a shared multiprocessing.Queue did).

A worker loads its engine once, then per task: takes its share of the remaining time (budget.py), runs the
solver and journals the candidates as the solver finds them (`emit`), so a task killed later keeps them. The
supervisor watches the workers: one that dies has its task retried once elsewhere and is restarted while time
allows; one that overruns its task's deadline by more than a grace period is killed and restarted; at the run
deadline all are stopped. A worker whose supervisor dies kills itself and everything it started.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import multiprocessing as mp
import os
from multiprocessing import connection as mp_connection
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field

from .budget import Deadline, allot_task_deadline
from .candidates import Candidate, valid_candidates
from .config import RunConfig
from .journal import Journal
from .tasks import Task

log = logging.getLogger(__name__)

SOLVERS = {
    "transduction": "arc_submit.solvers.transduction:solve",
    "induction": "arc_submit.solvers.induction:solve",
}
RESTART_MIN_S = 30.0  # no point restarting a worker (model load) with less than this left


def resolve_solver(name: str):
    """A solver function from a short name or `module:function`."""
    target = SOLVERS.get(name, name)
    if ":" not in target:
        raise ValueError(f"solver {name!r}: use one of {', '.join(SOLVERS)} or module:function")
    module, func = target.split(":", 1)
    return getattr(importlib.import_module(module), func)


def make_engine(config: RunConfig, device: str):
    """The engine named in config, loaded once per worker (None when the solvers need no model)."""
    if config.engine.kind == "none":
        return None
    from .llm import make_engine as make_llm_engine

    from .solvers.common import TRAIN_DEFAULTS

    options = {"device": device, "seed": config.seed, **config.engine.options}
    # What the solver will train with, for the memory plan (its own option names, its own defaults).
    per_solver = [{**TRAIN_DEFAULTS, **spec.options} for spec in config.solver_chain()]
    return make_llm_engine(config.engine.kind, config.engine.model,
                           train_seq_len=max(int(o["max_seq_len"]) for o in per_solver),
                           lora_rank=max(int(o["lora_rank"]) for o in per_solver), **options)


def die_with_supervisor(poll_s: float = 0.5) -> None:
    """A daemon thread that kills this worker's whole process group (itself, vLLM's engine core, program
    runners) as soon as its parent is gone: a SIGKILLed supervisor must not leave GPU workers running."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def accepts_emit(solver) -> bool:
    try:
        return "emit" in inspect.signature(solver).parameters
    except (TypeError, ValueError):
        return False


def journal_per_test(journal: Journal, task: Task, per_test, snapshot: str) -> None:
    """A solver's candidates, one line per test input; grids that break the ARC rules are dropped and noted."""
    if len(per_test) != len(task.test):
        raise ValueError(f"task {task.id}: the solver returned {len(per_test)} candidate lists for "
                         f"{len(task.test)} test inputs (one list per test input, in order)")
    for test_index, candidates in enumerate(per_test):
        def dropped(why: str, i=test_index) -> None:
            journal.write("invalid-candidate", task.id, test_index=i, error=why)
            log.warning("task %s test %d: invalid candidate dropped: %s", task.id, i, why)
        journal.candidates(task.id, test_index, task.test[test_index].input, valid_candidates(candidates, dropped),
                           snapshot=snapshot)


def solve_task(task: Task, attempt: int, task_deadline: Deadline, chain, engine, journal: Journal, conn,
               already_done=(), skip_after_verified: bool = True) -> None:
    """Run the task through each solver of the chain in turn, each with its share of the time left, journaling
    as they go: `solver-start` / `solver-done` (or `solver-error`, `solver-skipped`) per solver, then `done`, or
    `error` when every solver that ran raised. Solvers in already_done (finished by an earlier run) are skipped."""
    started = time.time()
    ran, failed, verified = [], [], False
    for i, (spec, solver) in enumerate(chain):
        if spec.name in already_done:
            continue
        if verified and skip_after_verified:
            journal.write("solver-skipped", task.id, solver=spec.name, reason="an earlier solver verified an answer")
            continue
        rest = [s for s, _ in chain[i:] if s.name not in already_done]
        share = spec.share if spec.share is not None else 1.0 / len(rest)
        sub_deadline = task_deadline if len(rest) == 1 else Deadline(
            min(time.time() + task_deadline.remaining() * share, task_deadline.at))
        # Each journaling of this attempt replaces the last (a snapshot): the final answer supersedes the running
        # ones, and a task killed mid-way keeps its latest.
        snapshot = f"{spec.name}#{attempt}"

        def emit(per_test, snapshot=snapshot) -> None:
            journal_per_test(journal, task, per_test, snapshot)
            conn.send(("emitted", task.id, None))  # the supervisor re-assembles submission.json soon

        extra = {"emit": emit} if accepts_emit(solver) else {}
        t0 = time.time()
        journal.write("solver-start", task.id, solver=spec.name, allotted_s=round(sub_deadline.remaining(), 2))
        try:
            per_test = solver(task, sub_deadline, engine, **extra, **spec.options)
            journal_per_test(journal, task, per_test, snapshot)
            journal.write("solver-done", task.id, solver=spec.name, seconds=round(time.time() - t0, 3),
                          candidates=sum(len(c) for c in per_test))
            ran.append(spec.name)
            verified = getattr(solver, "verifies", False) and any(
                c.support == 1.0 for cands in per_test for c in cands if isinstance(c, Candidate))
        except Exception as e:  # one solver's failure never takes the task or the worker down
            failed.append(f"{spec.name}: {type(e).__name__}: {e}")
            journal.write("solver-error", task.id, solver=spec.name, seconds=round(time.time() - t0, 3),
                          error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
            log.warning("task %s solver %s raised %s: %s", task.id, spec.name, type(e).__name__, e)
    if failed and not ran:
        journal.write("error", task.id, seconds=round(time.time() - started, 3), error="; ".join(failed))
    else:
        journal.write("done", task.id, seconds=round(time.time() - started, 3), solvers=ran + list(already_done))


def worker_main(worker_id: int, gpu: str | None, config: RunConfig, tasks: dict[str, Task], journal_dir: str,
                conn, run_deadline_at: float, n_workers: int, finished: dict | None = None) -> None:
    """Body of one worker process (spawned: nothing is inherited but these arguments). finished: per task, the
    solvers an earlier run in this folder already ran to the end (a resume skips them)."""
    finished = finished or {}
    if gpu is not None:
        # Before anything imports torch: this process sees exactly one GPU, as device 0.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    os.setpgid(0, 0)  # own process group: the supervisor kills the worker and anything it started together
    die_with_supervisor()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s w{worker_id} %(levelname)s %(name)s: %(message)s",
                        force=True)
    name = f"worker-{worker_id}"
    run_deadline = Deadline(run_deadline_at)
    journal = Journal(journal_dir, name)
    t0 = time.time()
    try:
        engine = make_engine(config, "cuda" if gpu is not None else "cpu")
        chain = [(spec, resolve_solver(spec.name)) for spec in config.solver_chain()]
    except Exception as e:  # journaled so the report says why; the supervisor restarts us a bounded number of times
        journal.run_event("load-failed", traceback=traceback.format_exc(limit=8),
                      error=f"loading the {config.engine.kind} engine for {config.engine.model}: {type(e).__name__}: {e}")
        journal.close()
        raise
    from .solvers.common import drain_notes

    journal.run_event("ready", load_s=round(time.time() - t0, 2), gpu=gpu, pid=os.getpid())
    conn.send(("ready", None, None))
    while True:
        item = conn.recv()  # the supervisor's answer: (task id, attempt, tasks not yet started) or None
        if item is None or run_deadline.passed():  # past the deadline nothing new starts (journaled as skipped)
            break
        task_id, attempt, tasks_left = item
        task_deadline = allot_task_deadline(run_deadline, n_workers, tasks_left, config.max_task_s)
        # Tell the supervisor first: if we die from here on, it knows which task to settle and retry.
        conn.send(("start", task_id, task_deadline.at))
        journal.write("start", task_id, attempt=attempt, allotted_s=round(task_deadline.remaining(), 2),
                      pid=os.getpid())
        solve_task(tasks[task_id], attempt, task_deadline, chain, engine, journal, conn, finished.get(task_id, ()),
                   config.skip_after_verified)
        for n in drain_notes():
            journal.write("note", n["task_id"], kind=n["kind"], text=n["text"])
        conn.send(("end", task_id, None))  # and: the next one, please
    if engine is not None and hasattr(engine, "close"):
        engine.close()
    journal.close()


@dataclass
class WorkerSlot:
    worker_id: int
    gpu: str | None
    process: mp.Process | None = None
    status: object = None  # our end of the worker's pipe
    waiting: bool = False  # asked for a task and got none yet (nothing to hand out at the time)
    offered: tuple | None = None  # (task id, attempt) handed out and not yet announced as started
    task_id: str | None = None
    task_deadline: float | None = None
    attempt: int = 0
    restarts: int = 0
    busy_s: float = 0.0
    task_started: float | None = None


@dataclass
class PoolResult:
    finished: bool  # every queued task was settled before the deadline
    killed_tasks: list[str] = field(default_factory=list)
    unstarted_tasks: list[str] = field(default_factory=list)


def kill_tree(process: mp.Process) -> None:
    """SIGKILL the worker's process group (the worker and anything it started), then reap it."""
    if process.pid is None:
        return
    for target in (lambda: os.killpg(process.pid, signal.SIGKILL), lambda: os.kill(process.pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
    process.join(timeout=10)


class WorkerPool:
    def __init__(self, config: RunConfig, tasks: dict[str, Task], order: list[str], gpus: list[str | None],
                 journal_dir: str, run_deadline: Deadline, monitor=None, finished: dict | None = None):
        self.config, self.tasks, self.journal_dir, self.deadline = config, tasks, journal_dir, run_deadline
        self.finished = {tid: sorted(names) for tid, names in (finished or {}).items() if tid in set(order)}
        self.ctx = mp.get_context("spawn")  # CUDA cannot survive a fork; spawn gives each worker a clean start
        self.slots = [WorkerSlot(i, gpu) for i, gpu in enumerate(gpus)]
        self.monitor = monitor
        self.journal = Journal(journal_dir, "supervisor")
        self.order = list(order)
        self.pending: list[tuple[str, int]] = [(task_id, 0) for task_id in order]  # to hand out, in this order
        self.queued = set(order)  # not yet started (pending, or handed out and not yet announced)
        self.retried: set[str] = set()
        self.emitted = 0  # candidate lists journaled mid-task by the workers (a reason to re-assemble)

    def _spawn(self, slot: WorkerSlot) -> None:
        # One pipe per worker, written synchronously: a worker that dies right after announcing a task has
        # still announced it, and there is no shared lock a killed worker could leave held.
        ours, theirs = self.ctx.Pipe(duplex=True)
        slot.process = self.ctx.Process(
            target=worker_main, name=f"arc-worker-{slot.worker_id}", daemon=False,
            args=(slot.worker_id, slot.gpu, self.config, self.tasks, self.journal_dir, theirs, self.deadline.at,
                  len(self.slots), self.finished))
        slot.process.start()
        theirs.close()
        slot.status, slot.waiting, slot.offered = ours, False, None
        if self.monitor is not None:
            self.monitor.watch(f"worker-{slot.worker_id}", slot.process.pid)
        log.info("worker %d started (pid %d, gpu %s)", slot.worker_id, slot.process.pid, slot.gpu)

    def _settle_lost_task(self, slot: WorkerSlot, event: str, reason: str) -> None:
        """The worker died or was killed holding a task: journal it, and retry once if allowed."""
        task_id = slot.task_id
        if task_id is None:
            return
        retry = (event == "killed" and self.config.retry_killed and task_id not in self.retried
                 and not self.deadline.passed())
        self.journal.write(event, task_id, worker_id=slot.worker_id, reason=reason, retried=retry)
        if retry:
            self.retried.add(task_id)
            self.queued.add(task_id)
            self.pending.insert(0, (task_id, slot.attempt + 1))  # next out: its time share is already spent
            self._hand_out_to_waiting()
            log.warning("task %s: %s (%s); retrying once on another worker", task_id, event, reason)
        else:
            log.warning("task %s: %s (%s)", task_id, event, reason)
        self._end_task(slot)

    def _end_task(self, slot: WorkerSlot) -> None:
        if slot.task_started is not None:
            slot.busy_s += time.time() - slot.task_started
        slot.task_id = slot.task_deadline = slot.task_started = None

    def _restart(self, slot: WorkerSlot, why: str, counts: bool = True) -> None:
        if counts and slot.restarts >= self.config.max_worker_restarts:
            # A worker that keeps dying (a model that cannot load, a broken GPU) would otherwise crash-loop
            # until the deadline; the other workers, or the fallback, take its share.
            log.error("worker %d not restarted after %s: it was restarted %d times already", slot.worker_id, why,
                      slot.restarts)
            self.journal.write("worker-retired", "-", worker_id=slot.worker_id, reason=why, restarts=slot.restarts)
            slot.process = None
            return
        if self.deadline.remaining() < RESTART_MIN_S or not self.queued:
            log.warning("worker %d not restarted after %s: %s", slot.worker_id, why,
                        "too little time left" if self.queued else "no tasks left")
            slot.process = None
            return
        slot.restarts += counts
        self._spawn(slot)

    def _hand_out(self, slot: WorkerSlot) -> None:
        """Answer a worker's request: the next task, or (nothing pending) make it wait for a retry or the end."""
        if not self.pending or self.deadline.passed():
            slot.waiting = True
            return
        task_id, attempt = self.pending.pop(0)
        try:
            slot.status.send((task_id, attempt, len(self.queued)))
        except (OSError, ValueError):  # the worker died meanwhile: the task goes back first in line
            self.pending.insert(0, (task_id, attempt))
            return
        slot.waiting, slot.offered = False, (task_id, attempt)

    def _hand_out_to_waiting(self) -> None:
        for slot in self.slots:
            if slot.waiting and slot.status is not None and self.pending:
                self._hand_out(slot)

    def _reclaim_offer(self, slot: WorkerSlot) -> None:
        """A worker that died between receiving a task and starting it: the task goes back first in line."""
        if slot.offered is not None:
            self.pending.insert(0, slot.offered)
            slot.offered = None

    def _drain_status(self, timeout: float) -> None:
        conns = {slot.status: slot for slot in self.slots if slot.status is not None}
        for conn in mp_connection.wait(list(conns), timeout=timeout):
            slot = conns[conn]
            while True:
                try:
                    if not conn.poll():
                        break
                    kind, task_id, deadline_at = conn.recv()
                except (EOFError, OSError):  # the worker is gone; its process check handles the rest
                    conn.close()
                    slot.status = None
                    break
                if kind == "start":
                    self.queued.discard(task_id)
                    slot.attempt = slot.offered[1] if slot.offered and slot.offered[0] == task_id else 0
                    slot.offered = None
                    slot.task_id, slot.task_deadline, slot.task_started = task_id, deadline_at, time.time()
                elif kind == "end" and slot.task_id == task_id:
                    self._end_task(slot)
                    self._hand_out(slot)
                elif kind == "ready":
                    self._hand_out(slot)
                elif kind == "emitted":
                    self.emitted += 1

    def kill_worker(self, slot: WorkerSlot, event: str, reason: str) -> None:
        if slot.process is not None:
            kill_tree(slot.process)
        if slot.status is not None:
            slot.status.close()
            slot.status = None
        self._reclaim_offer(slot)
        self._settle_lost_task(slot, event, reason)

    def largest_worker(self) -> WorkerSlot | None:
        from .resources import tree_rss

        alive = [s for s in self.slots if s.process is not None and s.process.is_alive()]
        return max(alive, key=lambda s: tree_rss(s.process.pid), default=None)

    def run(self, on_tick=None) -> PoolResult:
        """Until every task is settled or the deadline passes. on_tick(pool) runs about once a second."""
        for slot in self.slots:
            self._spawn(slot)
        result = PoolResult(finished=False)
        try:
            self._supervise(result, on_tick)
        finally:  # also on an exception or Ctrl-C here: no worker may outlive the pool
            self._shutdown(result)
        return result

    def _supervise(self, result: PoolResult, on_tick) -> None:
        while True:
            self._drain_status(timeout=0.5)
            now = time.time()
            for slot in self.slots:
                proc = slot.process
                if proc is None:
                    continue
                if not proc.is_alive():
                    code = proc.exitcode
                    proc.join()
                    slot.process = None
                    self._drain_status(timeout=0)  # whatever it announced before dying is in its pipe
                    self._reclaim_offer(slot)
                    if slot.task_id is not None:
                        result.killed_tasks.append(slot.task_id)
                        self._settle_lost_task(slot, "killed", f"worker exited with code {code}")
                    if code != 0 or self.queued:
                        self._restart(slot, f"exit code {code}")
                elif slot.task_deadline is not None and now > slot.task_deadline + self.config.overrun_grace_s:
                    # Solvers check their deadline between phases; this far past it, the task is hung.
                    result.killed_tasks.append(slot.task_id)
                    self.kill_worker(slot, "timeout", f"overran its deadline by {self.config.overrun_grace_s:.0f}s")
                    self._restart(slot, "task overrun", counts=False)  # the task was at fault, not the worker
            if on_tick is not None:
                on_tick(self)
            busy = any(s.task_id is not None for s in self.slots)
            if not self.queued and not busy:
                result.finished = True
                break
            if self.deadline.passed():
                # Tasks in flight were allotted time up to the deadline and return what they have then; give
                # them the grace period to journal it before they are killed.
                if busy and time.time() < self.deadline.at + self.config.overrun_grace_s:
                    continue
                log.warning("run deadline reached with %d task(s) unstarted", len(self.queued))
                break
            if not any(s.process is not None for s in self.slots):
                log.error("no worker left alive; %d task(s) unstarted", len(self.queued))
                break

    def _shutdown(self, result: PoolResult) -> None:
        for slot in self.slots:
            if slot.status is not None:
                try:
                    slot.status.send(None)  # a waiting worker ends; a busy one reads it after its task
                except (OSError, ValueError):
                    pass
        for slot in self.slots:
            if slot.process is None:
                continue
            if slot.task_id is not None:  # still solving at the deadline: stop it now
                result.killed_tasks.append(slot.task_id)
                self.kill_worker(slot, "timeout", "run deadline reached")
            else:
                slot.process.join(timeout=5)
                if slot.process.is_alive():
                    kill_tree(slot.process)
            slot.process = None
        result.unstarted_tasks = [t for t in self.order if t in self.queued]
        for task_id in result.unstarted_tasks:
            self.journal.write("skipped", task_id, reason="run deadline reached before it started")
        self.journal.close()
        for slot in self.slots:
            if slot.status is not None:
                slot.status.close()
                slot.status = None
