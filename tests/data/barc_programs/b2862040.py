from common import *

import numpy as np
from typing import *

# concepts:
# topology, holes, recolouring
# description:
# On a brown background lie blue shapes. A shape that closes around a hole (background cells it cuts off
# from the edge of the grid) turns purple; an open shape stays blue.
# (Written for arc_submit's tests in the style BARC's induction model writes, for ARC task b2862040.)


def transform(input_grid):
    output_grid = input_grid.copy()
    height, width = input_grid.shape
    for shape in find_connected_components(input_grid, background=Color.BROWN, connectivity=8):
        walls = shape != Color.BROWN
        # Everything but this one shape counts as open floor; a floor region that never reaches the edge of the
        # grid is a hole the shape encloses.
        floor = np.where(walls, Color.BLUE, Color.BROWN)
        for region in find_connected_components(floor, background=Color.BLUE, connectivity=4):
            rows, cols = np.nonzero(region == Color.BROWN)
            reaches_edge = rows.min() == 0 or cols.min() == 0 or rows.max() == height - 1 or cols.max() == width - 1
            if not reaches_edge:
                output_grid[walls] = Color.PURPLE
                break
    return output_grid
