"""STAND-IN for BARC's `seeds/common.py` (xu3kev/BARC), written for arc_submit's tests: a test double, not BARC's
code. BARC's repository has no licence, so its library is never shipped here; users attach their own copy.

What it keeps of the real library is what the tests depend on:
  - `Color` names the ten colours the way BARC's does, with TEAL (8) and MAROON (9) and no PURPLE or BROWN,
    the names BARC's published induction model writes (its training data renamed the colours). The sandbox's
    colour aliases must bridge that gap.
  - `find_connected_components` has the name, arguments and return value of BARC's helper (a list of grids, each
    one component on the background) and uses scipy.ndimage.label imported inside the function, as BARC's does,
    so the import happens in the sandbox's runner rather than when the library loads.
"""

import numpy as np


class Color:
    # Plain ints on a plain class, like BARC's; GREY only (the name BARC's docstring lists).
    BLACK = 0
    BLUE = 1
    RED = 2
    GREEN = 3
    YELLOW = 4
    GREY = 5
    PINK = 6
    ORANGE = 7
    TEAL = 8
    MAROON = 9
    ALL_COLORS = list(range(10))
    NOT_BLACK = list(range(1, 10))


def find_connected_components(grid, background=Color.BLACK, connectivity=4, monochromatic=True):
    """The connected components of the cells that are not `background`, each as a grid the size of `grid` holding
    that component's cells and `background` everywhere else. connectivity 4 (edges) or 8 (edges and corners);
    monochromatic: a component holds one colour (else any non-background colours that touch)."""
    from scipy.ndimage import label

    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    grid = np.asarray(grid)
    neighbourhood = np.ones((3, 3), dtype=int) if connectivity == 8 else None  # None: scipy's edge-only cross
    if monochromatic:
        masks = [grid == colour for colour in np.unique(grid) if colour != background]
    else:
        masks = [grid != background]
    components = []
    for mask in masks:
        labels, count = label(mask, structure=neighbourhood)
        for number in range(1, count + 1):
            components.append(np.where(labels == number, grid, background))
    return components
