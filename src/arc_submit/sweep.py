"""A sweep: several configs run over the same tasks, one after another, each into OUT/<name>/, then one table.

Each run is an ordinary `pipeline.run` in its own folder, so re-running the sweep with the same OUT resumes every
run (settled tasks are not solved again) and a folder can be looked at, assembled or scored like any run's.
Every config is loaded and preflighted before the first run starts: a typo in the last config fails in seconds,
not after the first runs' hours. A run that fails once started is a row saying why, and the others go on.

    configs ─► names checked ─► every config loaded + preflighted ─► run 1, run 2, ... ─► OUT/sweep.md, sweep.csv
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import run_folder
from .config import ConfigError, RunConfig, load_config
from .fileio import indistinct_file_names, safe_file_name, write_text_atomic

log = logging.getLogger(__name__)

TABLE_NAME, CSV_NAME = "sweep.md", "sweep.csv"


class SweepRefused(Exception):
    """The sweep did not start: every problem found, one line each. usage: a name or config key is wrong (the
    CLI's exit 2); otherwise a preflight or folder check failed (exit 1)."""

    def __init__(self, problems: list[str], usage: bool):
        super().__init__("\n".join(problems))
        self.problems, self.usage = problems, usage


@dataclass(frozen=True)
class SweepEntry:
    """One run of the sweep: a config file, plus its own overrides for a variant of the base config."""

    name: str
    config_path: str
    overrides: dict = field(default_factory=dict)
    variant: bool = False

    @property
    def label(self) -> str:
        """How messages name the run: the name and where its settings come from."""
        if self.variant:
            return f"variant {self.name} ({self.config_path} with {_as_set_items(self.overrides)})"
        return f"config {self.name} ({self.config_path})"


def _as_set_items(overrides: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "no overrides"


def sweep_entries(config_paths: list[str], variants: list[tuple[str, dict]]) -> list[SweepEntry]:
    """Every config file under its file stem, then each variant (name, overrides) of the first (base) file. The
    base runs too: it is the baseline a variant is read against."""
    if not config_paths:
        raise SweepRefused(["give at least one CONFIG.yaml (the base of any --variant)"], usage=True)
    entries = [SweepEntry(Path(p).stem, str(p)) for p in config_paths]
    entries += [SweepEntry(name, str(config_paths[0]), dict(overrides), variant=True) for name, overrides in variants]
    return entries


def check_names(entries: list[SweepEntry]) -> None:
    """Each name once and usable as it is as a folder name (a hashed folder would hide which run is which)."""
    problems = [f"{e.label}: the name {e.name!r} is not usable as a folder name; use letters, digits, _ and - "
                f"(rename the file or the variant)" for e in entries if safe_file_name(e.name) != e.name]
    seen: dict[str, SweepEntry] = {}
    for e in entries:
        if e.name in seen:
            problems.append(f"the name {e.name!r} is given twice: {seen[e.name].label} and {e.label}; each run "
                            f"needs its own name (its folder): rename a file or a variant")
        seen.setdefault(e.name, e)
    # Names that differ only in case would share a folder on a filesystem that ignores case (macOS, Windows).
    problems += [f"the names {a!r} and {b!r} differ only in case, so they would share a folder on some "
                 f"filesystems: rename one" for a, b in indistinct_file_names(seen)]
    if problems:
        raise SweepRefused(problems, usage=True)


def run_overrides(entry: SweepEntry, shared: dict, out: Path, fresh: bool) -> dict:
    """The overrides a run gets: the shared ones (--challenges, --n-tasks, --set, passed on as they are), then the
    variant's own (the more specific wins), then its folder. fresh is always the sweep's: a config file's
    `fresh: true` would otherwise start that run over on every re-run of the sweep."""
    for source, overrides in (("--set", shared), (f"--variant {entry.name}", entry.overrides)):
        if "out_dir" in overrides:
            raise ConfigError(f"{source} out_dir: each run's folder is OUT/<name> (here {out / entry.name}); "
                              f"give --out instead")
    return {**shared, **entry.overrides, "out_dir": str(out / entry.name), "fresh": fresh}


def _without_path_prefix(message: str, path: str) -> str:
    """load_config names the file itself; the entry's label says it already."""
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def load_one(entry: SweepEntry, shared: dict, out: Path, fresh: bool) -> RunConfig:
    """The entry's RunConfig; ConfigError naming the entry (a key or value of its file or overrides)."""
    try:
        return load_config(entry.config_path, **run_overrides(entry, shared, out, fresh))
    except ConfigError as e:
        raise ConfigError(f"{entry.label}: {_without_path_prefix(str(e), entry.config_path)}") from None


def folder_problem(entry: SweepEntry, config: RunConfig) -> str | None:
    """Why the run's folder cannot be used (a file in its place) or resumed (it holds a run of other tasks or
    settings), or None. Checked up front so that a config changed since the last sweep fails now, not after the
    runs before it."""
    from .tasks import load_tasks

    folder = Path(config.out_dir)
    if folder.exists() and not folder.is_dir():
        return f"{entry.label}: its folder {folder} is a file; move it away, or give the run another name"
    if config.fresh or not folder.is_dir():
        return None
    tasks = load_tasks(config.challenges, config.solutions, skip_invalid=config.skip_invalid, limit=config.n_tasks)
    try:
        run_folder.check_same_run(folder, run_folder.fingerprint(tasks, config))
    except run_folder.RunFolderMismatch as e:
        return (f"{entry.label}: {e}. In a sweep, --fresh starts every run over; or give the changed config another "
                f"name (its own folder)")
    return None


def check_all(entries: list[SweepEntry], shared: dict, out: Path, fresh: bool) -> list[RunConfig]:
    """Names, then every config loaded, preflighted and its folder checked: all of it before the first run, and
    every problem of every config listed at once (a config that does not load is not preflighted; the others
    are). SweepRefused when anything is wrong (usage when a config did not load); the configs otherwise."""
    from .preflight import PreflightError, preflight

    if out.exists() and not out.is_dir():
        raise SweepRefused([f"--out {out}: a file is in the way; give a folder"], usage=False)
    check_names(entries)
    configs, problems, any_unloadable = [], [], False
    for entry in entries:
        try:
            config = load_one(entry, shared, out, fresh)
        except ConfigError as e:
            problems.append(str(e))
            any_unloadable = True
            continue
        try:
            preflight(config, strict=True)
            problem = folder_problem(entry, config)
        except PreflightError as e:
            problem = f"{entry.label}: {e}"
        if problem:
            problems.append(problem)
        configs.append(config)
    if problems:
        raise SweepRefused(problems, usage=any_unloadable)
    return configs


@dataclass
class SweepRow:
    """One line of the table: what a run scored, or why it failed."""

    name: str
    label: str  # the name and where its settings come from (SweepEntry.label), for messages
    folder: Path
    score: float | None = None  # None: no solutions to score against, or the run failed
    solved: int | None = None  # tasks fully solved
    n_tasks: int | None = None
    wall_s: float | None = None  # this invocation's time: a resumed run counts only what it redid
    statuses: dict = field(default_factory=dict)
    error: str = ""  # empty: the run finished with a valid file

    def cells(self) -> dict[str, str]:
        solved = "-" if self.solved is None else str(self.solved)
        return {"name": self.name,
                "score": "-" if self.score is None else f"{self.score:.4f}",
                "solved": f"{solved}/{self.n_tasks}" if self.n_tasks is not None else "-",
                "wall s": "-" if self.wall_s is None else f"{self.wall_s:.1f}",
                "statuses": ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())),
                "folder": str(self.folder), "error": self.error}

    def csv_fields(self) -> dict:
        return {"name": self.name, "score": "" if self.score is None else self.score,
                "solved": "" if self.solved is None else self.solved,
                "tasks": "" if self.n_tasks is None else self.n_tasks,
                "wall_s": "" if self.wall_s is None else round(self.wall_s, 1),
                "statuses": ";".join(f"{k}={v}" for k, v in sorted(self.statuses.items())),
                "folder": str(self.folder), "error": self.error}


