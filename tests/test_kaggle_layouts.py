"""The real notebook under papermill on temporary Kaggle trees (ARC_SUBMIT_KAGGLE_ROOT), as Kaggle mounts them:

- 2026: /kaggle/input/competitions/arc-prize-2026-arc-agi-2/, datasets/<owner>/<slug>/, models/<owner>/<model>/...
- 2025: /kaggle/input/arc-prize-2025/, /kaggle/input/<slug>/

Inputs are read-only, /kaggle/working is writable, and the kernel cannot import the package this checkout
installed (a kernelspec drops it from sys.path): arc_submit comes only from the source dataset, built the way
`make dataset` builds it. The model is the tiny offline model saved as a real model folder.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from arc_submit import kaggle_env
from arc_submit.config import ConfigError
from arc_submit.submission import validate
from arc_submit.tasks import load_tasks, write_challenges

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "submission.ipynb"
FAST_SOLVER = {"n_augmentations": 2, "ttt_augmentations": 2, "max_prompt_tokens": 1536, "max_seq_len": 2048,
               "lora_rank": 8, "lora_alpha": 16}


def build_source_dataset(target: Path) -> None:
    """What `make dataset` uploads: the tracked files of src/, notebooks/, kaggle/ and the metadata."""
    files = subprocess.run(["git", "ls-files", "src", "notebooks", "kaggle", "pyproject.toml"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)


def make_tree(root: Path, layout: str, with_test=True, with_model=True, with_source=True) -> dict:
    """A Kaggle tree; returns the paths a user would type into the notebook's parameters."""
    from arc_submit.llm.tiny import tiny_model_path

    inputs = root / "input"
    evaluation = load_tasks("arc-agi-2/evaluation")
    ids = sorted(evaluation)
    if layout == "2026":
        comp = inputs / "competitions" / "arc-prize-2026-arc-agi-2"
        source = inputs / "datasets" / "someone" / "arc-submit-source"
        model = inputs / "models" / "someone" / "tiny-arc" / "transformers" / "default" / "1"
    else:
        comp = inputs / "arc-prize-2025"
        source = inputs / "arc-submit-source"
        model = inputs / "tiny-arc"
    comp.mkdir(parents=True)
    write_challenges({t: evaluation[t] for t in ids[:6]}, comp / "arc-agi_evaluation_challenges.json",
                     with_solutions=True)
    if with_test:  # the hidden test set's stand-in: other tasks, no solutions beside them
        test = {t: evaluation[t] for t in ids[-3:]}
        (comp / "arc-agi_test_challenges.json").write_text(json.dumps({t: v.to_json(with_solutions=False)
                                                                         for t, v in test.items()}))
    if with_source:
        source.mkdir(parents=True)
        build_source_dataset(source)
    if with_model:
        shutil.copytree(tiny_model_path(), model)
    (root / "working").mkdir(parents=True)
    for path in [inputs, *inputs.rglob("*")]:  # Kaggle inputs are read-only
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return {"model": str(model), "competition": comp}


def source_only_kernel(folder: Path) -> str:
    """A kernelspec whose Python cannot see this checkout's src/ (the editable install's path entry)."""
    spec = folder / "kernels" / "source-only"
    spec.mkdir(parents=True)
    code = (f"import sys; sys.path[:] = [p for p in sys.path if p.rstrip('/') != {str(REPO / 'src')!r}]; "
            "from ipykernel import kernelapp; kernelapp.launch_new_instance()")
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-c", code, "-f", "{connection_file}"],
                                                  "display_name": "source only", "language": "python"}))
    return "source-only"


def run_notebook(tmp_path, root: Path, rerun: bool, params: dict, yaml_params: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KAGGLE_IS_COMPETITION_RERUN"}
    env.update(ARC_SUBMIT_KAGGLE_ROOT=str(root), JUPYTER_PATH=str(tmp_path / "jupyter"))
    if rerun:
        env["KAGGLE_IS_COMPETITION_RERUN"] = "1"
    kernel = source_only_kernel(tmp_path / "jupyter") if not (tmp_path / "jupyter").exists() else "source-only"
    args = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "executed.ipynb"), "-k", kernel,
            "--cwd", str(root / "working")]
    for key, value in params.items():
        args += ["-p", key, str(value)]
    if yaml_params:
        args += ["-y", yaml_params]
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)


