"""What an icecuber run learns, as plain values: each program run's record and status, the answers pooled per
test input, and the summaries both are shown as. No locks and no files here: store.py keeps these values,
supervisor.py makes them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..candidates import Candidate, grid_key
from ..tasks import Grid, Task

SOLVER_NAME = "icecuber"

# Statuses of one run (one test input at one depth).
ANSWERED, NOTHING_FOUND, NO_ANSWER, MALFORMED = "answered", "nothing-found", "no-answer-file", "malformed"
CRASHED, MEMORY_LIMITED, TIMED_OUT = "crashed", "memory-limited", "timed-out"
DEADLINE, STOPPED, SKIPPED, NOT_RUN = "deadline", "stopped", "skipped", "not-run"
ALL_STATUSES = (ANSWERED, NOTHING_FOUND, NO_ANSWER, MALFORMED, CRASHED, MEMORY_LIMITED, TIMED_OUT, DEADLINE, STOPPED,
                SKIPPED, NOT_RUN)
UNFINISHED = (DEADLINE, STOPPED, NOT_RUN)  # a resumed run runs these again; every other status is final


@dataclass
class RunRecord:
    """One program run: a test input at one depth. Appended to runs.jsonl in the work folder when it ends."""
    index: int  # the program's sample index (staging order), its first argument
    depth: int
    task_id: str
    test_index: int
    status: str = NOT_RUN
    pid: int | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    n_answers: int = 0
    problems: list = field(default_factory=list)


@dataclass
class PooledAnswer:
    """One distinct grid answered for a test input, merged over every depth that answered it."""
    grid: Grid
    score: float  # the best score any depth gave it
    depths: set[int] = field(default_factory=set)


@dataclass
class AnswerPool:
    """Every distinct grid answered for one test input, in the order first read: shallower stages first, then
    the order within the answer file. That order is the program's own ranking, so ties in score keep it."""
    answers: dict[tuple, PooledAnswer] = field(default_factory=dict)  # grid_key -> answer, in insertion order

    def add(self, grid: Grid, score: float, depth: int) -> None:
        answer = self.answers.setdefault(grid_key(grid), PooledAnswer(grid, score))
        answer.score = max(answer.score, score)
        answer.depths.add(depth)

    def ranked(self) -> list[Candidate]:
        """Best score first; sorted() is stable, so equal scores stay in the order they were first read."""
        best_first = sorted(self.answers.values(), key=lambda answer: -answer.score)
        return [Candidate(answer.grid, SOLVER_NAME, score=answer.score, count=1,
                          detail=f"depths {','.join(map(str, sorted(answer.depths)))}; rank {rank}")
                for rank, answer in enumerate(best_first, start=1)]


def statuses_by_task(samples: tuple[tuple[str, int], ...], records: list[RunRecord]) -> dict[str, str]:
    """{task id: 'test 0: 3 answered, 23 crashed; test 1: ...'} for every staged task."""
    per_test: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for task_id, test_index in samples:
        per_test[task_id][test_index]  # every test input appears, even with no run yet
    for r in records:
        per_test[r.task_id][r.test_index].append(f"{r.depth} {r.status}")
    return {tid: "; ".join(f"test {i}: {', '.join(runs) or 'not started'}" for i, runs in sorted(tests.items()))
            for tid, tests in sorted(per_test.items())}


def summary_table(depths: list[int], records: list[RunRecord], answered: int, n_samples: int) -> str:
    """Runs per depth and status, as a fixed-width table; then how many test inputs got a candidate."""
    counts = Counter((r.depth, r.status) for r in records)
    statuses = sorted({s for _, s in counts})
    lines = ["depth " + " ".join(f"{s:>14}" for s in statuses)]
    for depth in depths:
        lines.append(f"{depth:>5} " + " ".join(f"{counts[(depth, s)]:>14}" for s in statuses))
    lines.append(f"test inputs with a candidate: {answered} / {n_samples}")
    return "\n".join(lines)


def candidates_to_json(tasks: dict[str, Task], per_test: dict[tuple[str, int], list[Candidate]]) -> dict:
    """{task id: [[candidate, ...] for each test input]}: every task and test input, empty lists where none."""
    return {tid: [[c.to_json() for c in per_test.get((tid, i), [])] for i in range(len(task.test))]
            for tid, task in tasks.items()}
