# expect: timeout
# Bounded: 2**6 = 64 processes that all sleep past the timeout; every one must be gone afterwards.
import os
import time


def transform(grid):
    for _ in range(6):
        os.fork()
    time.sleep(60)
    return grid