def output_text(tmp_path) -> str:
    path = tmp_path / "executed.ipynb"
    if not path.exists():
        return ""
    outputs = [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]
    texts = ["".join(o["text"]) if "text" in o else f"{o.get('ename', '')}: {o.get('evalue', '')}" for o in outputs]
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["2026", "2025"])
def test_scoring_rerun_writes_every_test_task(tmp_path, layout):
    root = tmp_path / "kaggle"
    paths = make_tree(root, layout)
    r = run_notebook(tmp_path, root, rerun=True, params={"model": paths["model"], "time_limit_hours": 0.04},
                     yaml_params=f"solver_options: {json.dumps(FAST_SOLVER)}")
    assert r.returncode == 0, r.stderr[-4000:]
    submission = json.loads((root / "working" / "submission.json").read_text())
    test_tasks = load_tasks(paths["competition"] / "arc-agi_test_challenges.json")
    assert set(submission) == set(test_tasks) and validate(submission, test_tasks) == []
    out = output_text(tmp_path) + r.stderr
    assert f"arc_submit from {root / 'input'}" in out  # the source dataset, not this checkout
    assert "FULL run" in out and "valid, 3 tasks" in out


@pytest.mark.slow
def test_commit_run_proves_the_rerun_on_the_2026_layout(tmp_path):
    root = tmp_path / "kaggle"
    paths = make_tree(root, "2026")
    r = run_notebook(tmp_path, root, rerun=False, params={"model": paths["model"], "n_tasks": 2,
                                                          "dry_run_minutes": 1.5},
                     yaml_params=f"solver_options: {json.dumps(FAST_SOLVER)}")
    assert r.returncode == 0, r.stderr[-4000:]
    submission = json.loads((root / "working" / "submission.json").read_text())
    evaluation = load_tasks(paths["competition"] / "arc-agi_evaluation_challenges.json", limit=2)
    assert set(submission) == set(evaluation) and validate(submission, evaluation) == []
    out = output_text(tmp_path) + r.stderr
    assert "preflight: 0 problem(s)" in out and "dry run" in out


@pytest.mark.parametrize("missing, message", [
    ("test", "no arc-agi_test_challenges.json found: add the competition (arc-prize-2026-arc-agi-2)"),
    ("model", "no such folder; attach the model as a Kaggle input"),
    ("source", "arc_submit cannot be imported: attach the source dataset"),
])
def test_commit_run_fails_loudly_on_a_missing_input(tmp_path, missing, message):
    root = tmp_path / "kaggle"
    paths = make_tree(root, "2026", with_test=missing != "test", with_model=missing != "model",
                      with_source=missing != "source")
    r = run_notebook(tmp_path, root, rerun=False, params={"model": paths["model"], "n_tasks": 2})
    assert r.returncode != 0
    assert message in r.stderr + output_text(tmp_path)
    assert not (root / "working" / "submission.json").exists()  # it stopped before any work


@pytest.mark.parametrize("option, known", [
    ("solver_options: {n_augmentation: 4}", "unknown option(s) n_augmentation; known:"),
    ("engine_options: {gpu_memory_utilisation: 0.5}",
     "unknown engine option(s) for engine hf: gpu_memory_utilisation is unknown. Engine hf takes:"),
])
def test_a_misspelled_option_fails_the_commit_run_before_the_first_task(tmp_path, option, known):
    root = tmp_path / "kaggle"
    paths = make_tree(root, "2026")
    r = run_notebook(tmp_path, root, rerun=False, params={"model": paths["model"], "n_tasks": 2},
                     yaml_params=option)
    assert r.returncode != 0
    text = r.stderr + output_text(tmp_path)
    assert "the scoring rerun would fail or score zero" in text and known in text
    assert not (root / "working" / "journals").exists()


