# expect: exception
import arc_program_helpers_that_do_not_exist


def transform(grid):
    return grid
