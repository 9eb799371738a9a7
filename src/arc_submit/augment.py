"""Task augmentations with exact inverses: 8 dihedral transforms × colour permutations × example order.

An LLM sees the task through an augmentation and answers in that frame; `invert_grid` maps the answer back, so
answers from different augmentations can vote together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .tasks import N_COLOURS, Example, Grid, Task

IDENTITY_COLOURS = tuple(range(N_COLOURS))


def dihedral(grid: Grid, k: int) -> Grid:
    """k in 0..3: rotate 90° counter-clockwise k times; 4..7: transpose, then rotate k-4 times."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index {k} is outside 0..7")
    g = grid if k < 4 else grid.T
    return np.ascontiguousarray(np.rot90(g, k % 4))


def dihedral_inverse(k: int) -> int:
    # Rotations invert to the opposite rotation; the four reflections (k >= 4) are their own inverse.
    return (4 - k) % 4 if k < 4 else k


@dataclass(frozen=True)
class Augmentation:
    dihedral: int = 0
    colours: tuple[int, ...] = IDENTITY_COLOURS  # new colour of old colour c is colours[c]
    order: tuple[int, ...] | None = None  # train example i of the result is train example order[i] of the task

    def __post_init__(self):
        if sorted(self.colours) != list(range(N_COLOURS)):
            raise ValueError(f"colours {self.colours} is not a permutation of 0..9")
        if self.order is not None and sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"order {self.order} is not a permutation")

    @property
    def is_identity(self) -> bool:
        return (self.dihedral == 0 and self.colours == IDENTITY_COLOURS
                and (self.order is None or self.order == tuple(range(len(self.order)))))

    @property
    def name(self) -> str:
        """Short and stable, for provenance in reports and journals."""
        parts = [f"d{self.dihedral}"]
        if self.colours != IDENTITY_COLOURS:
            parts.append("c" + "".join(map(str, self.colours)))
        if self.order is not None:
            parts.append("o" + ".".join(map(str, self.order)))
        return "-".join(parts)

    def inverse(self) -> "Augmentation":
        order = None if self.order is None else tuple(int(i) for i in np.argsort(self.order))
        colours = tuple(int(c) for c in np.argsort(self.colours))
        return Augmentation(dihedral_inverse(self.dihedral), colours, order)

    def apply_grid(self, grid: Grid) -> Grid:
        lut = np.asarray(self.colours, dtype=np.int8)
        return dihedral(lut[grid], self.dihedral)

    def invert_grid(self, grid: Grid) -> Grid:
        return self.inverse().apply_grid(grid)

    def apply_examples(self, examples) -> tuple[Example, ...]:
        def one(ex: Example) -> Example:
            return Example(self.apply_grid(ex.input), None if ex.output is None else self.apply_grid(ex.output))

        examples = tuple(examples)
        if self.order is not None:
            if len(self.order) != len(examples):
                raise ValueError(f"order {self.order} is for {len(self.order)} examples, got {len(examples)}")
            examples = tuple(examples[i] for i in self.order)
        return tuple(one(ex) for ex in examples)

    def apply_task(self, task: Task) -> Task:
        """Transform every grid; reorder the train examples. Test inputs keep their order (and their index)."""
        test_aug = replace(self, order=None)
        return Task(task.id, self.apply_examples(task.train), test_aug.apply_examples(task.test))

    def invert_task(self, task: Task) -> Task:
        inv = self.inverse()
        return Task(task.id, inv.apply_examples(task.train), replace(inv, order=None).apply_examples(task.test))


def random_augmentation(rng: np.random.Generator, n_train: int | None = None, *, use_dihedral: bool = True,
                        permute_colours: bool = True, keep_background: bool = True,
                        permute_order: bool = True) -> Augmentation:
    """One random augmentation. keep_background keeps colour 0 (black, the usual background) fixed."""
    k = int(rng.integers(8)) if use_dihedral else 0
    colours = IDENTITY_COLOURS
    if permute_colours:
        if keep_background:
            colours = (0, *(int(c) + 1 for c in rng.permutation(N_COLOURS - 1)))
        else:
            colours = tuple(int(c) for c in rng.permutation(N_COLOURS))
    order = None
    if permute_order and n_train:
        order = tuple(int(i) for i in rng.permutation(n_train))
    return Augmentation(k, colours, order)


def augmentation_set(n: int, rng: np.random.Generator, n_train: int | None = None, **kwargs) -> list[Augmentation]:
    """n distinct augmentations, the identity first (the plain task is always among the views)."""
    out = [Augmentation()]
    seen = {out[0]}
    # Distinct draws run out for tiny spaces (e.g. dihedral only: 8); stop trying after a generous bound.
    for _ in range(50 * n):
        if len(out) >= n:
            break
        aug = random_augmentation(rng, n_train, **kwargs)
        if aug not in seen:
            seen.add(aug)
            out.append(aug)
    return out
