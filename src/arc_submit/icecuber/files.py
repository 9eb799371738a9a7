"""The file contract of the 2020 icecuber program: the built copy, the work folder, where the program reads
tasks, what its answers hold.

What the built `run` program does (read from the public top-quarks/ARC-solution sources and checked by driving
the real build, see tests/test_icecuber_real.py):
- It reads every `*.json` file of one folder relative to its working folder: `./dataset/evaluation/` for the
  repository's current commit (`eval = 0` in src/runner.cpp), `./dataset/test/` for the build submitted to
  Kaggle in 2020 (`eval = 1`). Users build either, so both are staged: `test/` holds the files and
  `evaluation` is a symbolic link to it, which also guarantees one listing order for both. When the 2020
  competition folder `/kaggle/input/abstraction-and-reasoning-challenge/` exists, it wins over both.
- A file's name must be an 8-character `[a-z0-9]` task id; the content is the 2020 task format
  `{"train": [{"input", "output"}...], "test": [{"input"}...]}` with only spaces and newlines between tokens.
- Each file becomes one sample per test input, in directory-listing order; `./run <index> <depth>` solves the
  sample at that index of the flat list.
- It writes `./output/answer_<index>_<depth>.csv`: a first line `<task id>_<test index>`, then up to three
  lines `|row|row|...| <score>` (one digit per cell, rows separated by `|`), best first. When it finds nothing
  it writes a 1x1 black grid with score -1.

Answers are mapped back through the header line of each answer file (what the program says it solved); the
staging order is kept too, so a run that died without answering is still reported against the right test input.

Beside what the program reads and writes, a run's work folder holds our own files: manifest.json (the staging),
bin/run (a private executable copy of the program), logs/<index>_<depth>.out|err and runs.jsonl (store.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fileio import write_json_atomic, write_text_atomic
from ..tasks import Grid, Task

log = logging.getLogger(__name__)

TASKS_SUBDIR = Path("dataset") / "test"  # relative to the working folder the program runs in
EVALUATION_LINK = Path("dataset") / "evaluation"  # -> test: what the current public commit reads
ANSWERS_SUBDIR = Path("output")
# The program prefers this folder when it exists (a Kaggle notebook with the 2020 competition attached).
COMPETITION_2020_DIR = Path("/kaggle/input/abstraction-and-reasoning-challenge/test")
PROGRAM_ID_PATTERN = re.compile(r"[a-z0-9]{8}")
NOTHING_FOUND_SCORE = -1.0  # with a 1x1 black grid: the program's placeholder when it found no candidate
CURRENT_WORK_DIR = "current"  # the work folder a resumable run uses under work_root

_HEADER = re.compile(r"([a-z0-9]{8})_(\d+)")
_GRID = re.compile(r"\|(?:[0-9]+\|)+")


class IcecuberUnavailable(RuntimeError):
    """No usable built copy (or the program would read the wrong tasks). The pipeline goes on without icecuber."""


def find_program(icecuber_dir: Path) -> Path:
    """The built `run` program in the folder (or one folder down, as Kaggle dataset uploads often nest)."""
    what = ("a built copy of top-quarks/ARC-solution: the folder where `make -j` made the `run` program "
            "(locally, or attached as a Kaggle dataset)")
    if not icecuber_dir.is_dir():
        raise IcecuberUnavailable(f"{icecuber_dir}: no such folder; expected {what}")
    candidates = [icecuber_dir / "run"] + sorted(icecuber_dir.glob("*/run"))
    program = next((p for p in candidates if p.is_file()), None)
    if program is None:
        built = "it holds a Makefile but was never built: run `make -j` in it" if (icecuber_dir / "Makefile").exists() \
            else f"it holds: {', '.join(sorted(p.name for p in icecuber_dir.iterdir())[:10]) or 'nothing'}"
        raise IcecuberUnavailable(f"{icecuber_dir}: no `run` program; {built}. Expected {what}")
    with open(program, "rb") as f:
        magic = f.read(4)
    if magic != b"\x7fELF" and not magic.startswith(b"#!"):
        raise IcecuberUnavailable(f"{program}: not a program (starts with {magic!r}); build it with `make -j`")
    if COMPETITION_2020_DIR.is_dir():
        raise IcecuberUnavailable(f"{COMPETITION_2020_DIR} exists and the icecuber program reads that folder instead "
                                  f"of the staged tasks; remove the 2020 competition input from the notebook")
    return program


def answer_file_name(index: int, depth: int) -> str:
    return f"answer_{index}_{depth}.csv"


@dataclass(frozen=True)
class StagedTasks:
    """A run's work folder: where the tasks were written, how the program's sample indices map back to
    (task id, test index), and where every other file of the run lies."""
    work_dir: Path
    samples: tuple[tuple[str, int], ...]  # program index -> (task id, test index)
    program_ids: dict[str, str]  # the 8-character id the program sees -> our task id

    @property
    def tasks_dir(self) -> Path:
        return self.work_dir / TASKS_SUBDIR

    @property
    def answers_dir(self) -> Path:
        return self.work_dir / ANSWERS_SUBDIR

    def answer_path(self, index: int, depth: int) -> Path:
        return self.answers_dir / answer_file_name(index, depth)

    @property
    def program(self) -> Path:
        return self.work_dir / "bin" / "run"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    def log_path(self, index: int, depth: int, kind: str) -> Path:
        """kind: 'out' or 'err', the program's stdout or stderr."""
        return self.logs_dir / f"{index}_{depth}.{kind}"

    @property
    def runs_file(self) -> Path:
        return self.work_dir / "runs.jsonl"


