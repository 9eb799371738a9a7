# expect: invalid_output
def transform(grid):
    return grid * 0 + 10
