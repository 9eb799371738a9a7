"""The icecuber run: a non-blocking handle on the programs, and the supervisor thread that runs them.

A supervisor thread runs `run <index> <depth>` for every staged test input, one depth stage after another,
with bounded parallelism. The schedule is anytime: a cheap depth-2 pass over every task first (minutes for a
whole test set, most of icecuber's score), then deeper stages with the time left, so a deadline at any moment
leaves every task with the best answer its time allowed. Each program is niced, leads its own process group and
dies with the process that started it (processes.py). psutil watches the resident memory of each program and of
all of them together: above the ceiling the largest is killed and recorded as memory-limited. Nothing it does
raises into the caller once started; failures become statuses, and when every run dies the same way, `failure`
quotes the program's message.

What the run learns (records, answers) lives in a ResultStore (store.py): this module only decides what runs
when and how each run ended.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ..candidates import Candidate
from ..tasks import Task
from .config import DepthStage, IcecuberRunConfig, check_options
from .files import IcecuberUnavailable, find_program, install_program, prepare_work_dir
from .processes import MIB, RunningProgram
from .records import (ALL_STATUSES, ANSWERED, CRASHED, DEADLINE, MALFORMED, MEMORY_LIMITED, NOT_RUN, NOTHING_FOUND,
                      SKIPPED, STOPPED, TIMED_OUT, UNFINISHED, RunRecord, statuses_by_task, summary_table)
from .store import ResultStore

log = logging.getLogger(__name__)
SAME_FAILURE_RUNS = 4  # this many runs crashing with one message, and nothing else finished: the build is broken


class _StopRequest:
    """Set once, by the caller (stop, wait at its deadline) or the supervisor (the run's deadline); the reason
    given first is what the programs still running are recorded as."""

    def __init__(self):
        self._event = threading.Event()
        self.reason = STOPPED

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> None:
        """Sleep between polls, waking at once when a stop is requested."""
        self._event.wait(seconds)


class IcecuberRun:
    """A non-blocking handle on one icecuber run: start(), poll(), wait(deadline), stop(), then candidates()."""

    def __init__(self, config: IcecuberRunConfig, tasks: dict[str, Task], on_answer=None):
        """on_answer(task_id, test_index, ranked candidates so far) runs on the supervisor thread as each answer
        file is read; an exception there is logged and ignored."""
        self.config = config
        program = find_program(config.icecuber_dir)
        config.work_root.mkdir(parents=True, exist_ok=True)
        self.staged, earlier = prepare_work_dir(tasks, config.work_root, config.resume)
        self.results = ResultStore(self.staged, on_answer)
        kept = self.results.keep_finished_runs() if earlier else 0
        install_program(program, self.staged)
        self.layout: str | None = None  # which folder the build read, once a run's output tells
        self.failure: str | None = None  # set when every run died the same way: the program's own message
        self._stop = _StopRequest()
        self._thread: threading.Thread | None = None
        self._n_running = 0  # written by the supervisor thread, read by poll()
        self._completed = False  # every stage ran to its end (no stop, no deadline)
        log.info("icecuber: %d tasks, %d test inputs staged in %s (for both dataset/test/ and dataset/evaluation/); "
                 "depths %s, %d processes, RAM ceiling %.1f GiB%s", len(tasks), len(self.staged.samples), self.work_dir,
                 [s.depth for s in config.depths], config.processes, config.ram_ceiling_bytes / 2 ** 30,
                 f"; resumed with {kept} finished run(s) kept" if kept else "")

    # ---- the public handle -------------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        return self.staged.work_dir

    def start(self) -> "IcecuberRun":
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name="icecuber-supervisor", daemon=True)
            self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def poll(self) -> dict:
        """A snapshot: {'done': bool, 'runs': planned, 'running': n, each status: count}. Never blocks or raises."""
        counts = self.results.status_counts()
        total = len(self.staged.samples) * len(self.config.depths)
        return {"done": self.done, "runs": total, "running": self._n_running, **{s: counts[s] for s in ALL_STATUSES}}

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
        self._stop.request(reason)
        if self._thread is not None:
            self._thread.join()

    def records(self) -> list[RunRecord]:
        return self.results.records()

    def candidates(self) -> dict[tuple[str, int], list[Candidate]]:
        """Ranked candidates per (task id, test index): icecuber's score, best first; one per distinct grid."""
        return self.results.candidates()

    def statuses(self) -> dict[str, str]:
        """{task id: 'test 0: 3 answered, 23 crashed; test 1: ...'} for every staged task."""
        return statuses_by_task(self.staged.samples, self.records())

    def summary_table(self) -> str:
        """Runs per depth and status, as a fixed-width table."""
        return summary_table([s.depth for s in self.config.depths], self.records(), len(self.candidates()),
                             len(self.staged.samples))

    # ---- the supervisor thread ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        from tqdm.auto import tqdm

        started = time.time()
        running: list[RunningProgram] = []
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
                self._finish(run, self._stop.reason)
            self._mark_not_run()
            bar.close()
            for tid, status in self.statuses().items():
                log.info("icecuber task %s: %s", tid, status)
            log.info("icecuber finished after %.1f s:\n%s", time.time() - started, self.summary_table())

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
                self.results.add(RunRecord(index, stage.depth, task_id, test_index, SKIPPED,
                                           problems=["memory-limited at a shallower depth"]))
            else:
                queue.append(index)
        if reference:
            queue.sort(key=lambda i: (reference.get(i, float("inf")), i))
        return queue

    def _run_stage(self, stage_no: int, stage: DepthStage, running: list[RunningProgram], bar) -> None:
        cfg = self.config
        queue = self._stage_queue(stage_no, stage)
        parallel = max(1, round(cfg.processes * stage.process_share))
        first = self._reference_seconds(stage_no)
        while queue or running:
            if cfg.deadline is not None and time.time() >= cfg.deadline:
                self._stop.request(DEADLINE)
            if self._stop.is_set() or self._broken():
                return  # the caller (_supervise) kills what runs and marks the rest not run
            while queue and len(running) < parallel:
                index = queue.pop(0)
                cap = None
                if stage.time_factor is not None and index in first:
                    cap = max(cfg.min_run_s, stage.time_factor * first[index])
                record = RunRecord(index, stage.depth, *self.staged.samples[index])
                try:
                    running.append(RunningProgram.launch(self.staged, record, cfg.nice, cap))
                except OSError as e:  # e.g. a program built for another machine: a status, not a crash of ours
                    record.status = CRASHED
                    record.problems.append(f"could not start {self.staged.program}: {e}")
                    self.results.add(record)
                    bar.update(1)
            for run in list(running):
                if run.exited:
                    running.remove(run)
                    self._finish(run, None)
                    bar.update(1)
                elif run.past_cap:
                    run.kill()
                    running.remove(run)
                    self._finish(run, TIMED_OUT)
                    bar.update(1)
            self._enforce_ram_ceiling(running, bar)
            self._n_running = len(running)
            self._stop.wait(cfg.poll_interval_s)

    def _enforce_ram_ceiling(self, running: list[RunningProgram], bar) -> None:
        for run in running:
            run.measure()
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

    def _finish(self, run: RunningProgram, killed_as: str | None) -> None:
        """Reap it and record how it ended: killed_as, or what its answer file says (only a program that exited
        by itself wrote one)."""
        run.reap()
        record = run.record
        if killed_as is not None:
            record.status = killed_as
        else:
            record.status = self.results.read_answers(record)
            self._note_layout(record)
        if record.status == CRASHED:  # the program's last words say why (an assertion, a missing folder)
            err = self.staged.log_path(record.index, record.depth, "err").read_text(errors="replace")
            last = [line.strip() for line in err.splitlines() if line.strip()][-1:]
            record.problems.extend(f"stderr: {line[:300]}" for line in last)
            if not last:
                record.problems.append(f"exit code {record.exit_code}, nothing on stderr")
        level = logging.WARNING if record.status in (CRASHED, MEMORY_LIMITED, MALFORMED) else logging.DEBUG
        log.log(level, "icecuber %s test %d depth %d: %s (exit %s, %.1f s, %.0f MiB)%s", record.task_id,
                record.test_index, record.depth, record.status, record.exit_code, record.seconds, record.peak_rss_mb,
                "".join(f"\n  {p}" for p in record.problems[:5]))
        self.results.add(record)

    def _note_layout(self, record: RunRecord) -> None:
        """Say once which folder the build read. The current public commit (eval = 0) reads dataset/evaluation/
        and prints a verdict line per task; the 2020 Kaggle build (eval = 1) reads dataset/test/ silently."""
        if self.layout is not None or record.status not in (ANSWERED, NOTHING_FOUND):
            return
        out = self.staged.log_path(record.index, record.depth, "out").read_text(errors="replace")
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
                        f"{'; '.join(messages.pop()) or 'no message'} (program {self.staged.program}, logs in "
                        f"{self.staged.logs_dir})")
        log.error("icecuber: %s; stopping it, the run goes on without icecuber", self.failure)
        return True

    def _mark_not_run(self) -> None:
        done = {(r.index, r.depth) for r in self.records()}
        for stage in self.config.depths:
            for index, (task_id, test_index) in enumerate(self.staged.samples):
                if (index, stage.depth) not in done:
                    self.results.add(RunRecord(index, stage.depth, task_id, test_index, NOT_RUN))


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
