"""The worker side of `execution`: a warm "zygote" process that forks one confined child per program.

A zygote is started by `execution.Executor` as `python -c ...` with a socket on a known fd. It imports numpy and
the program library once, then for every program forks a child that:
  - leaves the zygote's process group (so the whole group can be killed) and dies with the zygote (PDEATHSIG);
  - sends stdin/stdout/stderr to /dev/null and closes every other inherited fd but its result pipe;
  - works in a scratch dir, under rlimits (address space, CPU seconds, file size, no core dumps);
  - is confined by Landlock where the kernel has it: no file writes outside the scratch dir, no TCP, and no
    signals to processes outside the child (so `os.kill(os.getppid(), ...)` cannot touch the zygote or caller);
  - runs the program on each input and writes one small binary frame per input to the result pipe.
The zygote waits on the result pipe and a pidfd with a deadline measured from outside the child; at the deadline
it SIGKILLs the child's process group, so nothing inside the program (a bare `except:`, a signal handler) can
stop it. After every child it kills the group again and any stray descendant (the zygote is a subreaper).

This module imports nothing heavy at the top: the zygote must set thread-count variables before numpy loads.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time

OK, SYNTAX, EXCEPTION, TIMEOUT, MEMORY, INVALID_OUTPUT, CRASHED = (
    "ok", "syntax", "exception", "timeout", "memory", "invalid_output", "crashed")
ERROR_CLASSES = (SYNTAX, EXCEPTION, TIMEOUT, MEMORY, INVALID_OUTPUT, CRASHED)
MAX_SIDE, N_COLOURS = 30, 10
MESSAGE_CHARS = 300
RESULT_FD, RULESET_FD = 3, 4  # fixed fd numbers inside the child
FILE_SIZE_LIMIT = 64 << 20
# Imported once in the zygote: what run_program needs plus what generated programs commonly import.
WARM_MODULES = ("numpy", "numpy.random", "random", "collections", "itertools", "functools", "math", "copy",
                "typing", "dataclasses", "enum", "heapq", "builtins")

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER = 1, 38, 36
_SYS_LANDLOCK_CREATE, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT = 444, 445, 446  # same on x86_64 and arm64


# ---------------------------------------------------------------- Landlock (unprivileged sandboxing, Linux >= 5.13)

class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    version = _libc.syscall(_SYS_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def make_landlock_ruleset(scratch_dir: str) -> int | None:
    """A ruleset fd that allows writes only beneath scratch_dir (reads stay free: programs import modules)."""
    abi = landlock_abi()
    if abi < 1:
        return None
    write_access = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write file, remove, make *
    if abi >= 2:
        write_access |= 1 << 13  # refer (rename/link across dirs)
    if abi >= 3:
        write_access |= 1 << 14  # truncate
    attr = _RulesetAttr(write_access, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)  # tcp; signals + sockets
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = _libc.syscall(_SYS_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return None
    dir_fd = os.open(scratch_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        rule = _PathBeneathAttr(write_access, dir_fd)
        if _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(fd), ctypes.c_int(1), ctypes.byref(rule),
                         ctypes.c_uint32(0)) != 0:
            os.close(fd)
            return None
    finally:
        os.close(dir_fd)
    return fd


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


def _child(code: str, inputs: list, settings: dict, result_w: int, ruleset_fd: int | None) -> None:
    """Runs in the forked child; never returns."""
    try:
        os.setpgid(0, 0)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Move both fds out of the way first: either may already sit on 3 or 4.
        high_result = fcntl.fcntl(result_w, fcntl.F_DUPFD, 100)
        high_ruleset = fcntl.fcntl(ruleset_fd, fcntl.F_DUPFD, 100) if ruleset_fd is not None else None
        os.dup2(high_result, RESULT_FD)
        if high_ruleset is not None:
            os.dup2(high_ruleset, RULESET_FD)
        os.closerange(RULESET_FD + 1 if ruleset_fd is not None else RESULT_FD + 1, 1 << 16)
        os.chdir(settings["scratch_dir"])
        cpu = int(settings["timeout_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (settings["address_space_limit"],) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if ruleset_fd is not None:
            _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if _libc.syscall(_SYS_LANDLOCK_RESTRICT, ctypes.c_int(RULESET_FD), ctypes.c_uint32(0)) != 0:
                os._exit(70)  # never run a program less confined than promised
            os.close(RULESET_FD)
        run_program(code, inputs, settings["entry"], _emit)
        os._exit(0)
    except BaseException:
        os._exit(71)


# ---------------------------------------------------------------- in the zygote

def _read_frames(buffer: bytes, n_inputs: int) -> dict[int, tuple]:
    """Frames the child wrote; a torn or forged frame ends the reading (its inputs count as missing)."""
    frames, at = {}, 0
    while at + _FRAME.size <= len(buffer):
        index, kind, height, width, size = _FRAME.unpack_from(buffer, at)
        body = buffer[at + _FRAME.size: at + _FRAME.size + size]
        if len(body) < size or index >= n_inputs or kind >= len(_KINDS) or index in frames:
            break
        if _KINDS[kind] == OK:
            if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and size == height * width):
                break
            frames[index] = (OK, (height, width, body))
        else:
            frames[index] = (_KINDS[kind], body.decode("utf-8", "replace")[:MESSAGE_CHARS])
        at += _FRAME.size + size
    return frames


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_strays() -> None:
    """Kill and reap descendants that outlived their program (setsid escapees reparent here: subreaper)."""
    me = os.getpid()
    for _ in range(50):
        try:
            with open(f"/proc/{me}/task/{me}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            pids = []
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


def run_forked(code: str, inputs: list, settings: dict, ruleset_fd: int | None) -> list[tuple]:
    """Run one program in a fresh confined child; one (kind, payload) per input, never raises for the program."""
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        _child(code, inputs, settings, result_w, ruleset_fd)
    os.close(result_w)
    try:
        os.setpgid(pid, pid)  # also done in the child; whichever runs first, killpg works from here on
    except OSError:
        pass
    deadline = time.monotonic() + settings["timeout_s"]
    os.set_blocking(result_r, False)
    poller = select.poll()
    poller.register(result_r, select.POLLIN)
    pidfd = os.pidfd_open(pid)
    poller.register(pidfd, select.POLLIN)
    chunks, exited, timed_out = [], False, False
    try:
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(left * 1000):
                if fd == pidfd:
                    exited = True
                else:
                    chunks.extend(_drain(result_r))
        _kill_group(pid)
        _, status = os.waitpid(pid, 0)
        chunks.extend(_drain(result_r))
    finally:
        os.close(result_r)
        os.close(pidfd)
    _kill_strays()
    frames = _read_frames(b"".join(chunks), len(inputs))
    if len(frames) < len(inputs):
        missing = _missing_outcome(status, timed_out, settings["timeout_s"])
        return [frames.get(i, missing) for i in range(len(inputs))]
    return [frames[i] for i in range(len(inputs))]


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


def _preload_library(library_dir: str | None) -> None:
    import importlib

    if not library_dir:
        return
    sys.path.insert(0, library_dir)
    for name in sorted(os.listdir(library_dir)):
        if name.endswith(".py") and not name.startswith("_"):
            importlib.import_module(name[:-3])


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
        _preload_library(settings["library_dir"])
    except BaseException as e:  # report a broken library to the caller rather than dying silently
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    os.makedirs(settings["scratch_dir"], exist_ok=True)
    settings["address_space_limit"] = _address_space_limit(settings["memory_mb"])
    ruleset_fd = make_landlock_ruleset(settings["scratch_dir"]) if settings["landlock"] else None
    conn.send(("ready", ruleset_fd is not None))
    input_sets: dict[int, list] = {}
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "inputs":
            input_sets[message[1]] = [np.array(g, dtype=np.int64) for g in message[2]]
        elif message[0] == "forget":
            input_sets.pop(message[1], None)
        elif message[0] == "run":
            _, job_id, code, set_id = message
            started = time.perf_counter()
            if settings["isolation"] == "fork":
                outcomes = run_forked(code, input_sets[set_id], settings, ruleset_fd)
            else:  # "pool": in-process, for the benchmark's comparison only (a program can corrupt the worker)
                frames = {}
                run_program(code, input_sets[set_id], settings["entry"], lambda i, k, p: frames.update({i: (k, p)}))
                outcomes = [frames[i] for i in range(len(input_sets[set_id]))]
            conn.send(("result", job_id, outcomes, time.perf_counter() - started))
            if settings["isolation"] == "fork":
                _empty_dir(settings["scratch_dir"])
        elif message[0] == "stop":
            return
