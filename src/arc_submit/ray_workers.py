"""The Ray backend: the workers as Ray actors across a cluster's nodes, the supervisor (worker_pool.py) unchanged.

    driver (this process)                                     node A, node B, ...
    WorkerPool ── ActorLink.send(task) ── solve(item) ──────► RayWorker actor: engine resident (load_worker once),
       ▲                                                       take_task as a local worker does, in a thread
       └── receive(): each record streamed back ◄──────────── journal records + start/emitted/end messages
           journals it (journal-worker-N.jsonl: one writer)    (a streaming generator, yielded as they happen)

One actor per GPU of the cluster (num_gpus=1 each), or `workers` / `cpu_workers` actors of one CPU each. An actor
journals through a relayed Journal: nothing is written on its node, its records come back in order over the
task's stream and the driver appends them to the worker's journal file, so assembly, resume, the report and the
scoring read the same files as with the local backend. A record streamed back before an actor died is kept; one
still in the actor's queue is lost with it (as a local worker's line being written when it is killed).

An actor that dies (killed, out of memory: Ray's memory monitor kills the largest worker of a node near its
limit, or its node gone) is an ended worker to the pool: its task is settled as killed and retried once on
another, and a new actor is started while the restart budget lasts. Actors are owned by the driver, so they die
with it. The deadline is the driver's wall-clock time: the nodes' clocks must agree (NTP) to well under
overrun_grace_s.

icecuber stays on the driver's machine (pipeline.py): it is CPU work beside the GPU workers, its store, resume
and RAM ceiling live in the run folder there, and a Kaggle run does it that way, so an evaluation on a cluster
measures what the submission will do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, RunConfig
from .journal import Journal
from .worker_pool import WorkerExit, WorkerLink
from .worker_process import WorkerRun, load_worker, take_task

log = logging.getLogger(__name__)

_TASK_DONE = ("done", None)  # the end of one task's stream (never sent to the driver)


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("backend: ray needs Ray, the [ray] extra: pip install -e '.[ray]' (on the driver and on "
                          "every node of the cluster)") from None
    return ray


def package_fingerprint() -> str:
    """A hash of arc_submit's source files: an actor on a node with another version installed refuses to start."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def this_machine() -> str:
    """Host name and boot id: two Ray nodes on one machine (a test cluster) share it, so a pid means the same."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


@dataclass(frozen=True)
class RayCluster:
    """The cluster a run's actors go to, as `connect` found it."""
    slots: list[str]  # one entry per actor: what it asks Ray for ("ray-gpu": one GPU, "ray-cpu": one CPU)
    started_here: bool  # connect started Ray (no cluster named, none running): the run shuts it down at the end


def connect(config: RunConfig) -> RayCluster:
    """Join the cluster config.ray_address (or RAY_ADDRESS) names, or start a Ray instance on this machine; the
    actors the run will start there. ConfigError when the cluster cannot hold that many."""
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        own = config.ray_address is None and not os.environ.get("RAY_ADDRESS")
        # An instance of our own stays small: its object store holds tasks and candidate lists, not data.
        ray.init(address=config.ray_address, include_dashboard=False, configure_logging=False,
                 **({"object_store_memory": 256 * 2**20} if own else {}))
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    n_workers = config.workers or gpus or config.cpu_workers
    have, unit = (gpus, "GPU") if gpus else (cpus, "CPU")
    if n_workers > have:
        if started_here:
            ray.shutdown()
        raise ConfigError(f"workers: {n_workers} Ray actors need {n_workers} {unit} (one each) and the cluster at "
                          f"{config.ray_address or 'this machine'} has {have}: set workers to at most {have}, or add "
                          f"nodes (ray start --address ...)")
    log.info("Ray cluster: %d node(s), %d GPU, %d CPU; %d actor(s) of one %s each",
             len([n for n in ray.nodes() if n["Alive"]]), gpus, cpus, n_workers, unit)
    return RayCluster([f"ray-{unit.lower()}"] * n_workers, started_here)


class _Outbox:
    """The pipe's `send` as take_task uses it, into the actor's queue of what goes back to the driver."""

    def __init__(self, outbox: queue.Queue):
        self.outbox = outbox

    def send(self, message) -> None:
        self.outbox.put(("status", message))


