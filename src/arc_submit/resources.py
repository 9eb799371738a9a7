"""Host RAM and GPU memory, watched with psutil (and nvidia-smi when there is one), sampled in a thread.

The main process never initialises CUDA itself (its workers own the GPUs), so GPU memory is read through
nvidia-smi rather than torch.

Host memory is read two ways. Resident (RSS) counts every page a process maps, a model file read through mmap
included: while vLLM read a 16 GB bf16 checkpoint, a worker's RSS rose to 15.6 GB for three seconds, of which
14.7 GB were the file's page cache (shared between processes reading the same file, and reclaimable). Private is
resident less file-backed and shared pages (psutil's `shared`): what the process holds for itself, the figure
that adds up across four workers.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psutil

log = logging.getLogger(__name__)
GIB = 1024 ** 3


def tree_memory(pid: int, skip: frozenset[int] = frozenset()) -> tuple[int, int]:
    """(resident, private) bytes of a process and its descendants, leaving out the subtrees rooted at `skip` pids
    (so a parent and its separately watched children are each counted once). (0, 0) if it is gone."""
    resident, private, stack = 0, 0, [pid]
    while stack:
        try:
            proc = psutil.Process(stack.pop())
            info = proc.memory_info()
            resident += info.rss
            private += info.rss - getattr(info, "shared", 0)  # Linux: file-backed + shared memory pages
            stack.extend(c.pid for c in proc.children() if c.pid not in skip)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return resident, private


def tree_rss(pid: int, skip: frozenset[int] = frozenset()) -> int:
    return tree_memory(pid, skip)[0]


def gpu_memory_used_mib() -> dict[int, int]:
    """{gpu index: MiB used} from nvidia-smi; empty without one."""
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    used = {}
    for line in out.strip().splitlines():
        try:
            idx, mib = (int(x) for x in line.split(","))
            used[idx] = mib
        except ValueError:
            continue
    return used


@dataclass
class Sample:
    t: float
    host_available: int  # bytes the OS could still give
    tree_rss: dict[str, int]  # bytes per named process tree (main, worker-0, icecuber, …)
    gpu_mib: dict[int, int] = field(default_factory=dict)
    tree_private: dict[str, int] = field(default_factory=dict)  # the same trees, private bytes only


class ResourceMonitor:
    """Samples every `interval` seconds in a daemon thread; `watch(name, pid)` adds a process tree."""

    def __init__(self, interval: float = 2.0, gpu: bool = True):
        self.interval = interval
        self.gpu = gpu
        self.samples: list[Sample] = []
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-monitor", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._pids[name] = pid

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._pids.pop(name, None)

    def sample(self) -> Sample:
        with self._lock:
            pids = dict(self._pids)
        roots = frozenset(pids.values())
        memory = {n: tree_memory(p, roots - {p}) for n, p in pids.items()}
        s = Sample(time.time(), psutil.virtual_memory().available, {n: m[0] for n, m in memory.items()},
                   gpu_memory_used_mib() if self.gpu else {}, {n: m[1] for n, m in memory.items()})
        with self._lock:
            self.samples.append(s)
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a monitoring hiccup must never take the run down
                log.exception("resource sample failed")

    def start(self) -> "ResourceMonitor":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sample()  # a run shorter than one interval still gets a reading with its processes
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 1)

    def peak_rss(self, name: str | None = None) -> int:
        """Peak of one tree, or of the sum of all trees at one instant."""
        with self._lock:
            if name is None:
                return max((sum(s.tree_rss.values()) for s in self.samples), default=0)
            return max((s.tree_rss.get(name, 0) for s in self.samples), default=0)

    def peaks_by_tree(self) -> dict[str, int]:
        with self._lock:
            names = {n for s in self.samples for n in s.tree_rss}
        return {n: self.peak_rss(n) for n in sorted(names)}

    def private_peaks_by_tree(self) -> dict[str, int]:
        with self._lock:
            names = sorted({n for s in self.samples for n in s.tree_private})
            return {n: max(s.tree_private.get(n, 0) for s in self.samples) for n in names}

    def peak_gpu_mib(self) -> dict[int, int]:
        with self._lock:
            gpus = {g for s in self.samples for g in s.gpu_mib}
            return {g: max(s.gpu_mib.get(g, 0) for s in self.samples) for g in sorted(gpus)}
