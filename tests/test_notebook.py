"""The notebook as users run it (papermill, a real kernel), and the dry-run / scoring-rerun decision."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arc_submit import kaggle_env
from arc_submit.config import ConfigError

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "submission.ipynb"


def test_dry_run_unless_kaggle_is_rerunning_for_scoring(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    dry = kaggle_env.notebook_config(out_dir=str(tmp_path))
    assert dry.dry_run and dry.n_tasks == 8 and dry.challenges == "arc-agi-2/evaluation"
    assert dry.time_limit_s == 240 and dry.solver.options["max_prompt_tokens"] == 1536  # tiny-model settings
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    monkeypatch.setattr(kaggle_env, "KAGGLE_INPUT", tmp_path / "input")  # no competition data attached
    with pytest.raises(ConfigError, match="no arc-agi_test_challenges.json"):
        kaggle_env.notebook_config(out_dir=str(tmp_path))
    comp = tmp_path / "input" / "arc-prize-2025"
    comp.mkdir(parents=True)
    (comp / "arc-agi_test_challenges.json").write_text("{}")
    full = kaggle_env.notebook_config(out_dir=str(tmp_path))
    assert not full.dry_run and full.n_tasks is None and full.time_limit_s == 12 * 3600
    assert full.challenges == str(comp / "arc-agi_test_challenges.json")


def test_notebook_runs_under_papermill(tmp_path):
    out = tmp_path / "run"
    executed = tmp_path / "executed.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOK), str(executed), "-p", "dry_run", "True",
                        "-p", "out_dir", str(out), "-p", "n_tasks", "2", "-p", "dry_run_minutes", "1.5",
                        "--cwd", str(tmp_path)], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    sub = json.loads((out / "submission.json").read_text())
    assert len(sub) == 2
    for name in ("report.md", "timeline.png", "tasks.csv"):
        assert (out / name).exists(), name
    text = executed.read_text()
    assert "(valid)" in text and "score: " in text