class RayWorker:
    """The actor (made remote by RayLauncher): one worker whose engine stays loaded across tasks."""

    def __init__(self, worker_id: int, run: WorkerRun, driver_code: str):
        logging.basicConfig(level=logging.INFO, force=True,
                            format=f"%(asctime)s w{worker_id} %(levelname)s %(name)s: %(message)s")
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        import ray

        self.run, self.outbox = run, queue.Queue()
        self.journal = Journal(None, f"worker-{worker_id}", relay=lambda record: self.outbox.put(("journal", record)))
        self.worker, self.ballast, self.failure = None, None, None
        gpu = ",".join(str(g) for g in ray.get_gpu_ids()) or None
        code = package_fingerprint()
        if code != driver_code:
            self.failure = (f"arc_submit on node {ray.util.get_node_ip_address()} ({Path(__file__).parent}) is not "
                            f"the driver's (source hash {code} against {driver_code}): install the driver's version "
                            f"on every node (the same checkout on a shared filesystem, or the same wheel)")
            return
        if gpu is not None and run.config.emulate_gpu_gib:
            from .gpu_ballast import Ballast

            try:  # L4 emulation: on the GPU Ray gave this actor, before the engine sees it
                self.ballast = Ballast(gpu.split(","), run.config.emulate_gpu_gib)
            except Exception as e:
                self.failure = f"L4 emulation (emulate_gpu_gib {run.config.emulate_gpu_gib}) on GPU {gpu}: {e}"
                self.journal.run_event("load-failed", error=self.failure)
                return
        try:
            self.worker = load_worker(run, "cuda" if gpu is not None else "cpu", self.journal)
        except Exception as e:  # load_worker journaled it
            self.failure = f"{type(e).__name__}: {e}"
            return
        self.journal.run_event("ready", load_s=self.worker.load_s, gpu=gpu, pid=os.getpid(),
                               node=ray.get_runtime_context().get_node_id(), node_ip=ray.util.get_node_ip_address())

    def ready(self) -> dict:
        """What the driver learns once the actor is up: the records journaled while loading, and whether it did."""
        records = []
        while not self.outbox.empty():
            records.append(self.outbox.get()[1])
        return {"records": records, "failure": self.failure, "pid": os.getpid(), "machine": this_machine()}

    def solve(self, item: tuple):
        """One task, item = (task id, attempt, its Deadline): a stream of ("journal", record) and
        ("status", message) in the order they happen. The task runs in a thread so this method can yield while
        it works; one task at a time (the actor runs one method at a time)."""
        if self.run.deadline.passed():  # past the deadline nothing new starts (the driver journals it as skipped)
            return
        threading.Thread(target=self._take, args=(item,), name="task", daemon=True).start()
        while (entry := self.outbox.get()) is not _TASK_DONE:
            yield entry

    def _take(self, item: tuple) -> None:
        try:
            take_task(self.worker, self.run, item, self.journal, _Outbox(self.outbox))
        except BaseException:
            # A local worker would die of it; so does the actor, and the driver settles and retries its task.
            logging.getLogger(__name__).exception("task %s broke the worker", item[0])
            os._exit(1)
        self.outbox.put(_TASK_DONE)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.ballast is not None:
            self.ballast.stop()


