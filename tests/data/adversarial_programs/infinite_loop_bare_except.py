# expect: timeout
# The program that hung earlier pipelines: a bare except swallows whatever an in-process timeout raises.
def transform(grid):
    while True:
        try:
            while True:
                pass
        except:
            pass
