# expect: exception|ok
# With Landlock: PermissionError. Without it the write lands: the test then checks the kernel's confinement state.
def transform(grid):
    with open("/tmp/arc_submit_sandbox_escape.txt", "w") as f:
        f.write("escaped")
    return grid
