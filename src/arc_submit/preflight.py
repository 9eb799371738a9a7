"""Everything the scoring rerun needs, checked before any work: in the commit run a problem fails the notebook,
naming the fix; in the rerun it is shouted in the log and the report, and the run goes on (a fallback file is
worth more than none).

Checked: the challenges load; the model folder is a model (config, weights, tokenizer); the engine's package
imports; every engine option is a field of ModelSettings or of the engine's own settings and every vllm_options key an argument of the installed
vLLM; every solver option is one its solver knows; each LLM solver's recipe survives the model's tokenizer on a real
task, and its LoRA can be served by the engine; icecuber's options exist and its build answers a real task.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from pathlib import Path

from .config import ConfigError, RunConfig

log = logging.getLogger(__name__)

ENGINE_PACKAGES = {"hf": ("transformers", "peft", "torch"), "vllm": ("vllm", "transformers", "peft", "torch"),
                   "unsloth": ("unsloth", "transformers", "peft", "torch"), "none": ()}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
ICECUBER_SMOKE_TIMEOUT_S = 60.0


class PreflightError(ConfigError):
    """One or more problems that would make the scoring rerun fail or score zero; the message lists them all."""


def check_model_folder(model: str) -> list[str]:
    from .llm.tiny import TINY_STYLES

    if model in TINY_STYLES:  # built here on first use
        return []
    from .kaggle_env import attached_models

    path = Path(model)
    attached = ", ".join(str(p) for p in attached_models()) or "none found"
    if not path.is_dir():
        return [f"engine.model {model}: no such folder; attach the model as a Kaggle input and give its path "
                f"(model folders attached: {attached})"]
    problems = []
    if not (path / "config.json").is_file():
        problems.append(f"engine.model {model}: no config.json, so not a transformers model folder (it holds "
                        f"{', '.join(sorted(p.name for p in path.iterdir())[:8]) or 'nothing'}); model folders "
                        f"attached: {attached}")
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        problems.append(f"engine.model {model}: no weight files ({', '.join(WEIGHT_PATTERNS)})")
    if not any((path / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        problems.append(f"engine.model {model}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    return problems


def check_backend(config: RunConfig) -> list[str]:
    """Ray importable here for backend: ray (the cluster's nodes are checked as their actors start: ray_workers)."""
    if config.backend == "ray" and importlib.util.find_spec("ray") is None:
        return ["backend ray: Ray cannot be imported; install the [ray] extra (pip install -e '.[ray]') on the "
                "driver and every node, or set backend: local"]
    return []


def check_engine(config: RunConfig) -> list[str]:
    kind = config.engine.kind
    missing = [p for p in ENGINE_PACKAGES.get(kind, ()) if importlib.util.find_spec(p) is None]
    if missing:
        return [f"engine.kind {kind}: {', '.join(missing)} cannot be imported; install the offline wheels "
                f"(`make wheels`, attached as a dataset) or choose another engine kind"]
    if kind == "none":
        return []
    from .llm.engine import engine_settings

    try:
        model_settings, settings = engine_settings(kind, config.engine.model, **config.engine.options)
    except (TypeError, ValueError) as e:
        return [f"engine.options: {e}"]
    if model_settings.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        return ["engine.options.load_in_4bit: bitsandbytes cannot be imported; install it from the offline wheels "
                "(`make wheels` lists it) or set load_in_4bit false"]
    if kind == "vllm" and settings.vllm_options:
        import vllm

        from .llm.vllm_engine import accepted_engine_args

        unknown = sorted(set(settings.vllm_options) - accepted_engine_args(vllm))
        if unknown:
            return [f"engine.options.vllm_options: vLLM {vllm.__version__} takes no {', '.join(unknown)} "
                    f"(see vllm.engine.arg_utils.EngineArgs)"]
    return []


def check_solver(config: RunConfig) -> list[str]:
    """Every solver of the chain resolves to a Solver, and its options build (known names, valid values): the same
    two steps a worker takes before its first task."""
    from .solvers import resolve_solver

    problems = []
    for spec in config.solvers:
        try:
            solver = resolve_solver(spec.name)
        except ImportError as e:
            problems.append(f"solver {spec.name!r}: {type(e).__name__}: {e}")
            continue
        except ValueError as e:  # names the solver and the fix already
            problems.append(str(e))
            continue
        try:
            solver.make_options(spec.options)
        except ValueError as e:
            problems.append(f"solver.options of {spec.name}: {e}")
    return problems


def check_recipes(config: RunConfig) -> list[str]:
    """Each LLM solver's recipe, with the model's own tokenizer: one rendered prompt and one training text of a real
    task survive tokenisation (no error, no unknown token, decoded back unchanged); its LoRA can be served by the
    engine. A model fed text it cannot encode would score near zero for twelve hours."""
    if config.engine.kind == "none":
        return []
    from .solvers import resolve_solver

    links = []
    for spec in config.solvers:
        try:
            options = resolve_solver(spec.name).make_options(spec.options)
        except (ImportError, ValueError):
            continue  # check_solver reports it
        if hasattr(options, "prompt"):
            links.append((spec.name, options))
    if not links:
        return []
    problems = _lora_serving_problems(config, links)
    tokenizer, problem = _model_tokenizer(config.engine.model)
    if problem:
        return problems + [problem]
    task = _first_task(config)
    if task is None:
        return problems  # check_challenges reports it
    for name, options in links:
        problems += _round_trip(name, options, task, tokenizer, config.engine.model)
    return problems


def _lora_serving_problems(config: RunConfig, links) -> list[str]:
    from .llm.engine import engine_settings
    from .llm.engine_parts import vllm_lora_problem

    kind = config.engine.kind
    try:
        _, settings = engine_settings(kind, config.engine.model, **config.engine.options)
    except (TypeError, ValueError):
        return []  # check_engine reports it
    served_by_vllm = kind == "vllm" or (kind == "unsloth" and settings.fast_inference)
    if not served_by_vllm:
        return []
    out = []
    for name, options in links:
        train = options.train_settings()
        problem = vllm_lora_problem(train.target_modules, train.lora_rank, settings.max_lora_rank, kind)
        if problem:
            out.append(f"solver {name} (recipe {options.prompt.resolved().name}): {problem}")
    return out


def _model_tokenizer(model: str):
    from .llm.tiny import resolve_model
    from .llm.tokenizers import load_tokenizer

    try:
        return load_tokenizer(resolve_model(model)), None
    except (FileNotFoundError, ValueError) as e:
        return None, f"engine.model {model}: the tokenizer does not load: {e}"


def _first_task(config: RunConfig):
    from .tasks import TaskFormatError, load_tasks

    try:
        tasks = load_tasks(config.challenges, config.solutions, skip_invalid=config.skip_invalid, limit=1)
    except (TaskFormatError, OSError, ValueError):
        return None
    return next(iter(tasks.values()), None)


def _round_trip(name: str, options, task, tokenizer, model: str) -> list[str]:
    from .llm import prompts
    from .llm.tokenizers import round_trip_problems
    from .prompt_view import kind_of
    from .solvers.induction import SOLVER as INDUCTION

    r = options.prompt.resolved()
    kind = kind_of(r, INDUCTION if name == INDUCTION else None)  # the prompt `arc-submit prompt` would show
    try:
        if kind == "transduction":
            texts = {"prompt": prompts.transduction_prompt(r, task.train, task.test[0].input, tokenizer).text}
            if r.ttt_layout == "full_sequence":
                texts["training text"] = "".join(t for t, _ in prompts.full_sequence_text(r, task.train, tokenizer).segments)
            else:
                texts["training target"] = prompts.transduction_target(r, task.train[0].output, tokenizer)
        else:
            texts = {"prompt": prompts.induction_prompt(r, task.train, [task.test[0].input], tokenizer).text,
                     "training target": prompts.induction_target(r, "def transform(grid):\n    return grid", tokenizer)}
    except prompts.RecipeError as e:
        return [f"solver {name}: {e} (model {model})"]
    out = []
    for what, text in texts.items():
        for problem in round_trip_problems(tokenizer, text):
            out.append(f"solver {name}: recipe {r.name}'s {what} for task {task.id} does not survive the tokenizer of "
                       f"{model}: {problem}. Use the recipe this model was trained with, or give the model's own "
                       f"tokenizer files")
    return out


def check_icecuber(config: RunConfig) -> list[str]:
    """The options exist and the build answers a real task in a scratch folder (depth 1: a second or two)."""
    if config.icecuber.dir is None:
        return []
    import numpy as np

    from . import icecuber
    from .tasks import Example, Task

    try:
        icecuber.check_options(config.icecuber.options)
        icecuber.find_program(Path(config.icecuber.dir))
    except (ValueError, icecuber.IcecuberUnavailable) as e:
        return [f"icecuber: {e}"]
    # A task the program solves at depth 1 (mirror each row); built here, so no dataset package is needed.
    grids = [np.array(g, dtype=np.int8) for g in ([[1, 2], [3, 4]], [[5, 0, 6], [0, 7, 0]], [[8, 9], [9, 8], [1, 1]])]
    task = Task("preflt01", tuple(Example(g, g[:, ::-1]) for g in grids[:2]), (Example(grids[2], None),))
    scratch = Path(tempfile.mkdtemp(prefix="arc-submit-preflight-"))
    try:
        run = icecuber.start_run(config.icecuber.dir, {task.id: task}, scratch, time.time() + ICECUBER_SMOKE_TIMEOUT_S,
                                 depths=[1], processes=1)
        run.wait(time.time() + ICECUBER_SMOKE_TIMEOUT_S)
        statuses = {r.status for r in run.records()}
        if not statuses & {icecuber.ANSWERED, icecuber.NOTHING_FOUND}:
            problems = "; ".join(p for r in run.records() for p in r.problems) or "no message"
            return [f"icecuber: the build at {config.icecuber.dir} did not answer a task ({', '.join(statuses)}: "
                    f"{problems}); rebuild it on a machine like Kaggle's (`make -j` in a Kaggle notebook)"]
    except icecuber.IcecuberUnavailable as e:
        return [f"icecuber: {e}"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return []


def check_challenges(config: RunConfig) -> list[str]:
    from .tasks import TaskFormatError, load_tasks

    try:
        load_tasks(config.challenges, config.solutions, skip_invalid=config.skip_invalid, limit=config.n_tasks)
    except (TaskFormatError, OSError, ValueError) as e:
        return [f"challenges: {e}"]
    return []


def preflight(config: RunConfig, strict: bool) -> list[str]:
    """Every problem found (see the module docstring). strict: raise PreflightError listing them all;
    otherwise log each as an error and return them (the caller shows them in the report)."""
    t0 = time.time()
    problems = []
    for check in (check_challenges, lambda c: check_model_folder(c.engine.model) if c.engine.kind != "none" else [],
                  check_backend, check_engine, check_solver, check_recipes, check_icecuber):
        try:
            problems += check(config)
        except Exception as e:  # a check that breaks is itself a finding, never a reason to skip the others
            problems.append(f"preflight check failed: {type(e).__name__}: {e}")
    log.info("preflight: %d problem(s) in %.1f s", len(problems), time.time() - t0)
    if problems and strict:
        raise PreflightError("the scoring rerun would fail or score zero:\n- " + "\n- ".join(problems))
    for p in problems:
        log.error("PREFLIGHT: %s", p)
    return problems
