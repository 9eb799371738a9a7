"""The worker side of `execution`: a warm "zygote" process that forks confined runners which run programs.

A zygote is started by `execution.Executor` as `python -c ...` with a socket on a known fd. It imports numpy and
the program library once, then forks a runner that:
  - leaves the zygote's process group (so its whole group can be killed) and dies with the zygote (PDEATHSIG);
  - sends stdin/stdout/stderr to /dev/null and closes every other inherited fd but its job and result pipes;
  - works in a scratch dir, under rlimits (address space, CPU seconds, file size, no core dumps);
  - is confined by Landlock where the kernel has it: no file writes outside the scratch dir, no TCP, and no
    signals to processes outside the runner (so `os.kill(os.getppid(), ...)` cannot touch the zygote or caller);
  - runs the programs the zygote sends, one at a time, each on every input, writing one small binary frame per
    input and an end frame per program to the result pipe.
The zygote waits on the result pipe and a pidfd with a per-program deadline measured from outside the runner; at
the deadline it SIGKILLs the runner's process group, so nothing inside the program (a bare `except:`, a signal
handler) can stop it. The runner is also killed and replaced after a crash, a MemoryError, stray bytes on the
pipe, a program that leaves a child process, and after `programs_per_process` programs. After every program the
zygote kills any stray descendant (it is a subreaper, so even setsid escapees come back to it).

This module imports nothing heavy at the top: the zygote must set thread-count variables before numpy loads.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import sys
import time

from .landlock import landlock_abi, make_landlock_ruleset, restrict_self  # noqa: F401

OK, SYNTAX, EXCEPTION, TIMEOUT, MEMORY, INVALID_OUTPUT, CRASHED = (
    "ok", "syntax", "exception", "timeout", "memory", "invalid_output", "crashed")
ERROR_CLASSES = (SYNTAX, EXCEPTION, TIMEOUT, MEMORY, INVALID_OUTPUT, CRASHED)
MAX_SIDE, N_COLOURS = 30, 10
MESSAGE_CHARS = 300
RESULT_FD, JOB_FD, RULESET_FD = 3, 4, 5  # fixed fd numbers inside a runner
DONE_INDEX = 0xFFFFFFFF  # the frame index that ends one program's results
FILE_SIZE_LIMIT = 64 << 20
# Imported once in the zygote: what run_program needs plus what generated programs commonly import.
WARM_MODULES = ("numpy", "numpy.random", "random", "collections", "itertools", "functools", "math", "copy",
                "typing", "dataclasses", "enum", "heapq", "builtins")
# Warmed when installed (a base dependency, but an environment may lack it): BARC's common.py imports
# scipy.ndimage inside its helpers, so otherwise every fresh runner pays ~0.15 s (and address space counted
# against the program's memory_mb) the first time a program finds connected components. Measured on the 2-core
# dev machine, 64 runs of tests/data/barc_programs/b2862040.py: 0.60 s -> 0.15 s with runners reused, 10.4 s ->
# 0.5 s with a fresh fork each; a zygote starts ~0.13 s later.
OPTIONAL_WARM_MODULES = ("scipy.ndimage",)
# BARC's induction model was trained on programs whose colour names were rewritten (xu3kev/BARC,
# finetune/alignment-handbook/gen_dataset_both.py: Teal -> Purple, Maroon -> Brown, Grey -> Gray, in the grids
# and in the code), so it writes Color.PURPLE and Color.BROWN; BARC's own seeds/common.py defines only TEAL and
# MAROON, and every such program would die with AttributeError. Each pair is one colour's two names.
COLOUR_ALIASES = (("PURPLE", "TEAL"), ("BROWN", "MAROON"), ("GRAY", "GREY"))

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


# ---------------------------------------------------------------- inside the child

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# A frame per input: index, kind, height, width, payload length, payload (grid cells or a UTF-8 message).
# Plain structs, not pickle: the pipe is writable by the program, and unpickling its bytes would run its code.
_FRAME = struct.Struct("<IBBBI")
_KINDS = (OK,) + ERROR_CLASSES


def encode_frame(index: int, kind: str, payload) -> bytes:
    if kind == OK:
        height, width, cells = payload
    else:
        height, width, cells = 0, 0, str(payload).encode("utf-8", "replace")
    return _FRAME.pack(index, _KINDS.index(kind), height, width, len(cells)) + cells


def _emit(index: int, kind: str, payload) -> None:
    _write_all(RESULT_FD, encode_frame(index, kind, payload))


def describe_exception(error: BaseException) -> tuple[str, str]:
    kind = MEMORY if isinstance(error, MemoryError) else EXCEPTION
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # a hostile __str__ must not lose the classification
        text = type(error).__name__
    return kind, text[:MESSAGE_CHARS]


def check_output(value, np):
    """(kind, payload): (OK, (h, w, int8 bytes)) or (INVALID_OUTPUT, why)."""
    if value is None:
        return INVALID_OUTPUT, "returned None"
    try:
        grid = np.asarray(value)
    except Exception as e:  # ragged lists, objects numpy cannot read
        return INVALID_OUTPUT, f"not a grid ({type(e).__name__}: {str(e)[:100]})"
    if grid.dtype.kind not in "iu":
        return INVALID_OUTPUT, f"{type(value).__name__} with {grid.dtype} cells, not ints"
    if grid.ndim != 2 or not (1 <= grid.shape[0] <= MAX_SIDE and 1 <= grid.shape[1] <= MAX_SIDE):
        return INVALID_OUTPUT, f"shape {grid.shape}, not 1..{MAX_SIDE} x 1..{MAX_SIDE}"
    if grid.min() < 0 or grid.max() >= N_COLOURS:
        return INVALID_OUTPUT, f"cells {grid.min()}..{grid.max()}, outside 0..9"
    return OK, (grid.shape[0], grid.shape[1], grid.astype(np.int8).tobytes())


def run_program(code: str, inputs: list, entry: str, emit) -> None:
    """Compile, execute and call `entry` on a copy of each input; emit(index, kind, payload) per input."""
    import builtins
    import random

    import numpy as np

    def emit_all(kind, message):
        for i in range(len(inputs)):
            emit(i, kind, message)

    try:
        compiled = compile(code, "<program>", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: NUL bytes in the source
        return emit_all(SYNTAX, f"{type(e).__name__}: {e}"[:MESSAGE_CHARS])
    except BaseException as e:  # MemoryError / RecursionError on absurd nesting
        return emit_all(*describe_exception(e))
    random.seed(0)  # the same program behaves the same every time, so equal behaviours group together
    np.random.seed(0)
    namespace = {"__name__": "__program__", "__builtins__": builtins}
    try:
        exec(compiled, namespace)
    except BaseException as e:  # SystemExit and KeyboardInterrupt too: the program, not us, raised them
        return emit_all(*describe_exception(e))
    function = namespace.get(entry)
    if not callable(function):
        return emit_all(EXCEPTION, f"NameError: the program defines no function {entry}()")
    for i, grid in enumerate(inputs):
        try:
            emit(i, *check_output(function(grid.copy()), np))
        except BaseException as e:
            emit(i, *describe_exception(e))


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return b""
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _runner(settings: dict, result_w: int, job_r: int, ruleset_fd: int | None) -> None:
    """The forked runner: confine itself, then run jobs from the zygote one at a time; never returns."""
    try:
        os.setpgid(0, 0)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Move the fds out of the way first: any may already sit on 3..5.
        keep = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (result_w, job_r)]
        if ruleset_fd is not None:
            keep.append(fcntl.fcntl(ruleset_fd, fcntl.F_DUPFD, 100))
        for target, fd in zip((RESULT_FD, JOB_FD, RULESET_FD), keep):
            os.dup2(fd, target)
        os.closerange(RESULT_FD + len(keep), 1 << 16)
        timeout_s = settings["timeout_s"]
        hard_cpu = int(settings["programs_per_process"] * (timeout_s + 1)) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (hard_cpu, hard_cpu))
        resource.setrlimit(resource.RLIMIT_AS, (settings["address_space_limit"],) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if ruleset_fd is not None:
            if not restrict_self(RULESET_FD):
                os._exit(70)  # never run a program less confined than promised
            os.close(RULESET_FD)
        import numpy as np

        while True:
            header = _read_exact(JOB_FD, 4)
            if not header:
                os._exit(0)
            code, shapes_and_cells = pickle.loads(_read_exact(JOB_FD, struct.unpack("<I", header)[0]))
            inputs = [np.frombuffer(cells, dtype=np.int8).reshape(shape).astype(np.int64)
                      for shape, cells in shapes_and_cells]
            usage = resource.getrusage(resource.RUSAGE_SELF)
            soft_cpu = min(int(usage.ru_utime + usage.ru_stime + timeout_s) + 2, hard_cpu)
            resource.setrlimit(resource.RLIMIT_CPU, (soft_cpu, hard_cpu))  # a backstop: the zygote kills first
            os.chdir(settings["scratch_dir"])
            run_program(code, inputs, settings["entry"], _emit)
            _write_all(RESULT_FD, _FRAME.pack(DONE_INDEX, 0, 0, 0, 0))
    except BaseException:
        os._exit(71)


# ---------------------------------------------------------------- in the zygote

def _read_frames(buffer: bytes, n_inputs: int) -> tuple[dict[int, tuple], bool, bool]:
    """(frames, done, clean) from what a runner wrote for one program. A torn or forged frame ends the reading
    (its inputs count as missing); clean is False when anything but well-formed frames was written."""
    frames, at = {}, 0
    while at + _FRAME.size <= len(buffer):
        index, kind, height, width, size = _FRAME.unpack_from(buffer, at)
        if index == DONE_INDEX:
            return frames, True, at + _FRAME.size == len(buffer) and len(frames) == n_inputs
        body = buffer[at + _FRAME.size: at + _FRAME.size + size]
        if len(body) < size or index >= n_inputs or kind >= len(_KINDS) or index in frames:
            return frames, False, False
        if _KINDS[kind] == OK:
            if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and size == height * width):
                return frames, False, False
            frames[index] = (OK, (height, width, body))
        else:
            frames[index] = (_KINDS[kind], body.decode("utf-8", "replace")[:MESSAGE_CHARS])
        at += _FRAME.size + size
    return frames, False, at == len(buffer)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _kill_strays(keep: int | None) -> None:
    """Kill and reap the zygote's children other than `keep` (setsid escapees reparent here: subreaper)."""
    me = os.getpid()
    for _ in range(50):
        pids = [pid for pid in _children(me) if pid != keep]
        for pid in pids:
            _kill_group(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
        if not pids:
            return
        time.sleep(0.001)


class Runner:
    """A confined child forked from the zygote that runs up to programs_per_process programs, one at a time.

    It is killed and replaced after a timeout, a crash, a MemoryError, a program that leaves a child process or
    writes stray bytes, and after programs_per_process programs; so a program either starts in a fresh fork or
    after programs that all finished cleanly."""

    def __init__(self, settings: dict, ruleset_fd: int | None):
        self.settings = settings
        result_r, result_w = os.pipe()
        job_r, job_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(result_r)
            os.close(job_w)
            _runner(settings, result_w, job_r, ruleset_fd)
        os.close(result_w)
        os.close(job_r)
        try:
            os.setpgid(pid, pid)  # also done in the child; whichever runs first, killpg works from here on
        except OSError:
            pass
        self.pid, self.result_r, self.job_w = pid, result_r, job_w
        os.set_blocking(result_r, False)
        self.pidfd = os.pidfd_open(pid)
        self.poller = select.poll()
        self.poller.register(result_r, select.POLLIN)
        self.poller.register(self.pidfd, select.POLLIN)
        self.programs = 0
        self.alive = True

    def run(self, code: str, inputs: list) -> list[tuple]:
        """One (kind, payload) per input; never raises for anything the program does."""
        self.programs += 1
        job = pickle.dumps((code, [(g.shape, g.astype("int8").tobytes()) for g in inputs]))
        deadline = time.monotonic() + self.settings["timeout_s"]
        try:
            _write_all(self.job_w, struct.pack("<I", len(job)) + job)
        except OSError:  # the runner is gone (killed from outside between programs)
            return self._finish(inputs, b"", timed_out=False)
        chunks, exited, timed_out = [], False, False
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for fd, _ in self.poller.poll(left * 1000):
                if fd == self.pidfd:
                    exited = True
                else:
                    chunks.extend(_drain(self.result_r))
                    buffer = b"".join(chunks)
                    chunks = [buffer]
                    frames, done, clean = _read_frames(buffer, len(inputs))
                    if done:
                        healthy = clean and not any(k == MEMORY for k, _ in frames.values())
                        if healthy and not _children(self.pid) \
                                and self.programs < self.settings["programs_per_process"]:
                            return [frames[i] for i in range(len(inputs))]
                        return self._finish(inputs, buffer, timed_out=False)
        return self._finish(inputs, b"".join(chunks), timed_out)

    def _finish(self, inputs: list, buffer: bytes, timed_out: bool) -> list[tuple]:
        """Kill the runner (and its group), then classify what the program did not report."""
        self.close()
        frames, _, _ = _read_frames(buffer + b"".join(self._leftover), len(inputs))
        missing = _missing_outcome(self.status, timed_out, self.settings["timeout_s"])
        return [frames.get(i, missing) for i in range(len(inputs))]

    def close(self) -> None:
        if not self.alive:
            return
        self.alive = False
        _kill_group(self.pid)
        _, self.status = os.waitpid(self.pid, 0)
        self._leftover = _drain(self.result_r)
        for fd in (self.result_r, self.job_w, self.pidfd):
            os.close(fd)
        _kill_strays(keep=None)


def _drain(fd: int) -> list[bytes]:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return chunks
        if not chunk:
            return chunks
        chunks.append(chunk)


def _missing_outcome(status: int, timed_out: bool, timeout_s: float) -> tuple[str, str]:
    if timed_out:
        return TIMEOUT, f"still running after {timeout_s:g} s wall clock"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return TIMEOUT, "CPU-time limit reached"
        if sig == signal.SIGXFSZ:
            return CRASHED, f"wrote a file over {FILE_SIZE_LIMIT >> 20} MB"
        return CRASHED, f"killed by {signal.Signals(sig).name}"
    code = os.waitstatus_to_exitcode(status)
    if code == 70:
        return CRASHED, "could not enter the Landlock sandbox"
    return CRASHED, f"the process exited (status {code}) before returning a grid"


def _empty_dir(path: str) -> None:
    """Delete what a program left in the scratch dir; the dir itself stays (the Landlock rule names its inode)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass


def _address_space_limit(memory_mb: int) -> int:
    """The cap counts what the zygote already maps (numpy, the library), so memory_mb is what a program may add."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE") + memory_mb * (1 << 20)


