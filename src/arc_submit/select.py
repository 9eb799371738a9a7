"""Merge ranked candidates from any number of solvers into attempt_1 / attempt_2 for one test input.

The order, and why:
1. Grids that several solvers found independently come first (agreement across unrelated methods is the
   strongest evidence there is), more solvers before fewer, then more votes.
2. Then the solvers take turns in priority order, each offering its best grid not yet chosen: attempt_2 comes
   from the second solver rather than from the first solver's runner-up, the ensembling that added solved
   tasks in the field (icecuber's top answer beside the LLM's). Within a solver, more votes (samples,
   augmentations, programs that produced the grid) win, then the solver's own score, then the grid's bytes,
   so ties are broken the same way on every run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .candidates import Candidate, grid_key
from .tasks import Grid


@dataclass(frozen=True, eq=False)
class Choice:
    """A selected attempt and where it came from."""
    grid: Grid
    votes: int
    solvers: tuple[str, ...]  # every solver that proposed this grid, in priority order
    score: float  # best solver score among its proposers
    per_solver_votes: dict = field(default_factory=dict)


def _priority_index(priority: Sequence[str]):
    rank = {name: i for i, name in enumerate(priority)}
    # Unknown solvers come after the named ones, alphabetically, so the order never depends on input order.
    return lambda name: (rank.get(name, len(rank)), name)


def select_attempts(candidates: Iterable[Candidate], priority: Sequence[str] = (), k: int = 2) -> list[Choice]:
    """Up to k distinct grids, best first (see the module docstring for the order)."""
    by_grid: dict[tuple, dict] = {}
    for c in candidates:
        key = grid_key(c.grid)
        g = by_grid.setdefault(key, {"grid": np.asarray(c.grid, dtype=np.int8), "votes": defaultdict(int),
                                     "score": defaultdict(lambda: float("-inf"))})
        g["votes"][c.solver] += max(int(c.count), 0)
        g["score"][c.solver] = max(g["score"][c.solver], float(c.score))
    if not by_grid:
        return []

    solver_order = _priority_index(priority)

    def choice(key) -> Choice:
        g = by_grid[key]
        solvers = tuple(sorted(g["votes"], key=solver_order))
        return Choice(g["grid"], sum(g["votes"].values()), solvers, max(g["score"].values()), dict(g["votes"]))

    chosen: list[tuple] = []
    agreed = [key for key, g in by_grid.items() if len(g["votes"]) > 1]
    agreed.sort(key=lambda key: (-len(by_grid[key]["votes"]), -sum(by_grid[key]["votes"].values()),
                                 -max(by_grid[key]["score"].values()), key))
    chosen.extend(agreed[:k])

    per_solver: dict[str, list[tuple]] = defaultdict(list)
    for key, g in by_grid.items():
        for solver in g["votes"]:
            per_solver[solver].append(key)
    for solver, keys in per_solver.items():
        keys.sort(key=lambda key: (-by_grid[key]["votes"][solver], -by_grid[key]["score"][solver], key))
    queues = [per_solver[s] for s in sorted(per_solver, key=solver_order)]
    while len(chosen) < k and any(queues):
        for queue in queues:
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return [choice(key) for key in chosen[:k]]
