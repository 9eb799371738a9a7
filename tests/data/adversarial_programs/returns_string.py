# expect: invalid_output
def transform(grid):
    return "[[1, 2], [3, 4]]"
