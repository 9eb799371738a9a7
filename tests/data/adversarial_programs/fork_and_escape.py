# expect: ok
# A child that leaves the process group (setsid) and outlives the program; the sandbox must still reap it.
import os
import time


def transform(grid):
    if os.fork() == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)
    return grid
