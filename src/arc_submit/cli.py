"""`arc-submit` command line. Exit codes: 0 ok, 1 invalid input or failed check, 2 usage error.

Each subcommand is one `add_<name>` function (its parser) and one `cmd_<name>` function (its work), so a new
subcommand is two functions and a line in COMMANDS.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import Counter

from .tasks import (EMBEDDED_DATASETS, TaskFormatError, load_solutions, load_tasks, read_json_file,
                    skipped_task_entries, skipped_test_counts)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SOURCE_HELP = "a Kaggle *_challenges.json file or a dataset name: " + ", ".join(EMBEDDED_DATASETS)


def _read_submission(path: str):
    return read_json_file(path, fix="write it again")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a slice of no tasks checks nothing and passes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value} (leave the option out for every task)")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (a NaN or infinite limit never comes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return value


class UsageError(ValueError):
    """A flag's value that cannot be read; the message names the flag and the form expected (exit 2)."""


def parse_set_items(items: list[str], flag: str = "--set") -> dict:
    """KEY=VALUE items as config overrides (dotted keys for nested ones), each value read as a YAML scalar:
    3 -> int, true -> bool, null -> None, [a, b] -> list, {a: 1} -> dict. What run's and sweep's --set and
    sweep's --variant read, so a value means the same in each."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            reason = getattr(e, "problem", None) or e  # a parse error's own words, without the dump of marks
            raise UsageError(f"{flag} {item!r}: the value is not valid YAML ({reason}); quote it, or close its "
                             f"brackets") from None
    return overrides


def split_top_level_commas(text: str) -> list[str]:
    """text split at the commas outside brackets and quotes, so a variant's value may be a list or a mapping
    (raise_on=[a, b],sleep_s=1 is two items)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def parse_variant(text: str) -> tuple[str, dict]:
    """--variant NAME:KEY=VALUE[,KEY=VALUE...] as (name, overrides)."""
    name, sep, rest = text.partition(":")
    items = split_top_level_commas(rest)
    if not sep or not name.strip() or not items:
        raise UsageError(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...], e.g. "
                         f"lr3:solver.options.learning_rate=3e-4")
    return name.strip(), parse_set_items(items, flag=f"--variant {name.strip()}")


def add_validate(sub):
    p = sub.add_parser("validate", help="check a submission.json against the challenges (Kaggle's rules)")
    p.add_argument("submission")
    p.add_argument("--challenges", required=True, help=SOURCE_HELP)
    p.add_argument("--n-tasks", type=positive_int, help="only the first N tasks of the challenges (a dry run's slice)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="the challenges' invalid tasks (a run with --skip-invalid answered each [[0]]) are checked "
                        "for presence and shape only")


def cmd_validate(args) -> int:
    from .submission import validate

    tasks = load_tasks(args.challenges, skip_invalid=args.skip_invalid, limit=args.n_tasks)
    skipped = skipped_test_counts(args.challenges, tasks) if args.skip_invalid and not args.n_tasks else {}
    problems = validate(_read_submission(args.submission), tasks, skipped)
    for line in problems:
        print(line)
    if problems:
        print(f"INVALID: {len(problems)} problem(s) in {args.submission}")
        return EXIT_FAILED
    print(f"valid: {args.submission} has all {len(tasks)} tasks in the right shape")
    return EXIT_OK


def add_score(sub):
    p = sub.add_parser("score", help="score a submission with the official metric and print a per-task table")
    p.add_argument("submission")
    p.add_argument("--solutions", required=True,
                   help="a *_solutions.json file, or a dataset name: " + ", ".join(EMBEDDED_DATASETS))
    p.add_argument("--n-tasks", type=positive_int, help="only the first N tasks (sorted ids) of the solutions")


def cmd_score(args) -> int:
    from .submission import score, validate_shape

    solutions = load_solutions(args.solutions)
    if args.n_tasks is not None:
        solutions = dict(list(solutions.items())[:args.n_tasks])
    submission = _read_submission(args.submission)
    report = score(submission, solutions)
    print(report.table())
    # A file Kaggle would reject scores nothing there, whatever its right answers: say so, loudly, and fail.
    problems = validate_shape(submission, {tid: len(s) for tid, s in solutions.items()},
                              extra_allowed=args.n_tasks is not None)
    for line in problems[:20]:
        print(line)
    if problems:
        print(f"INVALID: {len(problems)} problem(s) in {args.submission}: Kaggle would reject it, so the score above "
              f"is only what its answers would get in a valid file (see `arc-submit validate`)")
        return EXIT_FAILED
    return EXIT_OK


