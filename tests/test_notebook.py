"""The notebook as `make dry-run` runs it locally (papermill, a real kernel); Kaggle trees: test_kaggle_layouts.py."""

import json
import subprocess
import sys
from pathlib import Path


NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "submission.ipynb"


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
