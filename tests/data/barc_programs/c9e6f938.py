from common import *

import numpy as np
from typing import *

# concepts:
# reflection, symmetry
# description:
# The output is the input with its mirror image placed to its right.
# (Written for arc_submit's tests in the style BARC's induction model writes, for ARC task c9e6f938.)


def transform(input_grid):
    return np.concatenate([input_grid, input_grid[:, ::-1]], axis=1)
