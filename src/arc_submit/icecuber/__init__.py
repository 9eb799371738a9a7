"""The 2020 icecuber solution (top-quarks/ARC-solution) as supervised CPU subprocesses beside the GPU workers.

    handle = start_run("/kaggle/input/icecuber", tasks, "/kaggle/working/icecuber", deadline)
    ...                      # GPUs work meanwhile; handle.poll() is cheap and never blocks
    handle.wait(deadline)    # returns at the deadline at the latest, with every program stopped
    handle.candidates()      # {(task id, test index): [Candidate(solver="icecuber"), ...]} best first

One run for the whole task set, driven by the pipeline (not a per-task solver on a worker). Answers are handed
to `on_answer` the moment an answer file is read (the pipeline journals them), and every program run's record
goes to runs.jsonl in the work folder; a run started with resume=True in the same work folder keeps the runs
that finished and their answers, and runs only the rest.

Modules, each with one job:
    config.py      IcecuberRunConfig: the anytime depth schedule (DepthStage), parallelism, RAM ceiling
    files.py       the program's file contract: the built copy, the work folder, staging, answer files
    processes.py   one program as a supervised process: niced, its own process group, dies with us, measured
    records.py     values: RunRecord and its statuses, the answer pool per test input, status summaries
    store.py       ResultStore: records and answers behind one lock, runs.jsonl, on_answer, resume
    supervisor.py  IcecuberRun (the non-blocking handle and the supervisor thread) and start_run
"""

from .config import DEFAULT_DEPTHS, DepthStage, IcecuberRunConfig, check_options
from .files import IcecuberUnavailable, find_program
from .records import (ALL_STATUSES, ANSWERED, CRASHED, DEADLINE, MALFORMED, MEMORY_LIMITED, NO_ANSWER, NOT_RUN,
                      NOTHING_FOUND, SKIPPED, SOLVER_NAME, STOPPED, TIMED_OUT, RunRecord, candidates_to_json)
from .supervisor import IcecuberRun, start_run

__all__ = ["start_run", "IcecuberRun", "IcecuberRunConfig", "DepthStage", "DEFAULT_DEPTHS", "RunRecord",
           "check_options", "find_program", "IcecuberUnavailable", "candidates_to_json", "SOLVER_NAME",
           "ALL_STATUSES", "ANSWERED", "NOTHING_FOUND", "NO_ANSWER", "MALFORMED", "CRASHED", "MEMORY_LIMITED",
           "TIMED_OUT", "DEADLINE", "STOPPED", "SKIPPED", "NOT_RUN"]
