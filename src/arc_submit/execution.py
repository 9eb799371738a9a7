"""Sandboxed, parallel execution of generated programs (the induction solver's inner loop).

    with Executor(entry="main", library_dir="barc/", timeout_s=1.0) as ex:
        results = ex.run(programs, inputs)            # one ProgramResult per program text
    groups = group_by_behaviour(results)               # identical output sets -> program indices

Each program text runs once on every input (identical texts run once and share a result). A result holds, per
input, the output grid or a classified error: syntax, exception (with its message), timeout, memory,
invalid_output (not a rectangular 0-9 int grid of at most 30x30) or crashed.

Design: warm zygotes fork runners, runners are recycled. `workers` zygote processes (each its own session)
import numpy and the library once. A zygote forks a confined runner (see `sandbox`) and hands it programs one at
a time, each under a wall-clock deadline the zygote enforces from outside with SIGKILL to the runner's process
group. A runner runs at most `programs_per_process` programs (default 32) and is replaced at once after a
timeout, a crash, a MemoryError or a program that leaves a child process behind; replacing it is a ~2 ms fork of
the warm zygote, not a ~0.2 s interpreter start. The caller replaces a zygote only if it dies or stops answering.

Why, measured on the 2-core dev machine (benchmarks/execution.py, 2,000 programs over 100 real tasks, 2 workers,
realistic programs; the in-process pool was measured by an earlier version of the benchmark and is no longer an
option): persistent in-process pool 6,305 runs/s; runner reused for up to 32 programs 2,588 runs/s;
a fresh fork per program 365 runs/s (the fork + teardown of a numpy-loaded process costs ~2-5 ms here, far more
than a typical program). The in-process pool is unsafe (a hang or `os._exit` takes the worker and ~0.2 s to
restart it; a program can chdir, patch numpy or leak memory for every later program), so the design keeps the
pool's speed with per-program outside kills. The price: programs that share a runner share module state, so a
program that patches a module (say numpy) can affect up to 31 later programs of its runner; LLM programs rarely
do, and `programs_per_process=1` gives every program a fresh fork for those who want it at the cost above.
Programs are treated as buggy, not malicious: the defences cover hangs, crashes, forks, exits, signals to the
parent, memory and file writes (Landlock), not a program crafted to forge the result protocol.

The caller never forks (it may hold CUDA contexts and threads): zygotes are started with a fresh interpreter.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import psutil

from .sandbox import CRASHED, ERROR_CLASSES, EXCEPTION, INVALID_OUTPUT, MEMORY, OK, SYNTAX, TIMEOUT  # noqa: F401
from .tasks import Grid

log = logging.getLogger(__name__)

STARTUP_ALLOWANCE_S = 120.0  # numpy + a user library (BARC's pulls scipy) on a busy machine
MAX_RESTARTS_IN_A_ROW = 50  # a zygote that dies on every program means a broken environment, not bad programs
WATCHDOG_GRACE_S = 0.5  # a zygote enforces the timeout itself; the caller steps in only if the zygote is stuck


class ExecutionError(RuntimeError):
    """The executor cannot run programs at all (a broken library, zygotes that die on start)."""


@dataclass(frozen=True)
class ExecutionSettings:
    # The function each program defines: "transform" (what BARC's published induction models write: their
    # training data renamed the seeds' "main"), or "main" for programs in the style of BARC's seeds.
    entry: str = "transform"
    library_dir: str | None = None  # a folder whose modules programs may import (BARC: the one with common.py)
    # Complete a library's Color class with the other name of each renamed colour (sandbox.COLOUR_ALIASES:
    # PURPLE/TEAL, BROWN/MAROON, GRAY/GREY), so BARC's model's Color.PURPLE runs against BARC's common.py.
    colour_aliases: bool = True
    timeout_s: float = 1.0  # wall clock per program run (all inputs of the task together)
    memory_mb: int = 1024  # address space a program may add to the warm zygote's
    workers: int | None = None  # default: the CPUs this process may use
    landlock: bool = True  # confine children with Landlock when the kernel has it
    programs_per_process: int = 32  # programs a forked runner may run before it is replaced (1: a fork each)
    queue_depth: int = 2  # jobs sent ahead to each zygote so it never waits for the caller

    def __post_init__(self):
        # Checked here, so the preflight (it builds every solver's options) fails a run whose library is missing
        # or one folder off, rather than every program of a 12-hour run failing to import it.
        problem = library_dir_problem(self.library_dir) if self.library_dir else None
        if problem:
            raise ValueError(f"option library_dir={self.library_dir!r}: {problem}")

    def resolved_workers(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))


def library_dir_problem(path: str) -> str | None:
    """Why programs could not import modules from the folder `path`, with the fix; None when it holds one."""
    folder = Path(path)
    if not folder.exists():
        return "no such folder; give the folder holding the modules programs import (BARC: the one with common.py)"
    if not folder.is_dir():
        return "a file, not a folder; give the folder that holds it"
    try:
        if any(p.suffix == ".py" for p in folder.iterdir()):
            return None
        nested = sorted(folder.glob("*/common.py")) + sorted(folder.glob("*/*/common.py"))
    except OSError as e:
        return f"cannot be read ({e.strerror}); give a folder this run may read"
    # A Kaggle dataset uploaded as a folder mounts one level further down than people expect.
    hint = f"; there is a common.py in {nested[0].parent}: give that folder" if nested else ""
    return f"holds no Python module (*.py) at its top level, so `from common import *` would fail{hint}"


@dataclass(frozen=True)
class Outcome:
    """What a program did with one input."""
    grid: Grid | None  # int8, valid ARC grid; None on error
    error: str | None = None  # one of ERROR_CLASSES
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def key(self) -> tuple:
        return (self.grid.shape, self.grid.tobytes()) if self.error is None else (self.error,)

    def to_json(self):
        return self.grid.tolist() if self.error is None else {"error": self.error, "message": self.message}


@dataclass(frozen=True, eq=False)
class ProgramResult:
    outcomes: tuple[Outcome, ...]  # one per input, in input order
    seconds: float  # wall time of the run inside the zygote (fork to reap)
    first_index: int  # index of the first program with the same text (its own index when unique)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def error(self) -> str | None:
        """The first error class among the inputs, or None when every input gave a grid."""
        return next((o.error for o in self.outcomes if not o.ok), None)

    def behaviour_key(self) -> tuple:
        """Equal for two programs exactly when they produced the same grid (or error class) on every input."""
        return tuple(o.key() for o in self.outcomes)

    def matches(self, expected: Sequence[Grid | None]) -> bool:
        """True when every known expected grid (None = unknown) was reproduced."""
        return all(want is None or (o.ok and o.grid.shape == want.shape and np.array_equal(o.grid, want))
                   for o, want in zip(self.outcomes, expected, strict=True))


def group_by_behaviour(results: Sequence[ProgramResult]) -> dict[tuple, list[int]]:
    """behaviour key -> indices of the programs that behaved that way, largest group first."""
    groups: dict[tuple, list[int]] = {}
    for i, result in enumerate(results):
        groups.setdefault(result.behaviour_key(), []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def execute(programs: Sequence[str], inputs: Sequence[Grid], **settings) -> list[ProgramResult]:
    """One-shot convenience: start zygotes, run, stop. Keep an Executor open when calling repeatedly."""
    with Executor(**settings) as executor:
        return executor.run(programs, inputs)


_BOOT = ("import sys; sys.path.insert(0, sys.argv[2]); "
         "from arc_submit.sandbox import zygote_main; zygote_main(int(sys.argv[1]))")


class _Zygote:
    """Caller-side handle of one zygote process."""

    def __init__(self, settings: dict, env: dict):
        parent_sock, child_sock = socket.socketpair()
        package_parent = str(Path(__file__).resolve().parents[1])
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(child_sock.fileno()), package_parent], pass_fds=[child_sock.fileno()],
            env=env, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.conn.send(settings)
        self.ready = False
        self.started = time.monotonic()
        self.last_progress = self.started
        self.outstanding: deque[int] = deque()  # job ids in the order the zygote will run them
        self.input_sets: set[int] = set()

    def overdue(self, now: float, timeout_s: float) -> float:
        """Seconds past the point where this zygote should have answered (negative: not yet)."""
        if not self.ready:
            return now - self.started - STARTUP_ALLOWANCE_S
        if not self.outstanding:
            return float("-inf")
        return now - self.last_progress - timeout_s - WATCHDOG_GRACE_S

    def kill(self) -> None:
        """SIGKILL the zygote and everything still in its session (its program children and their children)."""
        sid = self.process.pid
        try:
            self.conn.close()
        except OSError:
            pass
        for _ in range(20):
            victims = [p.pid for p in psutil.process_iter() if _session_of(p.pid) == sid]
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.process.poll() is None:
                try:
                    self.process.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass
            time.sleep(0.005)
        self.process.wait()


def _session_of(pid: int) -> int | None:
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None  # already dead, waiting for its parent to reap it
        return os.getsid(pid)
    except (OSError, psutil.Error):
        return None


class Executor:
    """A pool of warm zygotes; reuse one across tasks (starting it costs ~0.2 s per worker)."""

    def __init__(self, settings: ExecutionSettings | None = None, **overrides):
        self.settings = replace(settings or ExecutionSettings(), **overrides)  # checks library_dir
        self._scratch_root = tempfile.mkdtemp(prefix="arc-exec-")
        self._env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                         PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", HOME=self._scratch_root,
                         TMPDIR=self._scratch_root)
        self._next_set_id = 0
        self.sandboxed: bool | None = None  # whether Landlock confines the children (known once a zygote is up)
        self._zygotes = [self._start(i) for i in range(self.settings.resolved_workers())]
        self.restarts = 0  # zygotes replaced after dying or getting stuck
        self.programs_run = 0  # distinct (text, inputs) jobs actually run
        self._restarts_in_a_row = 0

    def _start(self, slot: int) -> _Zygote:
        s = self.settings
        scratch = os.path.join(self._scratch_root, f"worker{slot}-{time.monotonic_ns()}")
        return _Zygote({"entry": s.entry, "library_dir": str(Path(s.library_dir).resolve()) if s.library_dir
                        else None, "timeout_s": float(s.timeout_s), "memory_mb": int(s.memory_mb),
                        "landlock": s.landlock, "colour_aliases": s.colour_aliases,
                        "programs_per_process": max(1, int(s.programs_per_process)), "scratch_dir": scratch}, self._env)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for z in self._zygotes:
            try:
                z.conn.send(("stop",))
            except OSError:
                pass
        for z in self._zygotes:
            try:
                z.process.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            z.kill()
        self._zygotes = []
        shutil.rmtree(self._scratch_root, ignore_errors=True)

    def run(self, programs: Sequence[str], inputs: Sequence[Grid]) -> list[ProgramResult]:
        return self.run_tasks([(programs, inputs)])[0]

    def run_tasks(self, batches: Sequence[tuple[Sequence[str], Sequence[Grid]]],
                  on_result: Callable[[], None] | None = None) -> list[list[ProgramResult]]:
        """Several (programs, inputs) batches through one queue, so small tasks still fill every worker."""
        if not self._zygotes:
            raise ExecutionError("this Executor is closed")
        jobs: list[tuple[str, int]] = []  # (code, input set id)
        input_sets: dict[int, list] = {}
        job_of: list[list[int]] = []  # per batch, per program: its job id (shared by identical texts)
        first_of: list[list[int]] = []
        for programs, inputs in batches:
            set_id = self._next_set_id
            self._next_set_id += 1
            input_sets[set_id] = [np.asarray(g).tolist() for g in inputs]
            seen: dict[str, tuple[int, int]] = {}
            job_ids, firsts = [], []
            for i, code in enumerate(programs):
                if code not in seen:
                    seen[code] = (len(jobs), i)
                    jobs.append((code, set_id))
                job_ids.append(seen[code][0])
                firsts.append(seen[code][1])
            job_of.append(job_ids)
            first_of.append(firsts)
        raw = self._run_jobs(jobs, input_sets, on_result)
        out = []
        for b, (job_ids, firsts) in enumerate(zip(job_of, first_of)):
            out.append([ProgramResult(raw[j][0], raw[j][1], first) for j, first in zip(job_ids, firsts)])
        return out

    def _run_jobs(self, jobs, input_sets, on_result) -> list[tuple[tuple[Outcome, ...], float]]:
        results: list = [None] * len(jobs)
        self.programs_run += len(jobs)
        pending = deque(range(len(jobs)))
        timeout_s = self.settings.timeout_s

        def finish(job: int, outcomes, seconds: float) -> None:
            results[job] = (tuple(outcomes), seconds)
            if on_result:
                on_result()

        def fail(job: int, kind: str, message: str) -> None:
            n = len(input_sets[jobs[job][1]])
            finish(job, [Outcome(None, kind, message)] * n, 0.0)

        def replace_zygote(slot: int, kind: str, message: str) -> None:
            z = self._zygotes[slot]
            log.warning("worker %d replaced: %s", slot, message)
            z.kill()
            self._restarts_in_a_row += 1
            if self._restarts_in_a_row > MAX_RESTARTS_IN_A_ROW:
                self.close()
                raise ExecutionError(f"workers died {MAX_RESTARTS_IN_A_ROW} times in a row without finishing a "
                                     f"program ({message}); run with -v and check the Python environment")
            if z.outstanding:
                fail(z.outstanding.popleft(), kind, message)  # the program that was running when it went
            pending.extendleft(reversed(z.outstanding))  # the others never started: run them elsewhere
            self._zygotes[slot] = self._start(slot)
            self.restarts += 1

        while pending or any(z.outstanding for z in self._zygotes):
            for slot, z in enumerate(self._zygotes):
                while z.ready and pending and len(z.outstanding) < self.settings.queue_depth:
                    job = pending.popleft()
                    code, set_id = jobs[job]
                    try:
                        if set_id not in z.input_sets:
                            z.conn.send(("inputs", set_id, input_sets[set_id]))
                            z.input_sets.add(set_id)
                        if not z.outstanding:
                            z.last_progress = time.monotonic()
                        z.conn.send(("run", job, code, set_id))
                    except OSError:  # it died (its last program killed it) before we read its EOF
                        pending.appendleft(job)  # never started: it runs elsewhere
                        replace_zygote(slot, CRASHED, "the program killed its worker process")
                        break
                    z.outstanding.append(job)
            now = time.monotonic()
            wait_s = max(0.0, -max(z.overdue(now, timeout_s) for z in self._zygotes))
            by_conn = {z.conn: slot for slot, z in enumerate(self._zygotes)}
            for conn in wait(list(by_conn), timeout=min(wait_s, 3600)):
                slot = by_conn[conn]
                z = self._zygotes[slot]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    replace_zygote(slot, CRASHED, "the program killed its worker process")
                    continue
                if message[0] == "result":
                    _, job, outcomes, seconds = message
                    z.outstanding.remove(job)
                    self._restarts_in_a_row = 0
                    z.last_progress = time.monotonic()
                    finish(job, [_outcome(kind, payload) for kind, payload in outcomes], seconds)
                elif message[0] == "ready":
                    z.ready, z.last_progress = True, time.monotonic()
                    if self.sandboxed is None:
                        self.sandboxed = bool(message[1])
                        log.info("%d workers up; Landlock confinement: %s", len(self._zygotes),
                                 "on" if self.sandboxed else "off (kernel lacks it or disabled)")
                        for module, names in message[2].items():
                            log.info("%s: Color given the aliases %s (BARC's renamed colours)", module,
                                     ", ".join(names))
                elif message[0] == "error":
                    self.close()
                    raise ExecutionError(f"workers cannot start: {message[1]} (while importing the library in "
                                         f"{self.settings.library_dir}; fix the library or --library)")
            now = time.monotonic()
            for slot, z in enumerate(self._zygotes):
                if z.overdue(now, timeout_s) > 0:
                    if not z.ready:
                        self.close()
                        raise ExecutionError(f"a worker did not start within {STARTUP_ALLOWANCE_S:g} s")
                    replace_zygote(slot, TIMEOUT, f"no answer within {timeout_s:g} s (worker stuck or stopped)")
        for z in self._zygotes:  # input sets are per call; free them in the zygotes
            for set_id in z.input_sets:
                try:
                    z.conn.send(("forget", set_id))
                except OSError:  # a zygote that died after its last result: replaced on the next call
                    break
            z.input_sets.clear()
        return results


def _outcome(kind: str, payload) -> Outcome:
    if kind == OK:
        height, width, cells = payload
        return Outcome(np.frombuffer(cells, dtype=np.int8).reshape(height, width).copy())
    return Outcome(None, kind, payload)


def error_counts(results: Sequence[ProgramResult]) -> Counter:
    """Programs per outcome: "ok" for those with a grid on every input, else their first error class."""
    return Counter(r.error or OK for r in results)
