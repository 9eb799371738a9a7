# expect: memory
import numpy as np


def transform(grid):
    big = np.ones(10 * 1024**3, dtype=np.uint8)
    return grid + big[0]