def run_one(entry: SweepEntry, config: RunConfig) -> SweepRow:
    """One pipeline.run; whatever stops it becomes the row's error, so the sweep goes on with the others."""
    from .kaggle_env import check_outcome
    from .pipeline import run

    row = SweepRow(entry.name, entry.label, Path(config.out_dir))
    try:
        result = run(config)
    except ConfigError as e:  # a folder that holds another run (RunFolderMismatch), one that cannot be written
        row.error = str(e)
        return row
    except Exception as e:  # noqa: BLE001 - one broken run must not cost the others' hours
        log.exception("sweep: %s failed", entry.label)
        row.error = f"{type(e).__name__}: {e}"
        return row
    row.n_tasks, row.wall_s, row.statuses = result.n_tasks, result.wall_s, dict(result.statuses)
    if result.score is not None:
        row.score, row.solved = result.score.score, result.score.tasks_fully_solved
    row.error = "; ".join(check_outcome(result, config, strict=False))  # an invalid file, no task settled
    return row


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(rows: list[SweepRow]) -> str:
    header = list(SweepRow("", "", Path()).cells())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row.cells().values()) + " |" for row in rows]
    return "\n".join(lines)


def write_tables(rows: list[SweepRow], out: Path) -> tuple[Path, Path]:
    """OUT/sweep.md and OUT/sweep.csv, each written atomically (a reader never sees half a table)."""
    md = ["# arc_submit sweep", "",
          "score: the official metric over the run's tasks (- without solutions); solved: tasks fully solved / "
          "tasks; wall s: this invocation's time (a resumed run counts only what it redid); folder: the run's "
          "own report.md, tasks.csv and submission.json.", "", table_markdown(rows)]
    md_path = write_text_atomic(out / TABLE_NAME, "\n".join(md) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SweepRow("", "", Path()).csv_fields()))
    writer.writeheader()
    writer.writerows(row.csv_fields() for row in rows)
    return md_path, write_text_atomic(out / CSV_NAME, buf.getvalue())


@dataclass
class SweepResult:
    rows: list[SweepRow]
    table_path: Path
    csv_path: Path

    @property
    def failed(self) -> list[SweepRow]:
        return [r for r in self.rows if r.error]


def run_sweep(config_paths: list[str], out: str | Path, variants: list[tuple[str, dict]] = (),
              shared: dict | None = None, fresh: bool = False) -> SweepResult:
    """Check everything (SweepRefused, nothing run, nothing written), then each run in order; the tables are
    rewritten after each run, so a sweep stopped midway still shows the runs it finished."""
    out = Path(out)
    entries = sweep_entries(list(config_paths), list(variants))
    configs = check_all(entries, dict(shared or {}), out, fresh)
    rows: list[SweepRow] = []
    for i, (entry, config) in enumerate(zip(entries, configs), 1):
        log.info("sweep: run %d/%d: %s into %s", i, len(entries), entry.label, config.out_dir)
        rows.append(run_one(entry, config))
        table_path, csv_path = write_tables(rows, out)
    return SweepResult(rows, table_path, csv_path)