def add_tasks(sub):
    p = sub.add_parser("tasks", help="summarise a dataset: task count, test inputs, grid sizes")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid tasks with a warning")


def cmd_tasks(args) -> int:
    tasks = load_tasks(args.source, skip_invalid=args.skip_invalid)
    n_train = Counter(len(t.train) for t in tasks.values())
    n_test = Counter(len(t.test) for t in tasks.values())
    sides = [max(ex.input.shape) for t in tasks.values() for ex in (*t.train, *t.test)]
    print(f"{args.source}: {len(tasks)} tasks, {sum(len(t.test) for t in tasks.values())} test inputs")
    print("train examples per task: " + ", ".join(f"{k}: {v}" for k, v in sorted(n_train.items())))
    print("test inputs per task:    " + ", ".join(f"{k}: {v}" for k, v in sorted(n_test.items())))
    if sides:
        buckets = Counter(min((s - 1) // 5, 5) for s in sides)
        labels = ["1-5", "6-10", "11-15", "16-20", "21-25", "26-30"]
        print("largest input side:      " + ", ".join(f"{labels[b]}: {buckets[b]}" for b in range(6)))
    with_solutions = sum(t.has_solutions for t in tasks.values())
    print(f"tasks with test solutions: {with_solutions}")
    return EXIT_OK


def add_backend_arguments(p) -> None:
    """--backend and --ray-address, as run and sweep take them."""
    p.add_argument("--backend", choices=("local", "ray"),
                   help="where the workers run: local processes (default) or Ray actors across a cluster")
    p.add_argument("--ray-address", help="the Ray cluster to join (ray start's address, or auto); default: "
                                         "RAY_ADDRESS, else a Ray instance on this machine")


def add_run(sub):
    p = sub.add_parser("run", help="the whole pipeline without a notebook: solve, assemble, validate, score")
    p.add_argument("--config", help="a YAML file of RunConfig keys (see config.py); defaults otherwise")
    p.add_argument("--challenges", help=SOURCE_HELP)
    p.add_argument("--out", dest="out_dir", help="output folder (re-running with the same folder resumes)")
    p.add_argument("--n-tasks", type=positive_int, help="only the first N tasks")
    p.add_argument("--skip-invalid", action="store_true",
                   help="drop tasks that break the ARC rules (each still gets a [[0]] entry) instead of stopping")
    p.add_argument("--fresh", action="store_true",
                   help="start over in an --out that holds another run (its outputs move to OUT/replaced-<time>/)")
    add_backend_arguments(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, dotted for nested ones (engine.kind=vllm, solver.name=induction)")


def cmd_run(args) -> int:
    from .config import ConfigError, load_config
    from .journal import JournalError
    from .kaggle_env import check_outcome
    from .pipeline import run
    from .preflight import PreflightError, preflight

    overrides = {k: v for k, v in (("challenges", args.challenges), ("out_dir", args.out_dir),
                                   ("n_tasks", args.n_tasks), ("skip_invalid", args.skip_invalid or None),
                                   ("fresh", args.fresh or None), ("backend", args.backend),
                                   ("ray_address", args.ray_address)) if v is not None}
    try:
        overrides.update(parse_set_items(args.set))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.config, **overrides)
    except ConfigError as e:  # a key or value of the configuration itself
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        preflight(config, strict=True)  # a missing model, a bad challenges file, a misspelled option: named
        result = run(config)
    except (PreflightError, ConfigError, JournalError) as e:  # what the checks found: exit 1 (module docstring)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(result.summary())
    problems = check_outcome(result, config, strict=False)
    return EXIT_OK if not problems else EXIT_FAILED


def add_sweep(sub):
    p = sub.add_parser("sweep", help="run several configs over the same tasks, one after another, and compare them "
                                     "in one table (OUT/sweep.md, OUT/sweep.csv)")
    p.add_argument("configs", nargs="+", metavar="CONFIG.yaml",
                   help="YAML files of RunConfig keys; each runs into OUT/<file name without .yaml>/")
    p.add_argument("--out", required=True, dest="out_dir",
                   help="the sweep's folder (re-running with the same folder resumes every run)")
    p.add_argument("--challenges", help=SOURCE_HELP + " (for every run)")
    p.add_argument("--n-tasks", type=positive_int, help="only the first N tasks (for every run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key for every run, as `run --set` reads it")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
                   help="one more run, named NAME (its folder OUT/NAME), of the first CONFIG with these overrides "
                        "on top of --set; commas inside [...] or {...} belong to the value. The first CONFIG still "
                        "runs too, under its own name: the baseline the variants are read against")
    p.add_argument("--fresh", action="store_true",
                   help="every run starts over (each folder's old outputs move to OUT/<name>/replaced-<time>/); "
                        "without it a run whose config changed since the last sweep is refused")
    add_backend_arguments(p)


def cmd_sweep(args) -> int:
    from .sweep import SweepRefused, run_sweep, table_markdown

    shared = {k: v for k, v in (("challenges", args.challenges), ("n_tasks", args.n_tasks),
                                ("backend", args.backend), ("ray_address", args.ray_address)) if v is not None}
    try:
        shared.update(parse_set_items(args.set))
        variants = [parse_variant(text) for text in args.variant]
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_sweep(args.configs, args.out_dir, variants, shared, fresh=args.fresh)
    except SweepRefused as e:  # checked before the first run: nothing ran
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        print(f"sweep refused before any run: {len(e.problems)} problem(s) above", file=sys.stderr)
        return EXIT_USAGE if e.usage else EXIT_FAILED
    print(table_markdown(result.rows))
    print(f"table: {result.table_path}  {result.csv_path}")
    for row in result.failed:
        print(f"error: {row.label}: {row.error}", file=sys.stderr)
    return EXIT_FAILED if result.failed else EXIT_OK


def add_assemble(sub):
    p = sub.add_parser("assemble", help="rebuild submission.json of a run folder from its journals (no solving)")
    p.add_argument("out_dir", help="a run's output folder (holds journals/ and run-config.json)")
    p.add_argument("--priority", help="solver order for attempt_1, comma-separated (default: the run's own)")
    p.add_argument("--challenges", help=SOURCE_HELP + " (default: the run's own)")


def cmd_assemble(args) -> int:
    from pathlib import Path

    from .assembly import write_assembly
    from .config import ConfigError, from_dict
    from .run_folder import RUN_CONFIG_NAME, RunFolderMismatch, check_same_challenges
    from .submission import validate

    out_dir = Path(args.out_dir)
    saved_path = out_dir / RUN_CONFIG_NAME
    if not (out_dir / "journals").is_dir() or not saved_path.is_file():
        print(f"error: {out_dir}: no journals/ folder or {RUN_CONFIG_NAME}; give the output folder of an "
              f"`arc-submit run`", file=sys.stderr)
        return EXIT_FAILED
    try:
        saved = from_dict(read_json_file(saved_path, fix="re-run into this folder with --fresh"))
    except ConfigError as e:
        print(f"error: {saved_path}: not a run configuration ({e}); re-run into this folder with --fresh",
              file=sys.stderr)
        return EXIT_FAILED
    challenges = args.challenges or saved.challenges
    tasks = load_tasks(challenges, saved.solutions, skip_invalid=saved.skip_invalid, limit=saved.n_tasks)
    try:
        check_same_challenges(out_dir, tasks)  # another file's tasks would all get the fallback, silently
    except RunFolderMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    priority = args.priority.split(",") if args.priority else saved.priority
    skipped = skipped_task_entries(challenges, tasks) if saved.skip_invalid and not saved.n_tasks else {}
    result = write_assembly(out_dir, tasks, priority, skipped, saved.solver_weights)
    if result.read.describe():
        print(f"WARNING: journals: {result.read.describe()}")
    problems = validate(result.submission, tasks, {tid: len(e) for tid, e in skipped.items()})
    for line in problems:
        print(line)
    print(f"{out_dir / 'submission.json'}: {len(tasks)} tasks, {result.answered} test inputs answered by a solver"
          f" ({'valid' if not problems else 'INVALID'})")
    return EXIT_OK if not problems else EXIT_FAILED


def add_icecuber(sub):
    p = sub.add_parser("icecuber", help="run the 2020 icecuber solution alone and write its candidates")
    p.add_argument("--challenges", required=True, help=SOURCE_HELP)
    p.add_argument("--icecuber-dir", required=True,
                   help="folder of a built copy of top-quarks/ARC-solution (holds the `run` program)")
    p.add_argument("--out", required=True, help="candidates.json: {task_id: [[candidate, ...] per test input]}")
    p.add_argument("--work-dir", default="icecuber-work", help="each run makes a fresh folder in here")
    p.add_argument("--depths", default="2,3,23,33,4",
                   help="depth schedule, comma-separated (default: a depth-2 pass over every task, then safe_run.py's)")
    p.add_argument("--processes", type=positive_int, default=4, help="programs at once")
    p.add_argument("--ram-gb", type=positive_float, help="RAM ceiling for all programs together (default: half the machine)")
    p.add_argument("--time-limit", type=positive_float, help="seconds until every program is stopped (default: no limit)")
    p.add_argument("--n-tasks", type=positive_int, help="only the first N tasks")


def cmd_icecuber(args) -> int:
    import time

    from .fileio import write_json_atomic
    from .icecuber import IcecuberUnavailable, candidates_to_json, start_run

    tasks = load_tasks(args.challenges, limit=args.n_tasks)
    deadline = time.time() + args.time_limit if args.time_limit else None
    try:
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
        handle = start_run(args.icecuber_dir, tasks, args.work_dir, deadline, depths=depths,
                           processes=args.processes, ram_ceiling_gb=args.ram_gb)
    except IcecuberUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        handle.wait(deadline)
    finally:  # Ctrl-C too: stop the programs, keep what they answered
        handle.stop()
        write_json_atomic(args.out, candidates_to_json(tasks, handle.candidates()))
    print(handle.summary_table())
    print(f"candidates: {args.out}   work folder (logs, answer files, runs.jsonl): {handle.work_dir}")
    if handle.failure is not None:
        print(f"error: {handle.failure}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def add_wheels(sub):
    p = sub.add_parser("wheels", help="download the offline wheelhouse for Kaggle's image (what the rerun installs)")
    p.add_argument("--requirements", default="kaggle/wheels-requirements.txt", help="what we add to the image")
    p.add_argument("--constraints", default="kaggle/image-constraints.txt",
                   help="`pip freeze` of a Kaggle notebook: what the image has and must keep")
    p.add_argument("--python", default="3.12", help="Kaggle's Python version")
    p.add_argument("--out", default="build/kaggle-wheels", help="the wheelhouse folder (uploaded as a dataset)")


def cmd_wheels(args) -> int:
    from pathlib import Path

    from .wheelhouse import build

    try:
        summary = build(Path(args.requirements), Path(args.constraints), Path(args.out), args.python)
    except RuntimeError as e:  # uv missing, or the resolution failed: the message says what to do
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    for note in summary["notes"]:
        print(note)
    for carried in summary["carried"]:
        print(f"CARRIED ON PURPOSE: {carried}")
    print(f"{args.out}: {summary['downloaded']} wheels, {summary['size_mb']} MiB for Python {summary['python']}; "
          f"left to the image: {', '.join(summary['left_to_the_image']) or 'nothing'}")
    return EXIT_OK


def add_find_python(sub):
    p = sub.add_parser("find-python", help="print an installed Python of a version (what `make wheels-check` uses)")
    p.add_argument("version", help="major.minor, e.g. 3.12")
    p.add_argument("--given", help="an interpreter to check instead of looking (KAGGLE_PYTHON_BIN)")


def cmd_find_python(args) -> int:
    from .wheelhouse import find_python

    try:
        print(find_python(args.version, args.given or None))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def add_check_kernel(sub):
    p = sub.add_parser("check-kernel", help="check kaggle/kernel-metadata.json before `kaggle kernels push`")
    p.add_argument("metadata", help="the kernel-metadata.json file")


def cmd_check_kernel(args) -> int:
    from .kaggle_env import kernel_metadata_problems

    problems = kernel_metadata_problems(read_json_file(args.metadata))
    for line in problems:
        print(f"{args.metadata}: {line}")
    if problems:
        return EXIT_FAILED
    print(f"{args.metadata}: ok")
    return EXIT_OK


def add_execute(sub):
    p = sub.add_parser("execute", help="run generated programs (JSONL task_id + code) sandboxed on their tasks")
    p.add_argument("programs", help='a JSONL file, one {"task_id": ..., "code": ...} per line')
    p.add_argument("--challenges", required=True, help=SOURCE_HELP)
    p.add_argument("--solutions", help="test outputs, to count programs that reproduce them (default: the "
                                       "sibling *_solutions.json, or the dataset's own)")
    p.add_argument("--library", help="folder of modules programs may import (BARC: the one with common.py)")
    p.add_argument("--entry", default="transform", help="the function each program defines (BARC's model writes transform; its seeds: main)")
    p.add_argument("--timeout", type=positive_float, default=1.0, help="seconds per program on all its task's inputs")
    p.add_argument("--memory-mb", type=positive_int, default=1024, help="memory a program may allocate")
    p.add_argument("--workers", type=positive_int, default=None, help="parallel workers (default: the usable CPUs)")
    p.add_argument("--out", required=True, help="results JSONL")


def cmd_execute(args) -> int:
    from .execution import ExecutionSettings
    from .program_runs import run_programs_file

    from .execution import ExecutionError

    tasks = load_tasks(args.challenges, solutions=args.solutions)
    try:
        settings = ExecutionSettings(entry=args.entry, library_dir=args.library, timeout_s=args.timeout,
                                     memory_mb=args.memory_mb, workers=args.workers)
        summary = run_programs_file(args.programs, tasks, args.out, settings)
    except (ValueError, ExecutionError) as e:  # a missing or broken --library, named with the fix
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    for line in summary.lines():
        print(line)
    print(f"results: {args.out}")
    return EXIT_OK


def add_prompt(sub):
    from .llm.recipes import RECIPES

    p = sub.add_parser("prompt", help="show exactly what the engine gets for one test input of a task, under a recipe")
    p.add_argument("--preset", required=True, help=f"a recipe: {', '.join(RECIPES)}, or module:attribute")
    p.add_argument("--challenges", required=True, help=SOURCE_HELP)
    p.add_argument("--task", required=True, help="the task id")
    p.add_argument("--test-index", type=int, default=0, help="which test input (0-based; default 0)")
    p.add_argument("--model", help="a model folder, or a folder holding only its tokenizer files: the tokenizer "
                                   "decides the ids, the end-of-sequence token and the chat template")
    p.add_argument("--solver", choices=("transduction", "induction"),
                   help="whose prompt (default: the recipe's own; transduction when it has both)")
    p.add_argument("--json", action="store_true", help="one JSON object: messages, text, ids")


def cmd_prompt(args) -> int:
    import json

    from .llm.recipes import recipe
    from .prompt_view import prompt_view

    try:
        r = recipe(args.preset)
    except ValueError as e:
        print(f"error: --preset: {e}", file=sys.stderr)
        return EXIT_USAGE
    tasks = load_tasks(args.challenges)
    if args.task not in tasks:
        print(f"error: --task {args.task!r} is not in {args.challenges} ({len(tasks)} tasks; `arc-submit tasks "
              f"{args.challenges}` summarises them)", file=sys.stderr)
        return EXIT_FAILED
    tokenizer = None
    if args.model:
        from .llm.tiny import resolve_model
        from .llm.tokenizers import load_tokenizer

        try:
            tokenizer = load_tokenizer(resolve_model(args.model))
        except (FileNotFoundError, ValueError) as e:
            print(f"error: --model: {e}", file=sys.stderr)
            return EXIT_FAILED
    try:
        view = prompt_view(r, tasks[args.task], args.test_index, tokenizer, args.solver)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(view.as_json(), ensure_ascii=False))
    else:
        print("\n".join(view.lines()))
    return EXIT_OK


COMMANDS = {
    "prompt": (add_prompt, cmd_prompt),
    "run": (add_run, cmd_run),
    "sweep": (add_sweep, cmd_sweep),
    "validate": (add_validate, cmd_validate),
    "score": (add_score, cmd_score),
    "tasks": (add_tasks, cmd_tasks),
    "assemble": (add_assemble, cmd_assemble),
    "icecuber": (add_icecuber, cmd_icecuber),
    "execute": (add_execute, cmd_execute),
    "wheels": (add_wheels, cmd_wheels),
    "find-python": (add_find_python, cmd_find_python),
    "check-kernel": (add_check_kernel, cmd_check_kernel),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arc-submit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # exits with 2 on usage errors
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command][1](args)
    except TaskFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
