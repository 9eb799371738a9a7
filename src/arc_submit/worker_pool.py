"""The supervisor of the worker processes (worker_process.py): hands out tasks, watches the workers, enforces
the per-task deadline and the host-RAM ceiling, and stops everything at the run's deadline.

Why tasks are pulled and not pre-split: task costs differ by 100×, so any static split leaves GPUs idle while
another still has a backlog. Tasks go out largest first (longest-processing-time-first keeps the tail short).

Each worker has one pipe to the supervisor, and the supervisor hands out every task over it: a worker asks
(`ready`, then `end` after each task) and gets the next task or None. No queue or lock is shared, so a worker
killed at any moment cannot take a lock with it and jam the others (a shared multiprocessing.Queue did).

A worker that dies has its task retried once elsewhere and is restarted while time allows; one that overruns its
task's deadline by more than a grace period is killed and restarted; while the workers together use more host
RAM than the ceiling, the largest one busy with a task is killed (its task settled as killed); at the run deadline
all are stopped. The caller sees one value per tick: `PoolProgress`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from typing import Callable

from .budget import Deadline
from .config import RunConfig
from .journal import Journal
from .resources import GIB, ResourceMonitor, tree_rss
from .tasks import Task
from .worker_process import worker_main

log = logging.getLogger(__name__)

RESTART_MIN_S = 30.0  # no point restarting a worker (model load) with less than this left


@dataclass(frozen=True)
class PoolProgress:
    """What the pool tells its caller once a tick: enough to update a progress bar and to re-assemble."""
    settled: int  # tasks of the queue no longer pending nor in flight
    emitted: int  # candidate lists journaled mid-task by the workers so far (a reason to re-assemble)


@dataclass
class WorkerSlot:
    worker_id: int
    gpu: str | None
    process: mp.Process | None = None
    status: object = None  # our end of the worker's pipe
    waiting: bool = False  # asked for a task and got none yet (nothing to hand out at the time)
    offered: tuple | None = None  # (task id, attempt) handed out and not yet announced as started
    task_id: str | None = None
    task_deadline: Deadline | None = None
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
                 journal_dir: str, run_deadline: Deadline, monitor: ResourceMonitor | None = None,
                 finished: dict | None = None, ram_ceiling_bytes: float | None = None):
        """ram_ceiling_bytes: host RAM the workers may use together (their process trees as the monitor samples
        them); None: no ceiling. Without a monitor nothing is measured, so none is enforced."""
        self.config, self.tasks, self.journal_dir, self.deadline = config, tasks, journal_dir, run_deadline
        self.ram_ceiling = ram_ceiling_bytes
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
            args=(slot.worker_id, slot.gpu, self.config, self.tasks, self.journal_dir, theirs, self.deadline,
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
            self.journal.run_event("worker-retired", worker_id=slot.worker_id, reason=why, restarts=slot.restarts)
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
                    kind, task_id, task_deadline = conn.recv()
                except (EOFError, OSError):  # the worker is gone; its process check handles the rest
                    conn.close()
                    slot.status = None
                    break
                if kind == "start":
                    self.queued.discard(task_id)
                    slot.attempt = slot.offered[1] if slot.offered and slot.offered[0] == task_id else 0
                    slot.offered = None
                    slot.task_id, slot.task_deadline, slot.task_started = task_id, task_deadline, time.time()
                elif kind == "end" and slot.task_id == task_id:
                    self._end_task(slot)
                    self._hand_out(slot)
                elif kind == "ready":
                    self._hand_out(slot)
                elif kind == "emitted":
                    self.emitted += 1

    def _kill_worker(self, slot: WorkerSlot, event: str, reason: str) -> None:
        if slot.process is not None:
            kill_tree(slot.process)
        if slot.status is not None:
            slot.status.close()
            slot.status = None
        self._reclaim_offer(slot)
        self._settle_lost_task(slot, event, reason)

    def progress(self) -> PoolProgress:
        in_flight = sum(s.task_id is not None for s in self.slots)
        return PoolProgress(settled=len(self.order) - len(self.queued) - in_flight, emitted=self.emitted)

    def _largest_worker(self) -> WorkerSlot | None:
        alive = [s for s in self.slots if s.process is not None and s.process.is_alive()]
        return max(alive, key=lambda s: tree_rss(s.process.pid), default=None)

    def _enforce_ram_ceiling(self, result: PoolResult) -> None:
        """Over the ceiling, the largest worker busy with a task dies, and its task is settled as killed. Only the
        workers count: icecuber (under 'main') enforces its own ceiling, and a GPU worker must never die for memory
        icecuber uses."""
        if self.ram_ceiling is None or self.monitor is None or not self.monitor.samples:
            return
        sample = self.monitor.samples[-1]
        workers_rss = sum(v for k, v in sample.tree_rss.items() if k.startswith("worker-"))
        if workers_rss <= self.ram_ceiling:
            return
        victim = self._largest_worker()
        if victim is not None and victim.task_id is not None:
            log.warning("RAM ceiling %.1f GiB reached: killing worker %d", self.ram_ceiling / GIB, victim.worker_id)
            result.killed_tasks.append(victim.task_id)
            self._kill_worker(victim, "killed", f"RAM ceiling {self.ram_ceiling / GIB:.1f} GiB reached")
            self.monitor.sample()  # a fresh reading, so the next tick does not kill again on the old one

    def run(self, on_tick: Callable[[PoolProgress], None] | None = None) -> PoolResult:
        """Until every task is settled or the deadline passes. on_tick(progress) runs about once a second."""
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
                elif (slot.task_deadline is not None
                      and now > slot.task_deadline.at + self.config.overrun_grace_s):
                    # Solvers check their deadline between phases; this far past it, the task is hung.
                    result.killed_tasks.append(slot.task_id)
                    self._kill_worker(slot, "timeout", f"overran its deadline by {self.config.overrun_grace_s:.0f}s")
                    self._restart(slot, "task overrun", counts=False)  # the task was at fault, not the worker
            self._enforce_ram_ceiling(result)
            if on_tick is not None:
                on_tick(self.progress())
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
                self._kill_worker(slot, "timeout", "run deadline reached")
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
