"""The supervisor of the workers: hands out tasks, watches the workers, enforces the per-task deadline and the
host-RAM ceiling, and stops everything at the run's deadline. What carries its messages is a backend's: spawned
processes over pipes on this machine (local_workers.py) or Ray actors across a cluster (ray_workers.py), each a
WorkerLauncher of WorkerLinks; the scheduling here is the same for both.

Why tasks are pulled and not pre-split: task costs differ by 100×, so any static split leaves GPUs idle while
another still has a backlog. Tasks go out largest first (longest-processing-time-first keeps the tail short).

A worker asks (`ready`, then `end` after each task) and gets the next task or None; it announces each task
(`start`) before solving it, and says when it journaled candidates mid-task (`emitted`). worker_process.py has the
worker's side.

A worker that dies has its task retried once elsewhere and is restarted while time allows; one that overruns its
task's deadline by more than a grace period is killed and restarted; while the workers together use more host
RAM than the ceiling, the largest one busy with a task is killed (its task settled as killed); at the run deadline
all are stopped. The caller sees one value per tick: `PoolProgress`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .budget import Deadline, allot_task_deadline
from .config import RunConfig
from .journal import Journal
from .resources import GIB, ResourceMonitor, tree_rss

log = logging.getLogger(__name__)

RESTART_MIN_S = 30.0  # no point restarting a worker (model load) with less than this left


@dataclass(frozen=True)
class WorkerExit:
    """How a worker ended: cleanly (it was told to stop), or why not."""
    clean: bool
    why: str


class WorkerLink(Protocol):
    """One started worker as the supervisor sees it."""
    pid: int | None  # its process on this machine (the monitor and the RAM ceiling watch it); None elsewhere

    @property
    def listening(self) -> bool:
        """Whether messages from it can still come."""

    def send(self, item) -> bool:
        """A task, (task id, attempt, its Deadline), or None (stop); False when it is gone."""

    def receive(self) -> list[tuple]:
        """The messages (kind, task id, data) it sent since the last call, without waiting."""

    def exit_status(self) -> WorkerExit | None:
        """None while it runs."""

    def kill(self) -> None:
        """At once, with everything it started."""

    def stop(self, timeout_s: float) -> None:
        """After None was sent: wait for it to end, then kill it if it has not."""


class WorkerLauncher(Protocol):
    slots: list  # one entry per worker: what it runs on (a GPU id, None for a CPU worker), for the log

    def launch(self, worker_id: int) -> WorkerLink:
        """A worker started, loading its engine; it says `ready` when it has."""

    def wait(self, links: list[WorkerLink], timeout_s: float) -> None:
        """Until one of links may have something to say, or timeout_s."""

    def close(self) -> None:
        """Once every worker is stopped."""


@dataclass(frozen=True)
class PoolProgress:
    """What the pool tells its caller once a tick: enough to update a progress bar and to re-assemble."""
    settled: int  # tasks of the queue no longer pending nor in flight
    emitted: int  # candidate lists journaled mid-task by the workers so far (a reason to re-assemble)


@dataclass
class WorkerSlot:
    worker_id: int
    link: WorkerLink | None = None  # None: not running (retired, or not restarted)
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


class WorkerPool:
    def __init__(self, config: RunConfig, order: list[str], launcher: WorkerLauncher, journal_dir: str,
                 run_deadline: Deadline, monitor: ResourceMonitor | None = None,
                 ram_ceiling_bytes: float | None = None):
        """order: the task ids to solve, in hand-out order. ram_ceiling_bytes: host RAM the workers may use together
        (the process trees of those on this machine, as the monitor samples them); None: no ceiling. Without a
        monitor nothing is measured, so none is enforced."""
        self.config, self.launcher, self.deadline = config, launcher, run_deadline
        self.ram_ceiling = ram_ceiling_bytes
        self.slots = [WorkerSlot(i) for i in range(len(launcher.slots))]
        self.monitor = monitor
        self.journal = Journal(journal_dir, "supervisor")
        self.order = list(order)
        self.pending: list[tuple[str, int]] = [(task_id, 0) for task_id in order]  # to hand out, in this order
        self.queued = set(order)  # not yet started (pending, or handed out and not yet announced)
        self.retried: set[str] = set()
        self.emitted = 0  # candidate lists journaled mid-task by the workers (a reason to re-assemble)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.link = self.launcher.launch(slot.worker_id)
        slot.waiting, slot.offered = False, None
        self._watch(slot)

    def _watch(self, slot: WorkerSlot) -> None:
        """Its process tree in the monitor's samples, once known (a Ray actor's when it is up) and on this machine."""
        if self.monitor is not None and slot.link.pid is not None:
            self.monitor.watch(f"worker-{slot.worker_id}", slot.link.pid)

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
            slot.link = None
            return
        if self.deadline.remaining() < RESTART_MIN_S or not self.queued:
            log.warning("worker %d not restarted after %s: %s", slot.worker_id, why,
                        "too little time left" if self.queued else "no tasks left")
            slot.link = None
            return
        slot.restarts += counts
        self._spawn(slot)

    def _hand_out(self, slot: WorkerSlot) -> None:
        """Answer a worker's request: the next task, or (nothing pending) make it wait for a retry or the end."""
        if not self.pending or self.deadline.passed():
            slot.waiting = True
            return
        task_id, attempt = self.pending.pop(0)
        # Its share of the time left: remaining × workers / tasks not yet started (budget.py), from now.
        task_deadline = allot_task_deadline(self.deadline, len(self.slots), len(self.queued), self.config.max_task_s)
        if not slot.link.send((task_id, attempt, task_deadline)):  # it died meanwhile: back first in line
            self.pending.insert(0, (task_id, attempt))
            return
        slot.waiting, slot.offered = False, (task_id, attempt)

    def _hand_out_to_waiting(self) -> None:
        for slot in self.slots:
            if slot.waiting and slot.link is not None and slot.link.listening and self.pending:
                self._hand_out(slot)

    def _reclaim_offer(self, slot: WorkerSlot) -> None:
        """A worker that died between receiving a task and starting it: the task goes back first in line, to a
        worker waiting for one if there is."""
        if slot.offered is not None:
            self.pending.insert(0, slot.offered)
            slot.offered = None
            self._hand_out_to_waiting()

    def _drain_status(self, timeout: float) -> None:
        links = [slot.link for slot in self.slots if slot.link is not None and slot.link.listening]
        if timeout > 0:
            self.launcher.wait(links, timeout)
        for slot in self.slots:
            if slot.link is None:
                continue
            for kind, task_id, task_deadline in slot.link.receive():
                if kind == "start":
                    self.queued.discard(task_id)
                    slot.attempt = slot.offered[1] if slot.offered and slot.offered[0] == task_id else 0
                    slot.offered = None
                    slot.task_id, slot.task_deadline, slot.task_started = task_id, task_deadline, time.time()
                elif kind == "end" and slot.task_id == task_id:
                    self._end_task(slot)
                    self._hand_out(slot)
                elif kind == "ready":
                    self._watch(slot)
                    self._hand_out(slot)
                elif kind == "emitted":
                    self.emitted += 1

    def _kill_worker(self, slot: WorkerSlot, event: str, reason: str) -> None:
        if slot.link is not None:
            slot.link.kill()
        self._reclaim_offer(slot)
        self._settle_lost_task(slot, event, reason)

    def progress(self) -> PoolProgress:
        in_flight = sum(s.task_id is not None for s in self.slots)
        return PoolProgress(settled=len(self.order) - len(self.queued) - in_flight, emitted=self.emitted)

    def _largest_worker(self) -> WorkerSlot | None:
        here = [s for s in self.slots if s.link is not None and s.link.pid is not None and s.link.exit_status() is None]
        return max(here, key=lambda s: tree_rss(s.link.pid), default=None)

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
                if slot.link is None:
                    continue
                ended = slot.link.exit_status()
                if ended is not None:
                    self._drain_status(timeout=0)  # whatever it announced before it ended has come by now
                    slot.link = None
                    self._reclaim_offer(slot)
                    if slot.task_id is not None:
                        result.killed_tasks.append(slot.task_id)
                        self._settle_lost_task(slot, "killed", ended.why)
                    if not ended.clean or self.queued:
                        self._restart(slot, ended.why)
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
            if not any(s.link is not None for s in self.slots):
                log.error("no worker left alive; %d task(s) unstarted", len(self.queued))
                break

    def _shutdown(self, result: PoolResult) -> None:
        for slot in self.slots:
            if slot.link is not None:
                slot.link.send(None)  # a waiting worker ends; a busy one reads it after its task
        for slot in self.slots:
            if slot.link is None:
                continue
            if slot.task_id is not None:  # still solving at the deadline: stop it now
                result.killed_tasks.append(slot.task_id)
                self._kill_worker(slot, "timeout", "run deadline reached")
            else:
                slot.link.stop(timeout_s=5)
            slot.link = None
        self.launcher.close()
        result.unstarted_tasks = [t for t in self.order if t in self.queued]
        for task_id in result.unstarted_tasks:
            self.journal.write("skipped", task_id, reason="run deadline reached before it started")
        self.journal.close()
