"""A small stand-in for BARC's common.py (written here): the helpers generated programs import with
`from common import *`. Same style of names as BARC's library, not its code."""

import numpy as np


class Color:
    BLACK, BLUE, RED, GREEN, YELLOW, GREY, PINK, ORANGE, TEAL, MAROON = range(10)
    ALL_COLORS = list(range(10))


def flip_horizontal(grid):
    return np.asarray(grid)[:, ::-1]


def most_common_color(grid):
    return int(np.bincount(np.asarray(grid).ravel(), minlength=10).argmax())


def crop(grid, background=Color.BLACK):
    """The smallest box holding every cell that is not background (the whole grid when all are background)."""
    grid = np.asarray(grid)
    rows, cols = np.nonzero(grid != background)
    if rows.size == 0:
        return grid
    return grid[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
