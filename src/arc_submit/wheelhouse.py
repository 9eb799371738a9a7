"""The offline wheelhouse for Kaggle's image (`make wheels`, `arc-submit wheels`): what the scoring rerun installs
with pip's resolver and no index, because it has no internet.

    image constraints (pip freeze of a Kaggle notebook) ─┐
    kaggle/wheels-requirements.txt (what we add) ────────┴─► pick releases ─► resolve for Kaggle's Python and
                                                             platform ─► download only what the image lacks

- Unpinned requirements (vllm, unsloth) take the newest release whose torch requirement the image's torch meets,
  read from PyPI's metadata. Where no release does, the newest is taken and its torch is carried on purpose,
  said loudly (`carry_torch`), because replacing the image's torch also replaces what was built against it.
- Resolution (`uv pip compile --python-version 3.12 --python-platform x86_64-manylinux_2_35`) runs under the
  constraints, so a package the image has stays at the image's version; such packages are not downloaded. uv
  evaluates every marker for Kaggle's Python and platform, so no local Python 3.12 is needed; the rest are wheels
  only, downloaded with `pip download --no-deps` for Kaggle's tags (any Python can do that).
- `make wheels-check` installs the result offline into a real Python 3.12 (`find_python` looks for one).
- The folder gets requirements.txt (the exact pins) and dataset-metadata.json; the notebook runs
  `pip install --no-index --find-links <folder> -r requirements.txt` (kaggle_env.install_offline_wheels).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)

SIMPLE_JSON = "https://pypi.org/simple/{name}/"  # PEP 691; each wheel's METADATA is at <url>.metadata (PEP 658)
# Kaggle's GPU image (Colab's runtime, Ubuntu 22.04: glibc 2.35) accepts every manylinux tag up to 2.35.
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "linux_x86_64")
UV_PLATFORM = "x86_64-manylinux_2_35"  # the same image for uv: every manylinux tag up to glibc 2.35
# Kaggle's platform, for markers (`nvidia-cublas-cu12==…; platform_system == "Linux"`): evaluated for the target,
# never for the machine running this.
TARGET_PLATFORM = {"implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "sys_platform": "linux", "os_name": "posix", "platform_system": "Linux", "platform_machine": "x86_64"}
MAX_RELEASES_CHECKED = 60


@dataclass
class Plan:
    pins: dict[str, str]  # package -> version we add
    carried: list[str] = field(default_factory=list)  # image packages replaced on purpose, with why
    notes: list[str] = field(default_factory=list)


def read_constraints(path: Path) -> dict[str, str]:
    """name -> version from a `pip freeze` (lines `name==version`; comments, editables and URLs skipped)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def _get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


class MetadataUnavailable(RuntimeError):
    """A release's METADATA cannot be had from this index (the release is skipped, said in the log)."""


