"""The offline wheelhouse for Kaggle's image (`make wheels`, `arc-submit wheels`): what the scoring rerun installs
with pip's resolver and no index, because it has no internet.

    image constraints (pip freeze of a Kaggle notebook) ─┐
    kaggle/wheels-requirements.txt (what we add) ────────┴─► pick releases ─► resolve for Kaggle's Python and
                                                             platform ─► download only what the image lacks

- Unpinned requirements (vllm, unsloth) take the newest release whose torch requirement the image's torch meets,
  read from PyPI's metadata. Where no release does, the newest is taken and its torch is carried on purpose,
  said loudly (`carry_torch`), because replacing the image's torch also replaces what was built against it.
- Resolution runs under the constraints, so a package the image has stays at the image's version; such packages
  are not downloaded. The rest are wheels only, for Kaggle's Python (3.12) and its manylinux platform tags.
- The folder gets requirements.txt (the exact pins) and dataset-metadata.json; the notebook runs
  `pip install --no-index --find-links <folder> -r requirements.txt` (kaggle_env.install_offline_wheels).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)

SIMPLE_JSON = "https://pypi.org/simple/{name}/"  # PEP 691; each wheel's METADATA is at <url>.metadata (PEP 658)
PROJECT_JSON = "https://pypi.org/pypi/{name}/json"
# Kaggle's GPU image (Colab's runtime, Ubuntu 22.04: glibc 2.35) accepts every manylinux tag up to 2.35.
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "linux_x86_64")
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


def release_requirements(name: str) -> dict[str, callable]:
    """{version: () -> requires_dist} for every non-yanked release with a Linux x86_64 or pure-Python wheel; the
    metadata is read lazily, from the wheel's own METADATA file (PEP 658), one small request per release."""
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
                text = _get(url + ".metadata").decode(errors="replace")
            except urllib.error.HTTPError:  # no PEP 658 file (some mirrors): the project page has the latest's
                latest = json.loads(_get(PROJECT_JSON.format(name=canonicalize_name(name))))["info"]
                if latest["version"] != version:
                    log.warning("%s %s: metadata not available; release skipped", name, version)
                    return None
                return latest.get("requires_dist") or []
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
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            *[a for p in PLATFORMS for a in ("--platform", p)]]


def resolver_python(python_version: str, given: str | None = None) -> str:
    """The interpreter pip resolves with. pip evaluates environment markers (`six; python_version > "3.11"`)
    against the Python it runs on, whatever --python-version says, so it must be Kaggle's Python version."""
    import shutil

    candidates = [given] if given else [f"python{python_version}", sys.executable]
    for exe in candidates:
        path = shutil.which(exe) if exe else None
        if path is None:
            continue
        version = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True).stdout.strip()
        if version == python_version:
            return path
    raise RuntimeError(f"no Python {python_version} to resolve with (tried {', '.join(filter(None, candidates))}); "
                       f"pip evaluates dependency markers with the Python it runs on. Install Python "
                       f"{python_version} or pass --resolver-python")


def resolve(pins: dict[str, str], constraints: Path, python_version: str, carried: set[str],
            python: str = sys.executable) -> list[tuple]:
    """(name, version, requirements) of every package the pins need, resolved for Kaggle's Python and platform,
    with the image's versions held by the constraints (except the packages carried on purpose)."""
    with tempfile.TemporaryDirectory() as tmp:
        kept = [line for line in constraints.read_text().splitlines()
                if not any(canonicalize_name(line.split("==")[0]) == c for c in carried)]
        held = Path(tmp) / "constraints.txt"
        held.write_text("\n".join(kept) + "\n")
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), "--target", str(Path(tmp) / "t"), *pip_target_args(python_version), "-c", str(held),
               *[f"{n}=={v}" for n, v in pins.items()]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError("resolving the wheelhouse against the image's constraints failed: a package we add "
                               "needs a version the image does not have. pip said:\n" + done.stderr[-4000:])
        items = json.loads(report.read_text())["install"]
    return [(canonicalize_name(i["metadata"]["name"]), i["metadata"]["version"],
             [Requirement(r) for r in i["metadata"].get("requires_dist") or []]) for i in items]


def brought_by(roots: set[str], needed: list[tuple]) -> set[str]:
    """The packages of `needed` that `roots` pin exactly (`==`), transitively: what an image holding the roots
    must hold too, at that version (torch's CUDA libraries and triton, for torch). A loose requirement (numpy
    for torchvision) says nothing of the image's version, so such packages are carried unless the constraints
    pin them."""
    requires = {name: [canonicalize_name(r.name) for r in reqs
                       if (r.marker is None or r.marker.evaluate({"extra": ""}))
                       and any(spec.operator == "==" for spec in r.specifier)]
                for name, _, reqs in needed}
    seen, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in requires:
            continue
        seen.add(name)
        stack.extend(requires[name])
    return seen


def build(requirements_file: Path, constraints: Path, out_dir: Path, python_version: str = "3.12",
          python: str | None = None) -> dict:
    """Download the wheelhouse; returns a summary (pins, carried, downloaded, left to the image, size)."""
    image = read_constraints(constraints)
    requirements = [line.split("#", 1)[0].strip() for line in requirements_file.read_text().splitlines()]
    requirements = [r for r in requirements if r]
    p = plan(requirements, image)
    carried = {"torch", "torchvision", "torchaudio"} if p.carried else set()
    needed = resolve(p.pins, constraints, python_version, carried, resolver_python(python_version, python))
    in_image = {n for n, v, _ in needed if image.get(n) == v and n not in carried}
    in_image |= brought_by(in_image, needed)  # what the image's packages need, the image has
    from_image = [(n, v) for n, v, _ in needed if n in in_image]
    to_fetch = [(n, v) for n, v, _ in needed if n not in in_image]
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(out_dir),
           *pip_target_args(python_version), *[f"{n}=={v}" for n, v in to_fetch]]
    subprocess.run(cmd, check=True)
    (out_dir / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(p.pins.items())))
    size = sum(f.stat().st_size for f in out_dir.glob("*.whl"))
    summary = {"python": python_version, "pins": p.pins, "notes": p.notes, "carried": p.carried,
               "downloaded": len(to_fetch), "left_to_the_image": [f"{n}=={v}" for n, v in from_image],
               "size_mb": round(size / 2**20, 1)}
    (out_dir / "wheelhouse.json").write_text(json.dumps(summary, indent=1))
    return summary