def add_colour_aliases(colour_class) -> list[str]:
    """Give a library's Color class the missing name of each COLOUR_ALIASES pair (TEAL -> PURPLE as well as
    PURPLE -> TEAL), in memory only: the user's file is never touched. Returns the names added. A pair the class
    has both or neither names of is left as written, so a library that means something else by PURPLE keeps it."""
    added = []
    for first, second in COLOUR_ALIASES:
        has_first, has_second = hasattr(colour_class, first), hasattr(colour_class, second)
        if has_first == has_second:
            continue
        missing, present = (second, first) if has_first else (first, second)
        try:
            setattr(colour_class, missing, getattr(colour_class, present))
        except (AttributeError, TypeError):  # a class that refuses new attributes: programs see it as written
            continue
        added.append(missing)
    return added


def _preload_library(library_dir: str | None, colour_aliases: bool) -> dict[str, list[str]]:
    """Import every top-level module of the library once (runners fork with them loaded); with colour_aliases,
    complete the Color class of each module that has one. Returns {module: aliases added}, for the caller's log."""
    import importlib

    added: dict[str, list[str]] = {}
    if not library_dir:
        return added
    sys.path.insert(0, library_dir)
    for name in sorted(os.listdir(library_dir)):
        if name.endswith(".py") and not name.startswith("_"):
            module = importlib.import_module(name[:-3])
            colour_class = getattr(module, "Color", None)
            if colour_aliases and isinstance(colour_class, type):
                names = add_colour_aliases(colour_class)
                if names:
                    added[name] = names
    return added


