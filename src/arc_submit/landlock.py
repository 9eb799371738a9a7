"""Landlock (unprivileged Linux sandboxing, kernel >= 5.13) through raw syscalls: Python has no binding.

A ruleset made here confines a process that calls `restrict_self`: writes only beneath one folder, no TCP
(ABI >= 4), and no signals or abstract sockets to processes outside its own domain (ABI >= 6).
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK_CREATE, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT = 444, 445, 446  # same on x86_64 and arm64


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


def restrict_self(ruleset_fd: int) -> bool:
    """Confine the calling process (and its future children) for good; False if the kernel refused."""
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return _libc.syscall(_SYS_LANDLOCK_RESTRICT, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)) == 0
