# expect: exception|crashed
# With Landlock the signal is refused (exception); without it the worker dies and is replaced (crashed).
import os
import signal


def transform(grid):
    os.kill(os.getppid(), signal.SIGKILL)
    return grid