def program_id_for(task_id: str, taken: set[str]) -> str:
    """The task id itself when the program accepts it, else a stable 8-character stand-in (kept in the manifest)."""
    if PROGRAM_ID_PATTERN.fullmatch(task_id) and task_id not in taken:
        return task_id
    digest = hashlib.sha1(task_id.encode()).hexdigest()
    for start in range(len(digest) - 7):
        alias = digest[start:start + 8]
        if alias not in taken:
            return alias
    raise ValueError(f"task {task_id}: no free 8-character id left for the icecuber program")


def stage_tasks(tasks: dict[str, Task], work_dir: Path) -> StagedTasks:
    """Write one 2020-format file per task under work_dir/dataset/test and the index mapping beside it."""
    tasks_dir = work_dir / TASKS_SUBDIR
    tasks_dir.mkdir(parents=True, exist_ok=False)  # a fresh work folder per run: two runs never mix
    (work_dir / EVALUATION_LINK).symlink_to(TASKS_SUBDIR.name)  # relative: the folder may be moved whole
    (work_dir / ANSWERS_SUBDIR).mkdir()  # the program opens its answer file there and aborts if it is missing
    program_ids: dict[str, str] = {}
    for task_id in sorted(tasks):
        alias = program_id_for(task_id, set(program_ids))
        program_ids[alias] = task_id
        # Test outputs are never staged: the program must not see answers (and accepts tests without outputs).
        # json.dumps separates tokens with spaces only, which is all the program's reader skips.
        write_text_atomic(tasks_dir / f"{alias}.json", json.dumps(tasks[task_id].to_json(with_solutions=False)))
    # The program numbers samples in directory-listing order; os.listdir reads the same directory the same way.
    samples = []
    for name in os.listdir(tasks_dir):
        if name.endswith(".json"):
            task_id = program_ids[name[:-len(".json")]]
            samples.extend((task_id, i) for i in range(len(tasks[task_id].test)))
    staged = StagedTasks(work_dir, tuple(samples), program_ids)
    write_json_atomic(work_dir / "manifest.json", {"samples": [list(s) for s in samples], "program_ids": program_ids},
                      indent=1)
    return staged


