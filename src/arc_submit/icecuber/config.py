"""How an icecuber run is set up: the anytime depth schedule, parallelism, the RAM ceiling, the deadline.

The options `start_run` takes (and the pipeline's `icecuber.options`) are this dataclass's fields, checked by
`check_options` before any work so that a misspelt option fails in the preflight, naming the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

# Anytime: depth 2 over every task first (4-6 min for 400 tasks on 2 cores; 0.2825 on ARC-AGI-1 evaluation,
# where the public safe_run.py schedule cut off after 15 minutes scored 0.0525). Then safe_run.py's schedule:
# depth 3; depth 3 with flipped training pairs added (23 and 33, two flip kinds); depth 4 with half the processes
# (it needs far more memory) and a larger time budget.
DEFAULT_DEPTHS = (2, 3, 23, 33, 4)


@dataclass(frozen=True)
class DepthStage:
    depth: int  # the program's second argument: search depth (last digit); 10s no colour normalisation, 20s/30s flips
    process_share: float = 1.0  # fraction of `processes` this stage runs at once
    time_factor: float | None = None  # per-run cap: factor x the same input's seconds at the last plain depth before

    @classmethod
    def default_for(cls, depth: int) -> "DepthStage":
        """The budgets safe_run.py gives each kind of stage (its slack folded in)."""
        if depth % 10 >= 4:
            return cls(depth, process_share=0.5, time_factor=40.0)
        if 20 <= depth < 40:
            return cls(depth, time_factor=200.0)
        return cls(depth)


@dataclass
class IcecuberRunConfig:
    icecuber_dir: Path  # a built copy: the folder holding the `run` program (`make -j` in top-quarks/ARC-solution)
    work_root: Path  # each run makes its own fresh folder in here
    depths: tuple = DEFAULT_DEPTHS  # ints (default budgets) or DepthStage; shorten it for quick runs, e.g. (3,)
    processes: int = 4  # programs at once (safe_run.py used 4)
    ram_ceiling_gb: float | None = None  # summed RSS of all programs; None: half of the machine's RAM
    deadline: float | None = None  # time.time() instant at which everything is stopped; None: no deadline
    nice: int = 10  # the GPU side's CPU threads come first
    min_run_s: float = 10.0  # floor of a per-run time cap (first-stage times can be a fraction of a second)
    poll_interval_s: float = 0.1
    resume: bool = False  # reuse work_root/current: finished runs are kept, only the rest run

    def __post_init__(self):
        # Absolute: the program runs with its work folder as cwd, where a relative path means something else.
        self.icecuber_dir, self.work_root = Path(self.icecuber_dir).absolute(), Path(self.work_root).absolute()
        self.depths = tuple(d if isinstance(d, DepthStage) else DepthStage(**d) if isinstance(d, dict)
                            else DepthStage.default_for(int(d)) for d in self.depths)
        self.deadline = getattr(self.deadline, "at", self.deadline)  # accepts budget.Deadline too
        if not self.depths:
            raise ValueError("icecuber depths: give at least one depth, e.g. [3]")
        if any(not 1 <= s.depth % 10 <= 9 or s.process_share <= 0 for s in self.depths):
            raise ValueError(f"icecuber depths {self.depths}: each depth's last digit must be 1..9, shares > 0")
        if self.processes < 1:
            raise ValueError(f"icecuber processes must be at least 1, got {self.processes}")
        if self.ram_ceiling_gb is not None and self.ram_ceiling_gb <= 0:
            raise ValueError(f"icecuber ram_ceiling_gb must be positive, got {self.ram_ceiling_gb}")

    @property
    def ram_ceiling_bytes(self) -> int:
        if self.ram_ceiling_gb is None:
            return psutil.virtual_memory().total // 2
        return int(self.ram_ceiling_gb * 2 ** 30)


def check_options(options: dict) -> None:
    """ValueError naming any option start_run does not know, with the known ones."""
    known = {f for f in IcecuberRunConfig.__dataclass_fields__} - {"icecuber_dir", "work_root", "deadline"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"icecuber option(s) {', '.join(unknown)} do not exist; known: {', '.join(sorted(known))}")
