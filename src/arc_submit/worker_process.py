"""One worker (one per GPU, or N on a CPU): load the engine once, then solve the tasks the supervisor
(worker_pool.py) hands out, journaling everything as it goes. `worker_main` is the body of a local worker process,
over its pipe; a Ray actor (ray_workers.py) runs the same `load_worker` and `take_task`.

The messages, worker side: send ("ready", None, None) once loaded; for each task received as (task id, attempt,
its Deadline), send ("start", task id, the Deadline) before solving (if we die from there on, the supervisor
knows which task to settle and retry), ("emitted", task id, None) whenever candidates were journaled mid-task (a
reason to re-assemble soon), then ("end", task id, None), which also asks for the next task. None from the
supervisor, or the run's deadline, ends the loop.

Per task each solver of the chain runs in turn with its share of the task's time; its candidates go to the
journal whenever it emits them and when it returns, so a task killed later keeps them. A worker process whose
supervisor dies kills itself and everything it started.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .budget import Deadline
from .candidates import Candidate, valid_candidates
from .config import RunConfig, SolverConfig
from .journal import Journal
from .solvers import Solver, SolverContext, resolve_solver
from .tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainedSolver:
    """One solver of the run's chain as a worker runs it: its config, the Solver, and its options, built once."""
    spec: SolverConfig
    solver: Solver
    options: Any


def solver_chain(config: RunConfig) -> list[ChainedSolver]:
    """The config's solvers resolved and their options built (ValueError naming the solver and option)."""
    chain = []
    for spec in config.solvers:
        solver = resolve_solver(spec.name)
        chain.append(ChainedSolver(spec, solver, solver.make_options(spec.options)))
    return chain


def make_engine(config: RunConfig, device: str, chain: list[ChainedSolver]):
    """The engine named in config, loaded once per worker (None when the solvers need no model)."""
    if config.engine.kind == "none":
        return None
    from .llm import make_engine as make_llm_engine

    # The memory plan reserves the largest training any solver of the chain asks for.
    needs = [n for n in (link.solver.training_needs(link.options) for link in chain) if n is not None]
    options = {"device": device, "seed": config.seed, **config.engine.options}
    return make_llm_engine(config.engine.kind, config.engine.model,
                           train_seq_len=max((n.max_seq_len for n in needs), default=0),
                           lora_rank=max((n.lora_rank for n in needs), default=0), **options)


