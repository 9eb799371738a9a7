"""One icecuber program as a supervised OS process: started niced, leading its own process group (a kill takes
everything it started), dying with the process that started it, its resident memory measured over its whole tree.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

import psutil

from .files import StagedTasks
from .records import RunRecord

MIB = 2 ** 20

try:  # looked up once here: a forked child must not load libraries (another thread may hold the loader's lock)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a program just forked (preexec_fn): SIGKILL it when the thread that started it dies, so a killed run
    never leaves icecuber searching on its own (Linux prctl; elsewhere nothing). Our launching thread kills its
    programs itself before it ends, so this fires only when the whole process dies."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of the process and all its descendants; what already ended counts as 0."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class RunningProgram:
    """A live program: its Popen, psutil handle, log files, time cap and the record it will end with."""

    def __init__(self, record: RunRecord, popen: subprocess.Popen, logs: list, cap_s: float | None):
        self.record, self.popen, self.logs, self.cap_s = record, popen, logs, cap_s
        self.started = time.time()
        self.proc = psutil.Process(popen.pid)
        self.rss = 0

    @classmethod
    def launch(cls, staged: StagedTasks, record: RunRecord, nice: int, cap_s: float | None) -> "RunningProgram":
        """`run <index> <depth>` in the work folder, stdout and stderr to its log files. OSError when it cannot
        start (e.g. a program built for another machine)."""
        logs = [open(staged.log_path(record.index, record.depth, kind), "wb") for kind in ("out", "err")]
        try:
            popen = subprocess.Popen([str(staged.program), str(record.index), str(record.depth)], cwd=staged.work_dir,
                                     stdin=subprocess.DEVNULL, stdout=logs[0], stderr=logs[1], start_new_session=True,
                                     preexec_fn=die_with_parent)
        except OSError:
            for f in logs:
                f.close()
            raise
        try:
            psutil.Process(popen.pid).nice(nice)
        except psutil.Error:
            pass  # it already ended; nothing to lower
        record.pid = popen.pid
        return cls(record, popen, logs, cap_s)

    @property
    def exited(self) -> bool:
        return self.popen.poll() is not None

    @property
    def past_cap(self) -> bool:
        return self.cap_s is not None and time.time() - self.started > self.cap_s

    def measure(self) -> int:
        """Its tree's resident bytes now; the record keeps the peak."""
        self.rss = tree_rss(self.proc)
        self.record.peak_rss_mb = max(self.record.peak_rss_mb, self.rss / MIB)
        return self.rss

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # the whole group: nothing it started survives
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> None:
        """Clear its process group, wait for it, close its logs; its exit code and seconds go on the record."""
        self.kill()  # also takes any straggler it left in its group after exiting
        self.popen.wait()
        for f in self.logs:
            f.close()
        self.record.exit_code = self.popen.returncode
        self.record.seconds = round(time.time() - self.started, 3)
