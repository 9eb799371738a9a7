"""The local backend: one spawned worker process per GPU (or N on a CPU), each over a pipe of its own.

Why a pipe per worker and not a shared queue: a worker killed at any moment cannot take a lock with it and jam
the others (a shared multiprocessing.Queue did). The pipe is written synchronously, so a worker that dies right
after announcing a task has still announced it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from multiprocessing import connection as mp_connection

from .worker_pool import WorkerExit, WorkerLink
from .worker_process import WorkerRun, worker_main

log = logging.getLogger(__name__)


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


class ProcessLink:
    """One spawned worker process and our end of its pipe (WorkerLink)."""

    def __init__(self, process: mp.Process, conn):
        self.process, self.conn = process, conn
        self.pid = process.pid

    @property
    def listening(self) -> bool:
        return self.conn is not None

    def send(self, item) -> bool:
        try:
            self.conn.send(item)
            return True
        except (OSError, ValueError, AttributeError):  # the worker died meanwhile (or its pipe is closed)
            return False

    def receive(self) -> list[tuple]:
        messages = []
        while self.conn is not None:
            try:
                if not self.conn.poll():
                    break
                messages.append(self.conn.recv())
            except (EOFError, OSError):  # the worker is gone; exit_status says how
                self._close_pipe()
        return messages

    def exit_status(self) -> WorkerExit | None:
        if self.process.is_alive():
            return None
        self.process.join()
        code = self.process.exitcode
        return WorkerExit(clean=code == 0, why=f"worker exited with code {code}")

    def kill(self) -> None:
        kill_tree(self.process)
        self._close_pipe()

    def stop(self, timeout_s: float) -> None:
        self.process.join(timeout=timeout_s)
        if self.process.is_alive():
            kill_tree(self.process)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class ProcessLauncher:
    """Starts worker processes on this machine (WorkerLauncher): one per entry of `gpus` (a CUDA_VISIBLE_DEVICES
    id, or None for a CPU worker)."""

    def __init__(self, run: WorkerRun, journal_dir: str, gpus: list[str | None]):
        self.run, self.journal_dir, self.slots = run, journal_dir, list(gpus)
        self.ctx = mp.get_context("spawn")  # CUDA cannot survive a fork; spawn gives each worker a clean start

    def launch(self, worker_id: int) -> WorkerLink:
        ours, theirs = self.ctx.Pipe(duplex=True)
        gpu = self.slots[worker_id]
        process = self.ctx.Process(target=worker_main, name=f"arc-worker-{worker_id}", daemon=False,
                                   args=(worker_id, gpu, self.run, self.journal_dir, theirs))
        process.start()
        theirs.close()
        log.info("worker %d started (pid %d, gpu %s)", worker_id, process.pid, gpu)
        return ProcessLink(process, ours)

    def wait(self, links: list[WorkerLink], timeout_s: float) -> None:
        conns = [link.conn for link in links if isinstance(link, ProcessLink) and link.conn is not None]
        if conns:
            mp_connection.wait(conns, timeout=timeout_s)
        else:
            time.sleep(timeout_s)

    def close(self) -> None:
        pass