def test_discovery_on_both_layouts_and_a_missing_wheels_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(kaggle_env.ROOT_ENV, str(tmp_path))
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    old = tmp_path / "input" / "arc-prize-2025"
    new = tmp_path / "input" / "competitions" / "arc-prize-2026-arc-agi-2"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / kaggle_env.TEST_FILE).write_text("{}")
    assert kaggle_env.competition_file(kaggle_env.TEST_FILE) == new / kaggle_env.TEST_FILE  # this year's first
    (tmp_path / "input" / "datasets" / "me" / "arc-submit-wheels").mkdir(parents=True)
    assert kaggle_env.find_dataset("arc-submit-wheels") == tmp_path / "input" / "datasets" / "me" / "arc-submit-wheels"
    with pytest.raises(ConfigError, match="no .whl files"):
        kaggle_env.install_offline_wheels(None)  # the attached wheels dataset is empty: say so
    with pytest.raises(ConfigError, match="nowhere: no such folder"):
        kaggle_env.install_offline_wheels(tmp_path / "nowhere")
    dry = kaggle_env.notebook_config(out_dir=str(tmp_path / "o"), time_limit_hours=0.05)
    assert dry.dry_run and dry.safety_margin_s == 60  # a 4-minute dry run keeps a quarter, not 30 minutes
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    full = kaggle_env.notebook_config(out_dir=str(tmp_path / "o"), time_limit_hours=0.05)
    assert not full.dry_run and full.time_limit_s == 180 and full.safety_margin_s == 45
    assert full.challenges == str(new / kaggle_env.TEST_FILE)
    # The notebook's recipe reaches every solver of the chain (and a bad one fails by name).
    chained = kaggle_env.notebook_config(out_dir=str(tmp_path / "o"), recipe="compact",
                                         solvers=[{"name": "induction"}, {"name": "transduction"}])
    assert [s.options["recipe"] for s in chained.solvers] == ["compact", "compact"]


def test_a_local_dry_run_runs_on_the_slice_it_writes_beside_its_results(tmp_path, monkeypatch):
    monkeypatch.setenv(kaggle_env.ROOT_ENV, str(tmp_path / "not-kaggle"))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    config = kaggle_env.notebook_config(out_dir=str(tmp_path / "run"))
    assert config.dry_run and config.challenges == str(tmp_path / "run" / kaggle_env.DRY_RUN_CHALLENGES)
    # What the run, `arc-submit validate` and `arc-submit score` read: every slice task, with its answers.
    tasks = load_tasks(config.challenges, limit=config.n_tasks)
    slice_ids = [tid for ids in kaggle_env.DRY_RUN_SLICE.values() for tid in ids]
    assert sorted(tasks) == sorted(slice_ids) and len(tasks) == config.n_tasks == 8
    for dataset, ids in kaggle_env.DRY_RUN_SLICE.items():
        original = load_tasks(dataset)
        for tid in ids:
            assert tasks[tid].to_json(with_solutions=True) == original[tid].to_json(with_solutions=True)
    # The options the slice's tasks were measured with; lm_head's LoRA only where the engine can serve it.
    options = config.solvers[0].options
    assert options == kaggle_env.tiny_dry_run_options("transduction", "hf")
    assert "lm_head" in options["target_modules"] and not options["permute_colours"]
    on_vllm = kaggle_env.notebook_config(out_dir=str(tmp_path / "run"), engine__kind="vllm")
    assert "target_modules" not in on_vllm.solvers[0].options


def test_a_commit_run_on_kaggle_keeps_the_competition_evaluation_file(tmp_path, monkeypatch):
    monkeypatch.setenv(kaggle_env.ROOT_ENV, str(tmp_path))
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    comp = tmp_path / "input" / "competitions" / "arc-prize-2026-arc-agi-2"
    comp.mkdir(parents=True)
    (comp / kaggle_env.TEST_FILE).write_text("{}")
    (comp / kaggle_env.EVALUATION_FILE).write_text("{}")
    config = kaggle_env.notebook_config()
    assert config.challenges == str(comp / kaggle_env.EVALUATION_FILE) and config.n_tasks == 8
    assert config.out_dir == str(tmp_path / "working")
    assert not (tmp_path / "working" / kaggle_env.DRY_RUN_CHALLENGES).exists()  # no slice written on Kaggle