class ActorLink:
    """One RayWorker actor as the pool sees it (WorkerLink); the driver's writer of its journal."""

    def __init__(self, actor, journal: Journal):
        self.actor, self.journal = actor, journal
        self.pid: int | None = None
        self.where = "Ray actor (loading)"
        self._loading = actor.ready.remote()  # resolves once the engine is loaded (or failed to)
        self._stream = None  # the task in flight's ObjectRefGenerator
        self._closing = None  # close() called after the pool said stop
        self._announced: list[tuple] = []  # messages of ours for the pool: a task's start
        self._exit: WorkerExit | None = None

    @property
    def listening(self) -> bool:
        return self._exit is None

    def waitables(self) -> list:
        return [ref for ref in (self._loading, self._stream, self._closing) if ref is not None]

    def send(self, item) -> bool:
        if self._exit is not None:
            return False
        if item is None:
            self._closing = self.actor.close.remote()
            return True
        self._stream = self.actor.solve.remote(item)
        # Started as handed out: an actor can die before the first record it streams reaches us (a solver that
        # exits the process at once did), and a task it died on must be settled and retried, not handed out
        # again as if never tried. The actor's own `start` message is left out below.
        task_id, _, task_deadline = item
        self._announced.append(("start", task_id, task_deadline))
        return True

    def receive(self) -> list[tuple]:
        ray = _ray()
        messages, self._announced = self._announced, []
        if self._loading is not None and ray.wait([self._loading], timeout=0)[0]:
            self._loaded(ray, messages)
        while self._stream is not None and ray.wait([self._stream], timeout=0)[0]:
            try:
                kind, payload = ray.get(next(self._stream))
            except StopIteration:
                self._stream = None
                break
            except ray.exceptions.RayError as e:
                self._ended(False, f"Ray actor died: {_first_line(e)}")
                break
            if kind == "journal":
                self.journal.append(payload)
            elif payload[0] != "start":  # announced at hand-out (send)
                messages.append(payload)
        return messages

    def _loaded(self, ray, messages: list) -> None:
        ref, self._loading = self._loading, None
        try:
            up = ray.get(ref)
        except ray.exceptions.RayError as e:
            self._ended(False, f"Ray actor died while loading: {_first_line(e)}")
            return
        for record in up["records"]:
            self.journal.append(record)
        if up["failure"] is not None:
            log.error("%s: %s", self.where, up["failure"])
            ray.kill(self.actor, no_restart=True)
            self._ended(False, f"load failed: {up['failure']}")
            return
        self.pid = up["pid"] if up["machine"] == this_machine() else None
        self.where = f"Ray actor pid {up['pid']} on {up['machine'].split('/')[0]}"
        messages.append(("ready", None, None))

    def exit_status(self) -> WorkerExit | None:
        return self._exit

    def kill(self) -> None:
        _ray().kill(self.actor, no_restart=True)
        self._ended(False, "killed by the supervisor")

    def stop(self, timeout_s: float) -> None:
        ray = _ray()
        pending = [ref for ref in (self._loading, self._closing) if ref is not None]
        if pending:
            ray.wait(pending, num_returns=len(pending), timeout=timeout_s)
        if self._loading is not None and ray.wait([self._loading], timeout=0)[0]:
            self._loaded(ray, [])  # an actor still loading when the run ended: its records are journaled too
        ray.kill(self.actor, no_restart=True)
        self._ended(True, "stopped")

    def _ended(self, clean: bool, why: str) -> None:
        if self._exit is None:
            self._exit = WorkerExit(clean, why)
        self._loading = self._stream = self._closing = None
        self.journal.close()


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class RayLauncher:
    """Starts RayWorker actors on the cluster `connect` found (WorkerLauncher)."""

    def __init__(self, run: WorkerRun, journal_dir: str, cluster: RayCluster):
        ray = _ray()
        self.journal_dir, self.cluster, self.slots = journal_dir, cluster, cluster.slots
        self.run_ref = ray.put(run)  # once, not once per actor start
        self.code = package_fingerprint()
        self.actor_class = ray.remote(RayWorker)
        self.resources = {"num_cpus": 1, "num_gpus": 1} if "ray-gpu" in self.slots else {"num_cpus": 1}
        self._closed = False

    def launch(self, worker_id: int) -> WorkerLink:
        # max_restarts=0: the pool restarts workers itself, within its budget, once it has settled their task
        actor = self.actor_class.options(max_restarts=0, max_task_retries=0, **self.resources).remote(
            worker_id, self.run_ref, self.code)
        log.info("worker %d: Ray actor started (%s)", worker_id, self.slots[worker_id])
        return ActorLink(actor, Journal(self.journal_dir, f"worker-{worker_id}"))

    def wait(self, links: list[WorkerLink], timeout_s: float) -> None:
        refs = [ref for link in links if isinstance(link, ActorLink) for ref in link.waitables()]
        if refs:
            _ray().wait(refs, num_returns=1, timeout=timeout_s)
        else:
            time.sleep(timeout_s)

    def close(self) -> None:
        """Disconnect; a Ray instance `connect` started for this run stops with it."""
        if not self._closed:
            self._closed = True
            if self.cluster.started_here:
                _ray().shutdown()
