"""The 2020 icecuber solution (top-quarks/ARC-solution) as a supervised CPU subprocess solver.

    handle = start_run("/kaggle/input/icecuber", tasks, "/kaggle/working/icecuber", deadline)
    ...                      # GPUs work meanwhile; handle.poll() is cheap and never blocks
    handle.wait(deadline)    # returns at the deadline at the latest, with every program stopped
    handle.candidates()      # {(task id, test index): [Candidate(solver="icecuber"), ...]} best first

A supervisor thread runs `run <index> <depth>` for every staged test input, one depth stage after another,
with bounded parallelism. The schedule is anytime: a cheap depth-2 pass over every task first (minutes for a
whole test set, most of icecuber's score), then deeper stages with the time left, so a deadline at any moment
leaves every task with the best answer its time allowed. Each program is niced, leads its own process group (a
kill takes everything it started) and dies with the process that started it. psutil watches the resident memory
of each program and of all of them together: above the ceiling the largest is killed and recorded as
memory-limited. Nothing it does raises into the caller once started; failures become statuses, and when every
run dies the same way, `failure` quotes the program's message.

Answers are handed to `on_answer` the moment an answer file is read (the pipeline journals them), and every
run's record goes to runs.jsonl in the work folder; a run started with resume=True in the same work folder keeps
the runs that finished and their answers, and runs only the rest. The file contract (staging, answer files)
lives in files.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from ..candidates import Candidate, grid_key
from ..tasks import Task
from .files import (IcecuberUnavailable, StagedTasks, die_with_parent, find_program, load_staged,
                             parse_answer_file, stage_tasks)

__all__ = ["IcecuberUnavailable", "IcecuberRun", "IcecuberRunConfig", "DepthStage", "RunRecord", "start_run",
           "candidates_to_json", "find_program"]

log = logging.getLogger(__name__)
SOLVER_NAME = "icecuber"
MIB = 2 ** 20

# Anytime: depth 2 over every task first (4-6 min for 400 tasks on 2 cores; 0.2825 on ARC-AGI-1 evaluation,
# where the public safe_run.py schedule cut off after 15 minutes scored 0.0525). Then safe_run.py's schedule:
# depth 3; depth 3 with flipped training pairs added (23 and 33, two flip kinds); depth 4 with half the processes
# (it needs far more memory) and a larger time budget.
DEFAULT_DEPTHS = (2, 3, 23, 33, 4)

# Statuses of one run (one test input at one depth).
ANSWERED, NOTHING_FOUND, NO_ANSWER, MALFORMED = "answered", "nothing-found", "no-answer-file", "malformed"
CRASHED, MEMORY_LIMITED, TIMED_OUT = "crashed", "memory-limited", "timed-out"
DEADLINE, STOPPED, SKIPPED, NOT_RUN = "deadline", "stopped", "skipped", "not-run"
ALL_STATUSES = (ANSWERED, NOTHING_FOUND, NO_ANSWER, MALFORMED, CRASHED, MEMORY_LIMITED, TIMED_OUT, DEADLINE, STOPPED,
                SKIPPED, NOT_RUN)
UNFINISHED = (DEADLINE, STOPPED, NOT_RUN)  # a resumed run runs these again; every other status is final
SAME_FAILURE_RUNS = 4  # this many runs crashing with one message, and nothing else finished: the build is broken
CURRENT_WORK_DIR = "current"  # the work folder a resumable run uses under work_root


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


@dataclass
class RunRecord:
    """One program run: a test input at one depth. Appended to runs.jsonl in the work folder when it ends."""
    index: int
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


def _tree_rss(proc: psutil.Process) -> int:
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class _Running:
    """A live program: its Popen, psutil handle, log files and record."""

    def __init__(self, record: RunRecord, popen: subprocess.Popen, logs: list, cap_s: float | None):
        self.record, self.popen, self.logs, self.cap_s = record, popen, logs, cap_s
        self.started = time.time()
        self.proc = psutil.Process(popen.pid)
        self.rss = 0

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # the whole group: nothing it started survives
        except (ProcessLookupError, PermissionError):
            pass


class IcecuberRun:
    """A non-blocking handle on one icecuber run: start(), poll(), wait(deadline), stop(), then candidates()."""

    def __init__(self, config: IcecuberRunConfig, tasks: dict[str, Task], on_answer=None):
        """on_answer(task_id, test_index, ranked candidates so far) runs on the supervisor thread as each answer
        file is read; an exception there is logged and ignored."""
        self.config = config
        self.on_answer = on_answer
        program = find_program(config.icecuber_dir)
        config.work_root.mkdir(parents=True, exist_ok=True)
        self._records: list[RunRecord] = []
        # (task id, test index) -> grid key -> [grid, best score, depths, first seen]: the program's order is kept
        # for equal scores (first seen: shallower stage first, then the order within the answer file).
        self._answers: dict[tuple[str, int], dict[tuple, list]] = defaultdict(dict)
        self._seen = 0
        self._lock = threading.Lock()
        self.staged, resumed = self._prepare_work_dir(tasks)
        # A private executable copy: Kaggle inputs are read-only and lose the executable bit.
        self.program = self.work_dir / "bin" / "run"
        self.program.parent.mkdir(exist_ok=True)
        shutil.copyfile(program, self.program)
        self.program.chmod(0o755)
        (self.work_dir / "logs").mkdir(exist_ok=True)
        self.layout: str | None = None  # which folder the build read, once a run's output tells
        self.failure: str | None = None  # set when every run died the same way: the program's own message
        self._stop = threading.Event()
        self._stop_reason = STOPPED
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._n_running = 0
        self._completed = False  # every stage ran to its end (no stop, no deadline)
        log.info("icecuber: %d tasks, %d test inputs staged in %s (for both dataset/test/ and dataset/evaluation/); "
                 "depths %s, %d processes, RAM ceiling %.1f GiB%s", len(tasks), len(self.staged.samples), self.work_dir,
                 [s.depth for s in config.depths], config.processes, config.ram_ceiling_bytes / 2 ** 30,
                 f"; resumed with {resumed} finished run(s) kept" if resumed else "")

    def _prepare_work_dir(self, tasks: dict[str, Task]) -> tuple[StagedTasks, int]:
        """A fresh folder, or (resume) the current one when it staged exactly these tasks: its finished runs and
        their answers are kept. Returns the staging and how many finished runs were kept."""
        cfg = self.config
        if not cfg.resume:
            self.work_dir = Path(tempfile.mkdtemp(prefix=time.strftime("icecuber-%Y%m%d-%H%M%S-"), dir=cfg.work_root))
            return stage_tasks(tasks, self.work_dir), 0
        self.work_dir = cfg.work_root / CURRENT_WORK_DIR
        staged = load_staged(self.work_dir, tasks)
        if staged is None:
            if self.work_dir.exists():
                log.warning("icecuber: %s staged other tasks; starting it afresh", self.work_dir)
                shutil.rmtree(self.work_dir)
            self.work_dir.mkdir(parents=True)
            return stage_tasks(tasks, self.work_dir), 0
        self.staged = staged
        kept = {}
        for line in (self.work_dir / "runs.jsonl").read_text().splitlines() if (self.work_dir / "runs.jsonl").exists() else []:
            try:
                record = RunRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a torn last line from a killed run
            kept[(record.index, record.depth)] = record  # the last word on each run wins
        kept = {k: r for k, r in kept.items() if r.status not in UNFINISHED}
        with open(self.work_dir / "runs.jsonl", "w") as f:  # rewritten: only the finished runs, once each
            for record in kept.values():
                f.write(json.dumps(asdict(record)) + "\n")
        self._records = list(kept.values())
        for record in self._records:
            if record.status == ANSWERED:  # answers back in memory (and to on_answer: journaling is idempotent)
                self._read_answers(RunRecord(record.index, record.depth, record.task_id, record.test_index))
        return staged, len(kept)

    # ---- the public handle -------------------------------------------------------------------------------
    def start(self) -> "IcecuberRun":
        if self._thread is None:
            self._started_at = time.time()
            self._thread = threading.Thread(target=self._supervise, name="icecuber-supervisor", daemon=True)
            self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def poll(self) -> dict:
        """A snapshot: {'done': bool, 'runs': planned, 'running': n, each status: count}. Never blocks or raises."""
        with self._lock:
            counts = Counter(r.status for r in self._records)
            running = self._n_running
        total = len(self.staged.samples) * len(self.config.depths)
        return {"done": self.done, "runs": total, "running": running, **{s: counts[s] for s in ALL_STATUSES}}

    def wait(self, deadline=None) -> bool:
        """Until every stage is done or the deadline (time.time() instant or budget.Deadline); True if done."""
        at = getattr(deadline, "at", deadline)
        if self._thread is None:
            self.start()
        while not self.done:
            if at is not None and time.time() >= at:
                self.stop(DEADLINE)
                break
            self._thread.join(timeout=0.2 if at is None else max(0.0, min(0.2, at - time.time())))
        return self._completed

    def join(self, seconds: float) -> bool:
        """Wait up to `seconds` without stopping anything; True when every stage is done."""
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, seconds))
        return self.done

    def stop(self, reason: str = STOPPED) -> None:
        """Kill every running program (their group), mark the rest not run, keep every answer found so far."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def records(self) -> list[RunRecord]:
        with self._lock:
            return list(self._records)

    def candidates(self) -> dict[tuple[str, int], list[Candidate]]:
        """Ranked candidates per (task id, test index): icecuber's score, best first; one per distinct grid."""
        out = {}
        with self._lock:
            for key, by_grid in self._answers.items():
                out[key] = self._ranked(by_grid)
        return out

    @staticmethod
    def _ranked(by_grid: dict) -> list[Candidate]:
        """Best score first; equal scores in the program's own order (the order the answers were first read)."""
        ranked = sorted(by_grid.values(), key=lambda entry: (-entry[1], entry[3]))
        return [Candidate(grid, SOLVER_NAME, score=score, count=1,
                          detail=f"depths {','.join(map(str, sorted(depths)))}; rank {rank}")
                for rank, (grid, score, depths, _) in enumerate(ranked, start=1)]

    def statuses(self) -> dict[str, str]:
        """{task id: 'test 0: 3 answered, 23 crashed; test 1: ...'} for every staged task."""
        per_test: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        for task_id, test_index in self.staged.samples:
            per_test[task_id][test_index]  # every test input appears, even with no run yet
        for r in self.records():
            per_test[r.task_id][r.test_index].append(f"{r.depth} {r.status}")
        return {tid: "; ".join(f"test {i}: {', '.join(runs) or 'not started'}" for i, runs in sorted(tests.items()))
                for tid, tests in sorted(per_test.items())}

    def summary_table(self) -> str:
        """Runs per depth and status, as a fixed-width table."""
        counts = Counter((r.depth, r.status) for r in self.records())
        statuses = sorted({s for _, s in counts})
        lines = ["depth " + " ".join(f"{s:>14}" for s in statuses)]
        for stage in self.config.depths:
            lines.append(f"{stage.depth:>5} " + " ".join(f"{counts[(stage.depth, s)]:>14}" for s in statuses))
        answered = sum(1 for by_grid in self.candidates().values() if by_grid)
        lines.append(f"test inputs with a candidate: {answered} / {len(self.staged.samples)}")
        return "\n".join(lines)

    # ---- the supervisor thread ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        from tqdm.auto import tqdm

        running: list[_Running] = []
        bar = tqdm(total=len(self.staged.samples) * len(self.config.depths), desc="icecuber", unit="run",
                   disable=None, leave=False)
        try:
            for stage_no, stage in enumerate(self.config.depths):
                stage_start = time.time()
                self._run_stage(stage_no, stage, running, bar)
                if self._stop.is_set() or self.failure is not None:
                    break
                log.info("icecuber: depth %d done in %.1f s", stage.depth, time.time() - stage_start)
            else:
                self._completed = True
        except Exception:  # a bug here must not take the run down: stop the programs, keep what was answered
            log.exception("icecuber supervisor failed; keeping the answers found so far")
        finally:
            for run in running:
                run.kill()
                self._finish(run, self._stop_reason if self._stop.is_set() else STOPPED)
            self._mark_not_run()
            bar.close()
            for tid, status in self.statuses().items():
                log.info("icecuber task %s: %s", tid, status)
            log.info("icecuber finished after %.1f s:\n%s", time.time() - self._started_at, self.summary_table())

    def _reference_seconds(self, stage_no: int) -> dict[int, float]:
        """Per input, the seconds of its run at the last plain depth (under 10) before this stage: what a deeper
        stage's time cap and order are measured against (depth 3 for 23, 33 and 4, as in safe_run.py)."""
        earlier = [s.depth for s in self.config.depths[:stage_no] if s.depth < 10]
        if not earlier:
            return {}
        return {r.index: r.seconds for r in self.records() if r.depth == earlier[-1]}

    def _stage_queue(self, stage_no: int, stage: DepthStage) -> list[int]:
        """Indices to run at this stage: cheapest first (by reference time), minus those that ran out of RAM and
        those a resumed run already finished."""
        records = self.records()
        reference = self._reference_seconds(stage_no)
        finished = {r.index for r in records if r.depth == stage.depth}
        too_big = {r.index for r in records if r.status == MEMORY_LIMITED and r.depth % 10 <= stage.depth % 10}
        queue = []
        for index, (task_id, test_index) in enumerate(self.staged.samples):
            if index in finished:
                continue
            if index in too_big:
                self._add_record(RunRecord(index, stage.depth, task_id, test_index, SKIPPED,
                                           problems=["memory-limited at a shallower depth"]))
            else:
                queue.append(index)
        if reference:
            queue.sort(key=lambda i: (reference.get(i, float("inf")), i))
        return queue

    def _run_stage(self, stage_no: int, stage: DepthStage, running: list[_Running], bar) -> None:
        cfg = self.config
        queue = self._stage_queue(stage_no, stage)
        parallel = max(1, round(cfg.processes * stage.process_share))
        first = self._reference_seconds(stage_no)
        while queue or running:
            if cfg.deadline is not None and time.time() >= cfg.deadline and not self._stop.is_set():
                self._stop_reason = DEADLINE
                self._stop.set()
            if self._stop.is_set() or self._broken():
                return  # the caller (_supervise) kills what runs and marks the rest not run
            while queue and len(running) < parallel:
                index = queue.pop(0)
                cap = None
                if stage.time_factor is not None and index in first:
                    cap = max(cfg.min_run_s, stage.time_factor * first[index])
                try:
                    running.append(self._launch(index, stage.depth, cap))
                except OSError as e:  # e.g. a program built for another machine: a status, not a crash of ours
                    task_id, test_index = self.staged.samples[index]
                    self._add_record(RunRecord(index, stage.depth, task_id, test_index, CRASHED,
                                               problems=[f"could not start {self.program}: {e}"]))
                    bar.update(1)
            for run in list(running):
                if run.popen.poll() is not None:
                    running.remove(run)
                    self._finish(run, None)
                    bar.update(1)
                elif run.cap_s is not None and time.time() - run.started > run.cap_s:
                    run.kill()
                    running.remove(run)
                    self._finish(run, TIMED_OUT)
                    bar.update(1)
            self._enforce_ram_ceiling(running, bar)
            self._n_running = len(running)
            self._stop.wait(cfg.poll_interval_s)

    def _enforce_ram_ceiling(self, running: list[_Running], bar) -> None:
        for run in running:
            run.rss = _tree_rss(run.proc)
            run.record.peak_rss_mb = max(run.record.peak_rss_mb, run.rss / MIB)
        ceiling = self.config.ram_ceiling_bytes
        while running and sum(r.rss for r in running) > ceiling:
            largest = max(running, key=lambda r: r.rss)
            log.warning("icecuber: programs use %.0f MiB > ceiling %.0f MiB; killing the largest (%s test %d, "
                        "depth %d, %.0f MiB): memory-limited", sum(r.rss for r in running) / MIB, ceiling / MIB,
                        largest.record.task_id, largest.record.test_index, largest.record.depth, largest.rss / MIB)
            largest.kill()
            running.remove(largest)
            self._finish(largest, MEMORY_LIMITED)
            bar.update(1)

    def _launch(self, index: int, depth: int, cap_s: float | None) -> _Running:
        task_id, test_index = self.staged.samples[index]
        record = RunRecord(index, depth, task_id, test_index)
        logs = [open(self.work_dir / "logs" / f"{index}_{depth}.{kind}", "wb") for kind in ("out", "err")]
        try:
            popen = subprocess.Popen([str(self.program), str(index), str(depth)], cwd=self.work_dir,
                                     stdin=subprocess.DEVNULL, stdout=logs[0], stderr=logs[1], start_new_session=True,
                                     preexec_fn=die_with_parent)
        except OSError:
            for f in logs:
                f.close()
            raise
        try:
            psutil.Process(popen.pid).nice(self.config.nice)
        except psutil.Error:
            pass  # it already ended; nothing to lower
        record.pid = popen.pid
        return _Running(record, popen, logs, cap_s)

    def _finish(self, run: _Running, killed_as: str | None) -> None:
        """Reap, clear its process group, read its answer file (only a program that exited by itself wrote one)."""
        run.kill()  # also takes any straggler it left in its group after exiting
        run.popen.wait()
        for f in run.logs:
            f.close()
        record = run.record
        record.exit_code = run.popen.returncode
        record.seconds = round(time.time() - run.started, 3)
        if killed_as is not None:
            record.status = killed_as
        else:
            record.status = self._read_answers(record)
            self._note_layout(record)
        if record.status == CRASHED:  # the program's last words say why (an assertion, a missing folder)
            err = (self.work_dir / "logs" / f"{record.index}_{record.depth}.err").read_text(errors="replace")
            last = [line.strip() for line in err.splitlines() if line.strip()][-1:]
            record.problems.extend(f"stderr: {line[:300]}" for line in last)
            if not last:
                record.problems.append(f"exit code {record.exit_code}, nothing on stderr")
        level = logging.WARNING if record.status in (CRASHED, MEMORY_LIMITED, MALFORMED) else logging.DEBUG
        log.log(level, "icecuber %s test %d depth %d: %s (exit %s, %.1f s, %.0f MiB)%s", record.task_id,
                record.test_index, record.depth, record.status, record.exit_code, record.seconds, record.peak_rss_mb,
                "".join(f"\n  {p}" for p in record.problems[:5]))
        self._add_record(record)

    def _read_answers(self, record: RunRecord) -> str:
        path = self.staged.answer_path(record.index, record.depth)
        if not path.exists():
            return CRASHED if record.exit_code else NO_ANSWER
        parsed = parse_answer_file(path, self.staged)
        record.problems.extend(parsed.problems)
        if parsed.task_id is not None and (parsed.task_id, parsed.test_index) != (record.task_id, record.test_index):
            record.problems.append(f"{path}: answers {parsed.task_id} test {parsed.test_index}, staged index "
                                   f"{record.index} was {record.task_id} test {record.test_index}; trusting the file")
        with self._lock:
            by_grid = self._answers[(parsed.task_id, parsed.test_index)] if parsed.answers else {}
            for grid, score in parsed.answers:
                self._seen += 1
                entry = by_grid.setdefault(grid_key(grid), [grid, score, set(), self._seen])
                entry[1] = max(entry[1], score)
                entry[2].add(record.depth)
            ranked = self._ranked(by_grid) if parsed.answers else []
        record.n_answers = len(parsed.answers)
        if ranked and self.on_answer is not None:
            try:
                self.on_answer(parsed.task_id, parsed.test_index, ranked)
            except Exception:  # journaling is the caller's business; never let it stop the programs
                log.exception("icecuber: on_answer failed for %s test %d", parsed.task_id, parsed.test_index)
        if parsed.answers:
            return ANSWERED
        if parsed.nothing_found:
            return NOTHING_FOUND
        return MALFORMED if parsed.problems else (CRASHED if record.exit_code else NO_ANSWER)

    def _note_layout(self, record: RunRecord) -> None:
        """Say once which folder the build read. The current public commit (eval = 0) reads dataset/evaluation/
        and prints a verdict line per task; the 2020 Kaggle build (eval = 1) reads dataset/test/ silently."""
        if self.layout is not None or record.status not in (ANSWERED, NOTHING_FOUND):
            return
        out = (self.work_dir / "logs" / f"{record.index}_{record.depth}.out").read_text(errors="replace")
        self.layout = "dataset/evaluation/" if "Task #" in out else "dataset/test/"
        log.info("icecuber: the build read its tasks from %s (both were staged)", self.layout)

    def _broken(self) -> bool:
        """Every finished run crashed with the same message: the build cannot work here; say so and stop."""
        if self.failure is not None:
            return True
        records = [r for r in self.records() if r.status not in UNFINISHED + (SKIPPED,)]
        if len(records) < min(SAME_FAILURE_RUNS, len(self.staged.samples) * len(self.config.depths)):
            return False
        messages = {tuple(r.problems) if r.status == CRASHED else None for r in records}
        if len(messages) != 1 or None in messages:
            return False
        self.failure = (f"every icecuber run crashed the same way ({len(records)} runs): "
                        f"{'; '.join(messages.pop()) or 'no message'} (program {self.program}, logs in "
                        f"{self.work_dir / 'logs'})")
        log.error("icecuber: %s; stopping it, the run goes on without icecuber", self.failure)
        return True

    def _add_record(self, record: RunRecord) -> None:
        with self._lock:
            self._records.append(record)
            with open(self.work_dir / "runs.jsonl", "a") as f:  # journaled as it happens
                f.write(json.dumps(asdict(record)) + "\n")

    def _mark_not_run(self) -> None:
        done = {(r.index, r.depth) for r in self.records()}
        for stage in self.config.depths:
            for index, (task_id, test_index) in enumerate(self.staged.samples):
                if (index, stage.depth) not in done:
                    self._add_record(RunRecord(index, stage.depth, task_id, test_index, NOT_RUN))


