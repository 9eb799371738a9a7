# expect: timeout|memory|crashed
# With the recursion limit lifted, Python 3.11+ keeps recursing on the heap (timeout or memory cap first);
# older versions overflow the C stack (SIGSEGV: crashed). Whichever comes first, it must come back classified.
import sys


def transform(grid):
    sys.setrecursionlimit(10**8)

    def down(n):
        return down(n + 1) + 1
    return down(0)