def zygote_main(fd: int) -> None:
    """The zygote's loop: messages from the caller over the socket on `fd` (see execution.Executor)."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # only the caller's SIGKILL stops a zygote
    settings = conn.recv()
    try:
        import importlib

        import numpy as np

        for name in WARM_MODULES:  # a child that imports one of these pays nothing; numpy.random alone is ~15 ms
            importlib.import_module(name)
        for name in OPTIONAL_WARM_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:  # a program that needs it gets the ModuleNotFoundError itself
                pass
        aliases = _preload_library(settings["library_dir"], settings["colour_aliases"])
    except BaseException as e:  # report a broken library to the caller rather than dying silently
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    os.makedirs(settings["scratch_dir"], exist_ok=True)
    settings["address_space_limit"] = _address_space_limit(settings["memory_mb"])
    ruleset_fd = make_landlock_ruleset(settings["scratch_dir"]) if settings["landlock"] else None
    conn.send(("ready", ruleset_fd is not None, aliases))
    input_sets: dict[int, list] = {}
    runner: Runner | None = None
    while True:
        try:
            message = conn.recv()
        except EOFError:
            message = ("stop",)
        if message[0] == "inputs":
            input_sets[message[1]] = [np.array(g, dtype=np.int64) for g in message[2]]
        elif message[0] == "forget":
            input_sets.pop(message[1], None)
        elif message[0] == "run":
            _, job_id, code, set_id = message
            started = time.perf_counter()
            if runner is None or not runner.alive:
                runner = Runner(settings, ruleset_fd)
            outcomes = runner.run(code, input_sets[set_id])
            _kill_strays(keep=runner.pid if runner.alive else None)
            conn.send(("result", job_id, outcomes, time.perf_counter() - started))
            _empty_dir(settings["scratch_dir"])
        elif message[0] == "stop":
            if runner is not None:
                runner.close()
            return