def check_options(options: dict) -> None:
    """ValueError naming any option start_run does not know, with the known ones."""
    known = {f for f in IcecuberRunConfig.__dataclass_fields__} - {"icecuber_dir", "work_root", "deadline"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"icecuber option(s) {', '.join(unknown)} do not exist; known: {', '.join(sorted(known))}")


def start_run(icecuber_dir, tasks: dict[str, Task], work_root, deadline=None, on_answer=None,
              **options) -> IcecuberRun:
    """Stage the tasks in a fresh folder under work_root (or resume work_root/current) and start the programs.

    Raises IcecuberUnavailable (no usable built copy, or no writable work folder: the caller goes on without
    icecuber) or ValueError (an option that does not exist or makes no sense: a configuration mistake).
    """
    check_options(options)
    config = IcecuberRunConfig(Path(icecuber_dir), Path(work_root), deadline=deadline, **options)
    try:
        return IcecuberRun(config, tasks, on_answer).start()
    except OSError as e:
        raise IcecuberUnavailable(f"{work_root}: cannot prepare an icecuber work folder there ({e}); "
                                  f"give a writable folder (on Kaggle, under /kaggle/working or /tmp)") from e


def candidates_to_json(tasks: dict[str, Task], per_test: dict[tuple[str, int], list[Candidate]]) -> dict:
    """{task id: [[candidate, ...] for each test input]}: every task and test input, empty lists where none."""
    return {tid: [[c.to_json() for c in per_test.get((tid, i), [])] for i in range(len(task.test))]
            for tid, task in tasks.items()}