class _RangeFile(io.RawIOBase):
    """A remote wheel as a seekable file, read by HTTP range requests: zipfile reads the central directory at the
    end and then one member, kilobytes of a wheel that may be a gigabyte (what pip and uv do without PEP 658)."""

    TAIL = 1 << 16

    def __init__(self, url: str):
        self.url, self.pos = url, 0
        request = urllib.request.Request(url, headers={"Range": f"bytes=-{self.TAIL}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            self.tail = response.read()
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if response.status != 206 or not total.isdigit():
            raise MetadataUnavailable(f"{url}: no PEP 658 metadata and the server does not answer range requests")
        self.size = int(total)

    def seekable(self):
        return True

    def readable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self):
        return self.pos

    def read(self, n=-1):
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        tail_start = self.size - len(self.tail)
        if self.pos >= tail_start:
            data = self.tail[self.pos - tail_start:end - tail_start]
        elif end > self.pos:
            data = _get_range(self.url, self.pos, end - 1)
        else:
            data = b""
        self.pos += len(data)
        return data


def _get_range(url: str, first: int, last: int) -> bytes:
    request = urllib.request.Request(url, headers={"Range": f"bytes={first}-{last}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def wheel_metadata(url: str) -> str:
    """A wheel's METADATA: the PEP 658 file beside it, or, where the index has none, read out of the wheel."""
    try:
        return _get(url + ".metadata").decode(errors="replace")
    except urllib.error.HTTPError:
        pass
    with zipfile.ZipFile(_RangeFile(url)) as wheel:
        name = next(n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        return wheel.read(name).decode(errors="replace")


def release_requirements(name: str) -> dict[str, callable]:
    """{version: () -> requires_dist} for every non-yanked release with a Linux x86_64 or pure-Python wheel; the
    metadata is read lazily, from the wheel's own METADATA, a few small requests per release."""
    index = json.loads(_get(SIMPLE_JSON.format(name=canonicalize_name(name)), "application/vnd.pypi.simple.v1+json"))
    wheels: dict[str, str] = {}
    for f in index["files"]:
        fn = f["filename"]
        if not fn.endswith(".whl") or f.get("yanked") or not ("x86_64" in fn or fn.endswith("-none-any.whl")):
            continue
        wheels.setdefault(fn.split("-")[1], f["url"])

    def reader(version, url):
        def read():
            try:
                text = wheel_metadata(url)
            # Only what says this release's metadata is missing; a network failure stops the build instead of
            # silently skipping releases (which would pick an older one).
            except (urllib.error.HTTPError, MetadataUnavailable, zipfile.BadZipFile, StopIteration) as e:
                log.warning("%s %s: metadata not readable (%s); release skipped", name, version, e)
                return None
            return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
        return read

    return {version: reader(version, url) for version, url in wheels.items()}


def torch_requirement(requires_dist: list[str] | None) -> SpecifierSet | None:
    """The specifier a release puts on torch (unconditional requirements only), or None when it has none."""
    for text in requires_dist or []:
        req = Requirement(text)
        if canonicalize_name(req.name) == "torch" and (req.marker is None or req.marker.evaluate({"extra": ""})):
            return req.specifier
    return None


def newest_release_for_torch(name: str, torch_version: str, releases=release_requirements
                             ) -> tuple[str, SpecifierSet | None, bool]:
    """(version, its torch specifier, whether the image's torch meets it) of the newest fitting release, or of
    the newest release when none of the last MAX_RELEASES_CHECKED fits."""
    versions = []
    for v, requires in releases(name).items():
        try:
            parsed = Version(v)
        except InvalidVersion:
            continue
        if not parsed.is_prerelease:
            versions.append((parsed, v, requires))
    versions.sort(key=lambda t: t[0], reverse=True)
    newest = None
    for _, v, requires in versions[:MAX_RELEASES_CHECKED]:
        requires_dist = requires()
        if requires_dist is None:
            continue
        spec = torch_requirement(requires_dist)
        if newest is None:
            newest = (v, spec)
        if spec is None or spec.contains(torch_version, prereleases=True):
            return v, spec, True
    if newest is None:
        raise RuntimeError(f"{name}: no release with a Linux wheel on PyPI")
    return newest[0], newest[1], False


def plan(requirements: list[str], image: dict[str, str], releases=release_requirements) -> Plan:
    """Pins for what we add (see the module docstring)."""
    torch_version = image.get("torch")
    result = Plan({})
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if str(req.specifier).startswith("=="):
            result.pins[name] = str(req.specifier)[2:]
            continue
        if torch_version is None:
            raise ValueError("the image constraints name no torch version; regenerate them with `pip freeze` in a "
                             "Kaggle notebook")
        version, spec, fits = newest_release_for_torch(name, torch_version, releases)
        result.pins[name] = version
        if fits:
            result.notes.append(f"{name} {version}: the newest release the image's torch {torch_version} satisfies"
                                f" ({spec or 'no torch pin'})")
        else:
            result.carried.append(f"torch: {name} {version} needs torch {spec}, the image has {torch_version} and no "
                                  f"recent {name} release accepts it; torch is carried in the wheelhouse on purpose")
    return result


def pip_target_args(python_version: str) -> list[str]:
    """pip download's options for Kaggle's wheels: with --no-deps no marker is evaluated, so any Python can run it."""
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            *[a for p in PLATFORMS for a in ("--platform", p)]]


def uv_binary() -> str:
    """uv (the dev extra installs it beside this Python): it resolves for a target Python and platform without
    that interpreter, evaluating every marker for the target."""
    import shutil

    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        raise RuntimeError("uv not found (beside " + sys.executable + " or on PATH): `make wheels` resolves with "
                           "`uv pip compile`; pip install uv (the dev extra has it: pip install -e '.[dev]')")
    return found


def uv_compile_command(uv: str, requirements: Path, constraints: Path, python_version: str,
                       index_args: tuple[str, ...] = ()) -> list[str]:
    """`uv pip compile` for Kaggle's Python and platform: wheels only, markers evaluated for the target."""
    return [uv, "pip", "compile", str(requirements), "-c", str(constraints), "--python-version", python_version,
            "--python-platform", UV_PLATFORM, "--only-binary", ":all:", "--no-header", "--no-annotate", "--quiet",
            *index_args]


def read_pins(text: str) -> list[tuple[str, str]]:
    """(name, version) of each `name==version` line of a compiled requirements file."""
    out = []
    for line in text.splitlines():
        m = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if m:
            out.append((canonicalize_name(m.group(1)), m.group(2)))
    return out


def resolve(pins: dict[str, str], constraints: Path, python_version: str, carried: set[str],
            index_args: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(name, version) of every package the pins need, resolved for Kaggle's Python and platform, with the
    image's versions held by the constraints (except the packages carried on purpose)."""
    with tempfile.TemporaryDirectory() as tmp:
        kept = [line for line in constraints.read_text().splitlines()
                if not any(canonicalize_name(line.split("==")[0]) == c for c in carried)]
        held = Path(tmp) / "constraints.txt"
        held.write_text("\n".join(kept) + "\n")
        wanted = Path(tmp) / "requirements.in"
        wanted.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        done = subprocess.run(uv_compile_command(uv_binary(), wanted, held, python_version, index_args),
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"resolving the wheelhouse for Python {python_version} on {UV_PLATFORM} against the "
                           "image's constraints failed: a package we add needs a version the image does not have, "
                           "or has no wheel for Kaggle. uv said:\n" + done.stderr[-4000:])
    return read_pins(done.stdout)


def target_requirements(requires_dist: list[str] | None, python_version: str) -> list[Requirement]:
    """The requirements of a release that apply on Kaggle's Python and platform (extras left out)."""
    env = {**TARGET_PLATFORM, "python_version": python_version, "python_full_version": f"{python_version}.0",
           "extra": ""}
    return [r for r in map(Requirement, requires_dist or []) if r.marker is None or r.marker.evaluate(env)]


def release_metadata(name: str, version: str) -> list[str] | None:
    """Requires-Dist of one release, from its wheel's METADATA (wheel_metadata); None where it has no such wheel."""
    read = release_requirements(name).get(version)
    return read() if read else None


def brought_by(roots: set[str], needed: dict[str, str], requires) -> set[str]:
    """The packages of `needed` (name -> version) that `roots` pin exactly (`==`), transitively: what an image
    holding the roots must hold too, at that version (torch's CUDA libraries and triton, for torch). A loose
    requirement (numpy for torchvision) says nothing of the image's version, so such packages are carried unless
    the constraints pin them. requires(name, version) -> its Requirements on the target; only the roots' closure
    is asked for (from PyPI: a request or two per package)."""
    seen, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in needed:
            continue
        seen.add(name)
        stack.extend(canonicalize_name(r.name) for r in requires(name, needed[name])
                     if any(spec.operator == "==" for spec in r.specifier))
    return seen


def build(requirements_file: Path, constraints: Path, out_dir: Path, python_version: str = "3.12") -> dict:
    """Download the wheelhouse; returns a summary (pins, carried, downloaded, left to the image, size)."""
    image = read_constraints(constraints)
    requirements = [line.split("#", 1)[0].strip() for line in requirements_file.read_text().splitlines()]
    requirements = [r for r in requirements if r]
    p = plan(requirements, image)
    carried = {"torch", "torchvision", "torchaudio"} if p.carried else set()
    needed = resolve(p.pins, constraints, python_version, carried)
    in_image = {n for n, v in needed if image.get(n) == v and n not in carried}
    in_image |= brought_by(in_image, dict(needed),  # what the image's packages need, the image has
                           lambda n, v: target_requirements(release_metadata(n, v), python_version))
    from_image = [(n, v) for n, v in needed if n in in_image]
    to_fetch = [(n, v) for n, v in needed if n not in in_image]
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(out_dir),
           *pip_target_args(python_version), *[f"{n}=={v}" for n, v in to_fetch]]
    # The pins are resolved already: a machine-wide pip constraint file must not move them.
    subprocess.run(cmd, check=True, env={**os.environ, "PIP_CONSTRAINT": ""})
    (out_dir / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(p.pins.items())))
    size = sum(f.stat().st_size for f in out_dir.glob("*.whl"))
    summary = {"python": python_version, "pins": p.pins, "notes": p.notes, "carried": p.carried,
               "downloaded": len(to_fetch), "left_to_the_image": [f"{n}=={v}" for n, v in from_image],
               "size_mb": round(size / 2**20, 1)}
    (out_dir / "wheelhouse.json").write_text(json.dumps(summary, indent=1))
    return summary


def python_version_of(exe: str) -> tuple[str | None, str]:
    """(major.minor, '') of an interpreter that runs, or (None, why not): pyenv's shim for a version that is not
    selected exits non-zero, so a `python3.12` on PATH proves nothing until it runs."""
    try:
        done = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
    return done.stdout.strip(), ""


def pyenv_root(home: Path) -> Path:
    return Path(os.environ.get("PYENV_ROOT") or home / ".pyenv")


def python_candidates(version: str, home: Path, path: str | None) -> list[str]:
    """Where a Python of `version` may be, in order: on PATH, pyenv's versions (newest first), uv's own."""
    import shutil

    found = [shutil.which(f"python{version}", path=path)]
    found += [str(p) for p in sorted(pyenv_root(home).glob(f"versions/{version}*/bin/python{version}"),
                                     key=lambda p: _version_key(p.parents[1].name), reverse=True)]
    try:
        uv = subprocess.run([uv_binary(), "python", "find", version], capture_output=True, text=True, timeout=60)
        found.append(uv.stdout.strip() if uv.returncode == 0 else None)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        pass  # no uv: PATH and pyenv were the places to look
    return [f for f in found if f]


def _version_key(name: str):
    try:
        return Version(name)
    except InvalidVersion:
        return Version("0")


def find_python(version: str, given: str | None = None, home: Path | None = None, path: str | None = None) -> str:
    """An interpreter of `version` that runs: `given` (checked), else the first of python_candidates. None found:
    RuntimeError saying where it looked and how to point at one."""
    if given:
        got, why = python_version_of(given)
        if got != version:
            raise RuntimeError(f"KAGGLE_PYTHON_BIN={given} is {'Python ' + got if got else 'not runnable: ' + why}, "
                               f"not Python {version}; point it at a python{version}")
        return given
    home = home or Path.home()
    tried = []
    for exe in python_candidates(version, home, path):
        got, why = python_version_of(exe)
        if got == version:
            return exe
        tried.append(f"{exe}: {why or 'Python ' + got}")
    raise RuntimeError(f"no Python {version} found (looked for python{version} on PATH, "
                       f"{pyenv_root(home)}/versions/{version}*/bin/python{version} and `uv python find {version}`"
                       f"{'; ' + '; '.join(tried) if tried else ''}). Point at one: make wheels-check "
                       f"KAGGLE_PYTHON_BIN=/path/to/python{version}, or install one: uv python install {version}")
