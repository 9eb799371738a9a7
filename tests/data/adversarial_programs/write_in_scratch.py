# expect: ok
def transform(grid):
    with open("notes.txt", "w") as f:
        f.write("scratch is writable")
    return grid