def load_staged(work_dir: Path, tasks: dict[str, Task]) -> StagedTasks | None:
    """The staging an earlier run left in work_dir, when it staged exactly these tasks (same ids, same number of
    test inputs) and its files are intact; None otherwise (stage afresh)."""
    try:
        manifest = json.loads((work_dir / "manifest.json").read_text())
        samples = tuple((str(t), int(i)) for t, i in manifest["samples"])
        program_ids = {str(k): str(v) for k, v in manifest["program_ids"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    expected = sorted((tid, i) for tid, task in tasks.items() for i in range(len(task.test)))
    staged = StagedTasks(work_dir, samples, program_ids)
    if sorted(samples) != expected or not all((staged.tasks_dir / f"{a}.json").is_file() for a in program_ids):
        return None
    if not (work_dir / EVALUATION_LINK).exists():
        return None
    return staged


def prepare_work_dir(tasks: dict[str, Task], work_root: Path, resume: bool) -> tuple[StagedTasks, bool]:
    """A fresh folder under work_root, or (resume) work_root/current when it staged exactly these tasks.
    Returns the staging and whether it is an earlier run's, whose finished runs may be kept."""
    if not resume:
        work_dir = Path(tempfile.mkdtemp(prefix=time.strftime("icecuber-%Y%m%d-%H%M%S-"), dir=work_root))
        return stage_tasks(tasks, work_dir), False
    work_dir = work_root / CURRENT_WORK_DIR
    staged = load_staged(work_dir, tasks)
    if staged is not None:
        return staged, True
    if work_dir.exists():
        log.warning("icecuber: %s staged other tasks; starting it afresh", work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    return stage_tasks(tasks, work_dir), False


def install_program(program: Path, staged: StagedTasks) -> None:
    """A private executable copy in the work folder (Kaggle inputs are read-only and lose the executable bit),
    and the folder its logs go to."""
    staged.program.parent.mkdir(exist_ok=True)
    shutil.copyfile(program, staged.program)
    staged.program.chmod(0o755)
    staged.logs_dir.mkdir(exist_ok=True)


def read_staged_tasks(staged: StagedTasks) -> dict[str, dict]:
    """{task id: the 2020-format JSON written for it}: for checking what the program will read."""
    return {task_id: json.loads((staged.tasks_dir / f"{alias}.json").read_text())
            for alias, task_id in staged.program_ids.items()}


@dataclass
class AnswerFile:
    """One parsed answer file. `answers` keeps the program's order (best first); bad lines are listed, not fatal."""
    path: Path
    task_id: str | None = None
    test_index: int | None = None
    answers: list[tuple[Grid, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    nothing_found: bool = False


def parse_grid_text(text: str) -> Grid | None:
    """`|012|345|` -> a 2x3 grid; None when it is not a valid ARC grid (ragged, empty, over 30 per side)."""
    if not _GRID.fullmatch(text):
        return None
    rows = text.strip("|").split("|")
    if not 1 <= len(rows) <= 30 or len({len(r) for r in rows}) != 1 or not 1 <= len(rows[0]) <= 30:
        return None
    return np.array([[int(c) for c in row] for row in rows], dtype=np.int8)


def parse_answer_file(path: Path, staged: StagedTasks) -> AnswerFile:
    """Read `answer_<index>_<depth>.csv`; every line that does not follow the format is reported and skipped."""
    result = AnswerFile(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        result.problems.append(f"{path}: cannot be read ({e})")
        return result
    if not lines:
        result.problems.append(f"{path}: empty (no '<task id>_<test index>' line)")
        return result
    header = _HEADER.fullmatch(lines[0].strip())
    task_id = staged.program_ids.get(header.group(1)) if header else None
    if task_id is None:
        result.problems.append(f"{path}: line 1 is {lines[0][:60]!r}, not '<task id>_<test index>' of a staged task")
        return result
    result.task_id, result.test_index = task_id, int(header.group(2))
    if (task_id, result.test_index) not in staged.samples:
        result.problems.append(f"{path}: task {task_id} has no test input {result.test_index}")
        result.task_id = result.test_index = None
        return result
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split()
        grid = parse_grid_text(parts[0]) if len(parts) == 2 else None
        try:
            score = float(parts[1]) if grid is not None else math.nan
        except ValueError:
            score = math.nan
        if grid is None or not math.isfinite(score):
            result.problems.append(f"{path}: line {number} is {line[:60]!r}, not '|row|row|... score'")
            continue
        if score == NOTHING_FOUND_SCORE and grid.shape == (1, 1) and grid[0, 0] == 0:
            result.nothing_found = True  # the program's placeholder, not a guess
            continue
        result.answers.append((grid, score))
    return result
