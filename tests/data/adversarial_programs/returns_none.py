# expect: invalid_output
def transform(grid):
    grid[0, 0] = 1
