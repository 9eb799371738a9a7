"""The answers solvers propose, as values: `Candidate` (one grid for one test input), `grid_key`, and
`ranked_by_grid`, the one way proposals of equal grids are pooled and ranked (transduction's votes, induction's
programs, selection across solvers).

A Candidate is validated when it is made: a grid that breaks the ARC rules (a colour 12, 31 rows, ragged rows,
an empty grid) raises InvalidCandidate naming the solver and the rule, so it can never reach selection or the
submission file. Journals, selection and assembly all use this one definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

import numpy as np

from .tasks import Grid, MAX_SIDE, N_COLOURS


class InvalidCandidate(ValueError):
    """A proposed grid that no ARC answer can be; the message names the solver and the rule broken."""


def grid_key(grid: Grid) -> tuple:
    """Hashable identity of a grid: equal grids (same shape, same cells) have equal keys."""
    g = np.asarray(grid, dtype=np.int8)
    return (g.shape, g.tobytes())


T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class GridGroup(Generic[T]):
    """Every proposal of one grid: what produced it (samples, programs, candidates), in the order they came."""
    key: tuple  # grid_key of the grid
    grid: np.ndarray  # int8
    members: tuple[T, ...]


def ranked_by_grid(proposals: Iterable[tuple[Grid, T]], rank: Callable[[GridGroup[T]], tuple]) -> list[GridGroup[T]]:
    """Proposals (grid, what proposed it) pooled by equal grid, best first: by rank(group) ascending, then by the
    grid's bytes, so the same proposals always rank the same whatever order they came in."""
    grids: dict[tuple, np.ndarray] = {}
    members: dict[tuple, list[T]] = {}
    for grid, member in proposals:
        key = grid_key(grid)
        if key not in grids:
            grids[key], members[key] = np.asarray(grid, dtype=np.int8), []
        members[key].append(member)
    groups = [GridGroup(key, grids[key], tuple(members[key])) for key in grids]
    return sorted(groups, key=lambda g: (*rank(g), g.key))


def checked_grid(grid, solver: str = "?") -> np.ndarray:
    """The grid as an int8 array, or InvalidCandidate saying what is wrong with it."""
    try:
        g = np.asarray(grid)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise InvalidCandidate(f"{solver}: not a rectangular grid ({e})") from None
    if g.ndim != 2 or g.dtype == object:
        raise InvalidCandidate(f"{solver}: a grid must be 2-D rows of cells, got shape {g.shape}")
    if not (1 <= g.shape[0] <= MAX_SIDE and 1 <= g.shape[1] <= MAX_SIDE):
        raise InvalidCandidate(f"{solver}: grid is {g.shape[0]}x{g.shape[1]}; each side must be 1..{MAX_SIDE}")
    if g.dtype == bool or not np.issubdtype(g.dtype, np.integer):
        if not (np.issubdtype(g.dtype, np.floating) and np.all(g == np.round(g))):
            raise InvalidCandidate(f"{solver}: cells must be integers, got {g.dtype}")
    if g.min() < 0 or g.max() >= N_COLOURS:
        raise InvalidCandidate(f"{solver}: cell values {int(g.min())}..{int(g.max())}, colours are 0..{N_COLOURS - 1}")
    return g.astype(np.int8)


@dataclass(frozen=True, eq=False)
class Candidate:
    """One answer a solver proposes for one test input (validated on construction)."""
    grid: Grid
    solver: str
    score: float = 0.0  # the solver's own confidence (mean log-prob, train fit, icecuber's score); higher is better
    count: int = 1  # votes: samples / augmentations / programs that produced this grid
    detail: str = ""  # free provenance (augmentation names, program ids) for the report
    # How sure the solver is, on a 0..1 scale it can defend: the share of its samples that gave this grid, or the
    # share of train examples the best program behind it reproduces. None: its share of the solver's votes here.
    support: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "grid", checked_grid(self.grid, self.solver))
        if not math.isfinite(float(self.score)) and float(self.score) != float("-inf"):
            raise InvalidCandidate(f"{self.solver}: score {self.score!r} is not a number")
        if int(self.count) < 0:
            raise InvalidCandidate(f"{self.solver}: vote count {self.count} is negative")
        if self.support is not None and not 0.0 <= float(self.support) <= 1.0:
            raise InvalidCandidate(f"{self.solver}: support {self.support!r} is outside 0..1")

    def to_json(self) -> dict:
        score = float(self.score)
        return {"grid": self.grid.tolist(), "solver": self.solver, "score": score if math.isfinite(score) else -1e30,
                "count": int(self.count), "detail": self.detail,
                **({"support": float(self.support)} if self.support is not None else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Candidate":
        return cls(d["grid"], d["solver"], float(d.get("score", 0.0)), int(d.get("count", 1)), d.get("detail", ""),
                   d.get("support"))


def valid_candidates(candidates, on_invalid=None) -> list[Candidate]:
    """Those of `candidates` that are Candidates already, or JSON dicts that make valid ones; on_invalid(message)
    hears about each one dropped."""
    out = []
    for c in candidates:
        try:
            out.append(c if isinstance(c, Candidate) else Candidate.from_json(c))
        except (InvalidCandidate, KeyError, TypeError, ValueError) as e:
            if on_invalid is not None:
                on_invalid(f"{type(e).__name__}: {e}")
    return out
