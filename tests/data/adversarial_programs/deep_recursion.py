# expect: exception
def transform(grid):
    def down(n):
        return down(n + 1) + 1
    return down(0)