def die_with_supervisor(poll_s: float = 0.5) -> None:
    """A daemon thread that kills this worker's whole process group (itself, vLLM's engine core, program
    runners) as soon as its parent is gone: a SIGKILLed supervisor must not leave GPU workers running."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def journal_per_test(journal: Journal, task: Task, per_test, snapshot: str) -> None:
    """A solver's candidates, one line per test input, each naming the input it answers; grids that break the ARC
    rules are dropped and noted."""
    if len(per_test) != len(task.test):
        raise ValueError(f"task {task.id}: the solver returned {len(per_test)} candidate lists for "
                         f"{len(task.test)} test inputs (one list per test input, in order)")
    for test_index, candidates in enumerate(per_test):
        def dropped(why: str, i=test_index) -> None:
            journal.write("invalid-candidate", task.id, test_index=i, error=why)
            log.warning("task %s test %d: invalid candidate dropped: %s", task.id, i, why)
        journal.candidates(task.id, test_index, task.test[test_index].input, valid_candidates(candidates, dropped),
                           snapshot=snapshot)


def solve_task(task: Task, attempt: int, task_deadline: Deadline, chain: list[ChainedSolver],
               context: SolverContext, journal: Journal, conn, already_done=(),
               skip_after_verified: bool = True) -> None:
    """Run the task through each solver of the chain in turn, each with its share of the time left, journaling
    as they go: `solver-start` / `solver-done` (or `solver-error`, `solver-skipped`) per solver, then `done`, or
    `error` when every solver that ran raised. Solvers in already_done (finished by an earlier run) are skipped."""
    started = time.time()
    ran, failed, verified = [], [], False
    for i, link in enumerate(chain):
        spec = link.spec
        if spec.name in already_done:
            continue
        if verified and skip_after_verified:
            journal.write("solver-skipped", task.id, solver=spec.name, reason="an earlier solver verified an answer")
            continue
        rest = [later for later in chain[i:] if later.spec.name not in already_done]
        share = spec.share if spec.share is not None else 1.0 / len(rest)
        sub_deadline = task_deadline if len(rest) == 1 else task_deadline.within(task_deadline.remaining() * share)
        # Each journaling of this attempt replaces the last (a snapshot): the final answer supersedes the running
        # ones, and a task killed mid-way keeps its latest.
        snapshot = f"{spec.name}#{attempt}"

        def emit(per_test, snapshot=snapshot) -> None:
            journal_per_test(journal, task, per_test, snapshot)
            conn.send(("emitted", task.id, None))  # the supervisor re-assembles submission.json soon

        t0 = time.time()
        journal.write("solver-start", task.id, solver=spec.name, allotted_s=round(sub_deadline.remaining(), 2))
        try:
            per_test = link.solver.solve(task, sub_deadline, context.emitting_to(emit), link.options)
            journal_per_test(journal, task, per_test, snapshot)
            journal.write("solver-done", task.id, solver=spec.name, seconds=round(time.time() - t0, 3),
                          candidates=sum(len(c) for c in per_test))
            ran.append(spec.name)
            verified = link.solver.verifies and any(
                c.support == 1.0 for cands in per_test for c in cands if isinstance(c, Candidate))
        except Exception as e:  # one solver's failure never takes the task or the worker down
            failed.append(f"{spec.name}: {type(e).__name__}: {e}")
            journal.write("solver-error", task.id, solver=spec.name, seconds=round(time.time() - t0, 3),
                          error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
            log.warning("task %s solver %s raised %s: %s", task.id, spec.name, type(e).__name__, e)
    if failed and not ran:
        journal.write("error", task.id, seconds=round(time.time() - started, 3), error="; ".join(failed))
    else:
        journal.write("done", task.id, seconds=round(time.time() - started, 3), solvers=ran + list(already_done))


@dataclass(frozen=True)
class WorkerRun:
    """What every worker of a run is given, whatever starts it (a spawned process, a Ray actor)."""
    config: RunConfig
    tasks: dict[str, Task]
    deadline: Deadline  # the run's
    finished: dict = field(default_factory=dict)  # per task, the solvers an earlier run in this folder finished


@dataclass
class LoadedWorker:
    """What a worker loads once and keeps for every task it solves."""
    chain: list[ChainedSolver]
    engine: Any
    context: SolverContext
    load_s: float

    def close(self) -> None:
        self.context.close()
        if self.engine is not None:
            self.engine.close()


def load_worker(run: WorkerRun, device: str, journal: Journal) -> LoadedWorker:
    """The solver chain's options (built once per worker, not per task: the preflight checked them) and the engine;
    a failure is journaled (`load-failed`, so the report says why) and raised."""
    t0 = time.time()
    try:
        chain = solver_chain(run.config)
        engine = make_engine(run.config, device, chain)
    except Exception as e:
        journal.run_event("load-failed", traceback=traceback.format_exc(limit=8),
                          error=f"loading the {run.config.engine.kind} engine for {run.config.engine.model}: "
                                f"{type(e).__name__}: {e}")
        raise

    def note(task_id: str, kind: str, text: str) -> None:
        journal.write("note", task_id, kind=kind, text=text)

    return LoadedWorker(chain, engine, SolverContext.for_engine(engine, note=note), round(time.time() - t0, 2))


def take_task(worker: LoadedWorker, run: WorkerRun, item: tuple, journal: Journal, conn) -> None:
    """One task the supervisor handed out, item = (task id, attempt, its Deadline): the `start` message and event,
    the solvers, then `end` (which also asks for the next task)."""
    task_id, attempt, task_deadline = item
    # Tell the supervisor first: if we die from here on, it knows which task to settle and retry.
    conn.send(("start", task_id, task_deadline))
    journal.write("start", task_id, attempt=attempt, allotted_s=round(task_deadline.remaining(), 2), pid=os.getpid())
    solve_task(run.tasks[task_id], attempt, task_deadline, worker.chain, worker.context, journal, conn,
               run.finished.get(task_id, ()), run.config.skip_after_verified)
    conn.send(("end", task_id, None))


def worker_main(worker_id: int, gpu: str | None, run: WorkerRun, journal_dir: str, conn) -> None:
    """Body of one worker process (spawned: nothing is inherited but these arguments)."""
    if gpu is not None:
        # Before anything imports torch: this process sees exactly one GPU, as device 0.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    os.setpgid(0, 0)  # own process group: the supervisor kills the worker and anything it started together
    die_with_supervisor()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s w{worker_id} %(levelname)s %(name)s: %(message)s",
                        force=True)
    journal = Journal(journal_dir, f"worker-{worker_id}")
    try:
        worker = load_worker(run, "cuda" if gpu is not None else "cpu", journal)
    except Exception:  # journaled; the supervisor restarts us a bounded number of times
        journal.close()
        raise
    journal.run_event("ready", load_s=worker.load_s, gpu=gpu, pid=os.getpid())
    conn.send(("ready", None, None))
    while True:
        item = conn.recv()  # the supervisor's answer: (task id, attempt, its Deadline) or None
        if item is None or run.deadline.passed():  # past the deadline nothing new starts (journaled as skipped)
            break
        take_task(worker, run, item, journal, conn)
    worker.close()
    journal.close()
