# expect: ok
import sys


def transform(grid):
    sys.stdout.write("x" * 100_000_000)
    print("y" * 1000, file=sys.stderr)
    return grid
