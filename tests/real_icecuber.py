"""Builds the REAL 2020 icecuber program (top-quarks/ARC-solution) for the tests that drive it.

The source is the MIT-licensed copy beside the checkout (`../shared/icecuber`, see its PROVENANCE.md) or the
folder named by ARC_SUBMIT_ICECUBER_SRC. It is copied to `.cache/icecuber-<hash of the sources>/` (the shared
copy may be read-only) and built there once with `make -j` (30-80 s on 2 cores); later runs reuse the build.
A missing source is a test failure, not a skip: the suite must not pass without ever running the real program.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "icecuber"


def icecuber_source() -> Path:
    return Path(os.environ.get("ARC_SUBMIT_ICECUBER_SRC", DEFAULT_SOURCE))


def built_icecuber() -> Path:
    """The folder holding a built `run`; raises RuntimeError saying what is missing."""
    source = icecuber_source()
    if not (source / "Makefile").is_file():
        raise RuntimeError(f"no icecuber source at {source}: point ARC_SUBMIT_ICECUBER_SRC at a checkout of "
                           f"top-quarks/ARC-solution (the suite drives the real program)")
    digest = hashlib.sha1()
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.suffix in (".cpp", ".hpp", "") ):
        digest.update(path.relative_to(source).as_posix().encode())
        digest.update(path.read_bytes())
    build = REPO / ".cache" / f"icecuber-{digest.hexdigest()[:12]}"
    if (build / "run").is_file():
        return build
    partial = build.with_name(build.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("dataset", "output", "obj", "run", "*.gch"))
    done = subprocess.run(["make", "-j", str(max(os.cpu_count() or 1, 2)), "run"], cwd=partial,
                          capture_output=True, text=True)
    if done.returncode != 0 or not (partial / "run").is_file():
        raise RuntimeError(f"building icecuber in {partial} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    shutil.rmtree(build, ignore_errors=True)
    partial.rename(build)  # only a finished build ever carries the final name
    return build
