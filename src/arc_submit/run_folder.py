"""A run's output folder: that it can be written, what it was run on, and starting over in it.

Re-running into the same folder resumes: settled tasks are not solved again. That is only right when the folder
was run on the same tasks with the same answer-changing settings, so the start of every run records a fingerprint
of both (`run-fingerprint.json`): the challenges (task ids and test inputs) and the settings that decide the
answers (engine, model, solvers and their options, seed, icecuber). A run or an `assemble` that finds another
fingerprint refuses, naming both and the fix (another folder, or `--fresh`, which moves the old run aside).
Time limits, worker counts, a solver's share of the time and the attempt order are left out: a killed run resumed
with more time, or re-assembled in another order, is the same run; so is a run with a solver added to the chain
(the resume runs only the new solver), while a solver removed or given other options refuses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .config import ConfigError, RunConfig
from .fileio import write_json_atomic
from .journal import input_key
from .tasks import Task, TaskFormatError, read_json_file

log = logging.getLogger(__name__)

FINGERPRINT_NAME = "run-fingerprint.json"
RUN_CONFIG_NAME = "run-config.json"  # what `arc-submit assemble` needs to re-assemble
# Everything a run writes into its folder: what --fresh moves aside (and nothing else of the folder's).
RUN_OUTPUTS = ("journals", "icecuber", "tasks", "submission.json", RUN_CONFIG_NAME, FINGERPRINT_NAME, "report.md",
               "tasks.csv", "timeline.png", "memory.png", "run.log")


class RunFolderMismatch(ConfigError):
    """The folder holds a run of other challenges or settings; the message names both and the fix."""


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder, created if missing; ConfigError naming it when it is a file or cannot be written."""
    out = Path(out_dir)
    in_the_way = next((p for p in (out / "journals", out, *out.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise ConfigError(f"out_dir {out}: a file is in the way ({in_the_way}); give a folder (--out / out_dir)")
    try:
        (out / "journals").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"out_dir {out}: cannot write there ({e.strerror or e}); give a writable folder "
                          f"(--out / out_dir; on Kaggle, /kaggle/working)") from None
    return out


@dataclass(frozen=True)
class Fingerprint:
    challenges: str  # hash of the task ids and test inputs
    n_tasks: int
    settings: dict  # the answer-changing settings, as they were (to name what differs)

    @property
    def settings_hash(self) -> str:
        return _digest(self.settings)

    def to_json(self) -> dict:
        return {"challenges": self.challenges, "n_tasks": self.n_tasks, "settings_hash": self.settings_hash,
                "settings": self.settings}

    def describe(self) -> str:
        return f"{self.n_tasks} tasks (challenges {self.challenges[:12]}), settings {self.settings_hash[:12]}"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def challenges_fingerprint(tasks: Mapping[str, Task]) -> str:
    return _digest([[tid, [input_key(ex.input) for ex in task.test]] for tid, task in sorted(tasks.items())])


def answer_settings(config: RunConfig) -> dict:
    """The settings that decide what the solvers answer (see the module docstring for what is left out). Solvers
    by name with their options: a solver's share of the time is time, like the limit."""
    return {"engine": dataclasses.asdict(config.engine),
            "solvers": {s.name: s.options for s in config.solvers},
            "skip_after_verified": config.skip_after_verified, "seed": config.seed,
            "icecuber": {"used": config.icecuber.dir is not None, "options": config.icecuber.options}}


def fingerprint(tasks: Mapping[str, Task], config: RunConfig) -> Fingerprint:
    return Fingerprint(challenges_fingerprint(tasks), len(tasks), answer_settings(config))


def recorded_fingerprint(out_dir: Path) -> Fingerprint | None:
    """The folder's recorded fingerprint; None when there is none; RunFolderMismatch when it is unreadable."""
    path = out_dir / FINGERPRINT_NAME
    if not path.exists():
        return None
    try:
        raw = read_json_file(path, fix="start over with --fresh")
        return Fingerprint(str(raw["challenges"]), int(raw["n_tasks"]), dict(raw["settings"]))
    except (TaskFormatError, KeyError, TypeError, ValueError) as e:
        raise RunFolderMismatch(f"{path}: unreadable ({e}); run into another folder (--out), or start over in "
                                f"this one with --fresh (fresh: true)") from None


def _has_journals(out_dir: Path) -> bool:
    return any((out_dir / "journals").glob("journal-*.jsonl"))


def _differences(old: Fingerprint, new: Fingerprint) -> list[str]:
    out = []
    if old.challenges != new.challenges:
        out.append(f"the challenges (recorded: {old.n_tasks} tasks, {old.challenges[:12]}; now: {new.n_tasks} tasks, "
                   f"{new.challenges[:12]})")
    keys = sorted((set(old.settings) | set(new.settings)) - {"solvers"})
    changed = [(k, old.settings.get(k), new.settings.get(k)) for k in keys if old.settings.get(k) != new.settings.get(k)]
    # A solver added to the chain is new work on the same answers (the resume runs only it); one removed or run
    # with other options left answers this run would not give.
    old_solvers, new_solvers = old.settings.get("solvers", {}), new.settings.get("solvers", {})
    changed += [(f"solvers.{name}", options, new_solvers.get(name, "not in the chain"))
                for name, options in old_solvers.items() if new_solvers.get(name) != options]
    if changed:
        out.append("the settings " + ", ".join(f"{k} (recorded {was!r}, now {now!r})" for k, was, now in changed))
    return out


def check_same_run(out_dir: Path, new: Fingerprint, what: str = "resume") -> None:
    """RunFolderMismatch unless the folder is empty of runs or holds this very run (see the module docstring)."""
    old = recorded_fingerprint(out_dir)
    fix = ("run into another folder (--out / out_dir), or start over in this one with --fresh (fresh: true), "
           "which moves the old run aside")
    if old is None:
        if _has_journals(out_dir):
            raise RunFolderMismatch(f"{out_dir}: journals without a {FINGERPRINT_NAME} (a run of an older "
                                    f"arc_submit, or not a run folder), so they cannot be told to be for these tasks "
                                    f"and settings; cannot {what}: {fix}")
        return
    differences = _differences(old, new)
    if differences:
        raise RunFolderMismatch(f"{out_dir} was run on other inputs: {'; '.join(differences)}. Its answers are not "
                                f"for this run, so cannot {what}: {fix}")


def check_same_challenges(out_dir: Path, tasks: Mapping[str, Task]) -> None:
    """For `assemble`: the folder's run was on these tasks (settings may differ: they are not re-run)."""
    old = recorded_fingerprint(out_dir)
    if old is None:
        raise RunFolderMismatch(f"{out_dir}: no {FINGERPRINT_NAME}, so its journals cannot be told to be for these "
                                f"challenges; re-run it (arc-submit run --out {out_dir} --fresh)")
    new = challenges_fingerprint(tasks)
    if old.challenges != new:
        raise RunFolderMismatch(f"{out_dir} was run on other challenges (recorded: {old.n_tasks} tasks, "
                                f"{old.challenges[:12]}; given: {len(tasks)} tasks, {new[:12]}); assembling it "
                                f"would answer none of them: give the run's own challenges (or leave out "
                                f"--challenges), or run these into another folder")


def move_old_run_aside(out_dir: Path) -> Path | None:
    """--fresh: the run outputs of the folder (RUN_OUTPUTS, nothing else) into out_dir/replaced-<time>/."""
    present = [name for name in RUN_OUTPUTS if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    if not present:
        return None
    stamp = time.strftime("replaced-%Y%m%d-%H%M%S")
    aside, n = out_dir / stamp, 1
    while aside.exists():  # two fresh starts within a second
        aside, n = out_dir / f"{stamp}-{n}", n + 1
    aside.mkdir()
    for name in present:
        shutil.move(str(out_dir / name), str(aside / name))
    log.warning("fresh: the previous run in %s moved to %s", out_dir, aside)
    return aside


def record(out_dir: Path, new: Fingerprint, config: RunConfig) -> None:
    write_json_atomic(out_dir / FINGERPRINT_NAME, new.to_json(), indent=1)
    write_json_atomic(out_dir / RUN_CONFIG_NAME, config.to_dict(), indent=1)
