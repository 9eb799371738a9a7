"""The 2020 icecuber solution (top-quarks/ARC-solution) as supervised CPU subprocesses beside the GPU workers."""

from .files import IcecuberUnavailable, find_program
from .supervisor import (ANSWERED, NOTHING_FOUND, DepthStage, IcecuberRun, IcecuberRunConfig, RunRecord,
                         candidates_to_json, check_options, start_run)
