"""Solvers behind one contract: a `Solver` value says everything the worker, the preflight and the memory plan
need to know about one, so adding a solver touches nothing outside it.

    Solver(name, solve, options=<a dataclass>, verifies=False, training=None)

- `solve(task, deadline, context, options)` returns one ranked candidate list per test input. `deadline` is a
  budget.Deadline (check it between phases); `context` is the worker's SolverContext (the engine, `emit` for
  candidates as soon as they are known, notes, the speed model, the program executor, training's memory record);
  `options` is an instance of the options dataclass.
- `options`: a frozen dataclass of typed fields with defaults, built once per worker from `solver.options` by
  `make_options` (unknown names and bad values raise ValueError naming the solver, the option and the known
  ones; the preflight does the same check before any work). Default: NoOptions.
- `verifies`: its support 1.0 means a verified answer (induction: a program reproducing every train pair); a
  later solver of the chain is then skipped (config skip_after_verified).
- `training(options) -> TrainingNeeds`: the largest LoRA training it will ask the engine for, which the memory
  plan reserves. None: it trains nothing.

A config names a solver by a built-in name (BUILT_IN) or as `module:attribute`, where the attribute is a Solver.
A plain function is refused with the line that wraps it: there is one contract, and nothing is guessed from a
function's signature.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .context import SolverContext
from .options import build_options, option_names

if TYPE_CHECKING:
    from ..budget import Deadline
    from ..candidates import Candidate
    from ..tasks import Task

# Imported by name when resolved, so `import arc_submit.solvers` stays light (no torch, no vLLM).
BUILT_IN = MappingProxyType({
    "transduction": "arc_submit.solvers.transduction:TRANSDUCTION",
    "induction": "arc_submit.solvers.induction:INDUCTION",
})


@dataclass(frozen=True)
class NoOptions:
    """The options of a solver that takes none."""


@dataclass(frozen=True)
class TrainingNeeds:
    """What a solver's per-task LoRA training needs room for on the GPU (llm/memory.py)."""
    max_seq_len: int
    lora_rank: int


@dataclass(frozen=True)
class Solver:
    name: str
    solve: Callable[[Task, Deadline, SolverContext, Any], list[list[Candidate]]]
    options: type = NoOptions
    verifies: bool = False
    training: Callable[[Any], TrainingNeeds] | None = None

    def __post_init__(self):
        if not (isinstance(self.options, type) and dataclasses.is_dataclass(self.options)):
            raise TypeError(f"solver {self.name}: options must be a dataclass class, got {self.options!r}")
        option_names(self.options)  # an option defined twice fails where the solver is defined

    def make_options(self, values: Mapping[str, Any]) -> Any:
        """Its options dataclass from a config's plain dict (see solvers/options.py)."""
        return build_options(self.name, self.options, values)

    def training_needs(self, options: Any) -> TrainingNeeds | None:
        return None if self.training is None else self.training(options)


def resolve_solver(name: str) -> Solver:
    """The Solver a config names: a built-in name or `module:attribute` naming a Solver."""
    target = BUILT_IN.get(name, name)
    if ":" not in target:
        raise ValueError(f"solver {name!r}: use one of {', '.join(BUILT_IN)}, or module:attribute naming a Solver")
    module_name, attribute = target.split(":", 1)
    module = importlib.import_module(module_name)
    if attribute not in vars(module):
        raise ValueError(f"solver {name!r}: module {module_name} has no {attribute}")
    solver = vars(module)[attribute]
    if not isinstance(solver, Solver):
        raise ValueError(f"solver {name!r}: {target} is a {type(solver).__name__}, not a Solver; wrap it: "
                         f"{attribute} = Solver({attribute!r}, solve=<function (task, deadline, context, options)>, "
                         f"options=<its options dataclass>) with arc_submit.solvers.Solver (README: adding a solver)")
    return solver


__all__ = ["BUILT_IN", "NoOptions", "Solver", "SolverContext", "TrainingNeeds", "resolve_solver"]
