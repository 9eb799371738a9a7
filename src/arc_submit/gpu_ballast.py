"""L4 emulation on a bigger GPU: one ballast process per card allocates all but `keep_gib` of what is free, so
the workers started after it see about what Kaggle's L4 shows (22.28 GiB to PyTorch, about 21.3 GiB free once
a worker has its own CUDA context). Seen working on H100s (2026-11-25).

The ballast holds its memory until its stdin closes: when the run ends, or when the run's process dies (the pipe
closes with it), so an emulation never outlives its run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

log = logging.getLogger(__name__)

L4_GIB = 22.3

_BALLAST = r"""
import sys, torch
keep = int(float(sys.argv[1]) * 2**30)
free, total = torch.cuda.mem_get_info()
grab = free - keep
ballast = torch.empty(max(grab, 0), dtype=torch.uint8, device="cuda") if grab > 0 else None
free_after, _ = torch.cuda.mem_get_info()
print(f"ready {max(grab, 0) / 2**30:.2f} {free_after / 2**30:.2f} {total / 2**30:.2f}", flush=True)
sys.stdin.read()  # until the run closes the pipe (or dies)
"""


class Ballast:
    """Ballast on the given GPUs (CUDA_VISIBLE_DEVICES ids); use as a context manager or call stop()."""

    def __init__(self, gpus: list[str], keep_gib: float = L4_GIB, timeout_s: float = 120.0):
        self.procs: list[subprocess.Popen] = []
        self.report: dict[str, str] = {}
        t0 = time.time()
        for gpu in gpus:
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            self.procs.append(subprocess.Popen([sys.executable, "-c", _BALLAST, str(keep_gib)], env=env,
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for gpu, proc in zip(gpus, self.procs):
            line = proc.stdout.readline().split()
            if not line or line[0] != "ready":
                self.stop()
                raise RuntimeError(f"GPU {gpu}: the L4-emulation ballast did not start (exit {proc.poll()})")
            grabbed, free_after, total = map(float, line[1:])
            self.report[gpu] = f"held {grabbed:.1f} of {total:.1f} GiB, {free_after:.2f} GiB left"
            log.info("L4 emulation on GPU %s: %s (keep %.1f GiB)", gpu, self.report[gpu], keep_gib)
        log.info("L4 emulation ready on %d GPU(s) in %.1f s", len(gpus), time.time() - t0)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
