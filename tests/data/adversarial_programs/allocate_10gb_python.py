# expect: memory
def transform(grid):
    data = [0] * (10 * 1024**3 // 8)  # 10 GB of list slots
    return grid
