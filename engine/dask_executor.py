"""The dask executor (``--executor dask``): items run on a dask.distributed cluster.

dask is an optional extra (``pip install 'batchtui[dask]'``). This module imports nothing from
dask at import time, so importing batchtui never imports dask; the worker side (:func:`run_chunk`)
needs only batchtui itself.

How it works. The engine stays the single writer of the batch directory: each submitted chunk
becomes one dask task, ``run_chunk(spec, chunk)``, which builds the processor once per worker
process (cached), runs the items exactly as the local executors do (:func:`run_items`) and returns
the list of :class:`Outcome`. One collector thread follows the futures with
``distributed.as_completed`` and puts each chunk's outcomes on the runner's completion queue.
The runner bounds the in-flight window (``--workers`` x 4 x chunk, or ``--window``), so there is
never one future per item of the whole batch.

Cluster. ``--scheduler tcp://HOST:PORT`` (``scheduler`` in batchtui.toml, env
``BATCHTUI_SCHEDULER``) connects to an existing cluster, which the engine leaves running; without
it the engine starts a ``LocalCluster`` (worker processes, ``--workers`` of them, one thread each)
and closes it at the end. batchtui, the ``--call`` module (same path for a ``file.py``), the
command's programs and the inputs must be reachable on every worker; shell items run on the
worker's machine, their ``logs/`` are written there, under the same batch path.

Workers. On a LocalCluster ``set_workers(n)`` scales the cluster; on an existing cluster the
engine does not own the workers, so ``--workers`` only sets the in-flight window.

Failures. A worker that dies (killed, out of memory) takes its running chunk with it: dask
reports ``KilledWorker`` (a LocalCluster is started with ``allowed-failures=0`` so this happens
at once; an existing cluster first retries on other workers per its own setting), or the
connection fails: the chunk's items come back as ``WorkerLost`` (transient, retried by the engine
with its backoff and ``--max-attempts``).

Kills. ``kill(seq)`` (timeouts of Python callables, skip and stop of in-flight items) cancels the
item's future and hands the runner that item's outcome at once; the rest of its chunk is
submitted again (same attempt). Shell commands are killed on the worker too (their process group,
as with the local executors), and the shell processor's own ``--timeout`` applies there. A Python
call already running cannot be interrupted inside a worker: on an existing cluster it runs to its
end (its worker thread busy until then) and its late result is ignored; on the engine's own
LocalCluster the worker process running it is restarted, as the process executor kills its
process (other chunks caught in that restart are submitted again, not counted as failures).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from .config import BatchConfig
from .errors import Fatal, UserError, WorkerLost, classify
from .executors import Classifier, CompletionQueue, Outcome, WorkerInitError, run_items, tracks_starts
from .models import ClusterInfo
from .processors import Item, ProcessorSpec, build_processor

log = logging.getLogger("batchtui.engine.dask")

INSTALL_HINT: Final = "pip install 'batchtui[dask]'"
CONNECT_TIMEOUT_S: Final = 15.0
WORKER_WAIT_S: Final = 120.0
INFO_INTERVAL_S: Final = 1.0
START_POLL_S: Final = 0.25  # how often the start of running tasks is looked up (with --timeout)
SWEEP_AFTER_S: Final = 5.0
RESTART_WINDOW_S: Final = 30.0


def require_distributed() -> Any:
    """Import ``distributed``, or raise the clear :class:`UserError` naming the extra."""
    try:
        import distributed  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise UserError(f"the dask executor needs the optional extra: {INSTALL_HINT} ({exc})") from None
    return distributed


class DaskWorkerError(UserError, WorkerInitError):
    """The cluster cannot run this batch (no worker, batchtui or the callable missing there...).

    A :class:`WorkerInitError` for the runner (it records why the start failed) and a
    :class:`UserError` for the CLI (one clear line, exit 2, no traceback)."""


# -- the worker side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything a worker needs besides the items: plain data, pickled into each task."""

    spec_json: str
    timeout: float | None
    log_limit: int
    chunked: bool
    classifier: Classifier

    @property
    def cache_key(self) -> str:
        return f"{self.spec_json}|{self.timeout}|{self.log_limit}"


_processors: dict[str, Any] = {}
_processors_lock = threading.Lock()


def _processor_for(task: TaskSpec) -> Any:
    """The processor of this batch in this worker process: built once, shared by its threads."""
    with _processors_lock:
        processor = _processors.get(task.cache_key)
        if processor is None:
            spec = ProcessorSpec.model_validate_json(task.spec_json)
            processor = build_processor(spec, timeout=task.timeout, log_limit=task.log_limit)
            _processors[task.cache_key] = processor
        return processor


def run_chunk(task: TaskSpec, chunk: list[Item]) -> list[Outcome]:
    """The dask task: run a chunk on the worker; never raises for an item's failure."""
    try:
        processor = _processor_for(task)
    except Exception as exc:  # the worker cannot build the processor: not the items' fault
        info = classify(Fatal(f"dask worker on {socket.gethostname()} cannot build the processor: {exc}"))
        now = time.time()
        return [Outcome(it.seq, it.attempt, now, 0.0, error=info) for it in chunk]
    return run_items(processor, chunk, task.classifier, task.chunked)


def probe(task: TaskSpec) -> str | None:
    """Run once at start on a worker: None when the processor builds there, else why not."""
    try:
        _processor_for(task)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def kill_on_worker(cache_key: str, seq: int | None) -> int:
    """Run on every worker (``client.run``): kill a shell item's process group (None: all)."""
    processor = _processors.get(cache_key)
    if processor is None:
        return 0
    if seq is None:
        return int(processor.kill_all())
    return int(bool(processor.kill(seq)))


def executing_keys(keys: list[str], dask_worker: Any = None) -> list[str]:
    """Run on a worker (``client.run``): which of ``keys`` its threads are running now."""
    state = getattr(dask_worker, "state", dask_worker)
    running = {ts.key for ts in getattr(state, "executing", ())}
    return [k for k in keys if k in running]


def processing_on(keys: list[str], dask_scheduler: Any = None) -> dict[str, str]:
    """Run on the scheduler: the worker each of ``keys`` is assigned to."""
    out: dict[str, str] = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        ws = getattr(ts, "processing_on", None)
        if ws is not None:
            out[key] = ws.address
    return out


def running_for(keys: list[str], dask_scheduler: Any = None) -> dict[str, float]:
    """Run on the scheduler: how long each of ``keys`` has been running on its worker.

    Read from the workers' heartbeats (each reports its executing tasks and for how long), aged
    by the time since that heartbeat. Tasks queued on a worker behind others are not listed.
    """
    now = time.time()
    out: dict[str, float] = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        ws = getattr(ts, "processing_on", None)
        if ws is None:
            continue
        duration = ws.executing.get(ts)
        if duration is not None:
            out[key] = max(0.0, now - ws.last_seen) + float(duration)
    return out


def dask_setup(worker: Any) -> None:
    """Worker preload (LocalCluster only): a Ctrl-C in the engine's terminal reaches the whole
    process group; the engine decides when its workers stop, as with the process executor."""
    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- the engine side ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Task:
    future: Any
    chunk: list[Item]
    failed_at: float | None = None
    since: float | None = None  # when it began to run on its worker (engine's monotonic clock)


class DaskExecutor:
    """Runs chunks as tasks on a dask.distributed cluster (see the module docstring)."""

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        self.spec = spec
        self.config = config
        self.completions = completions
        self.classifier = Classifier.from_config(config)
        self.task = TaskSpec(
            spec_json=spec.model_dump_json(),
            timeout=config.timeout,
            log_limit=config.log_limit,
            chunked=spec.chunked,
            classifier=self.classifier,
        )
        self.workers = 0
        self.client: Any = None
        self.cluster: Any = None
        self._distributed: Any = require_distributed()
        self._lost_types: tuple[type[BaseException], ...] = ()
        self._ac: Any = None
        self._tasks: dict[str, _Task] = {}
        self._by_seq: dict[int, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._key_prefix = f"batchtui-{uuid.uuid4().hex[:8]}"
        self._counter = itertools.count()
        self._cluster_info: ClusterInfo | None = None
        self._reap: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._restarted: dict[str, float] = {}  # worker address -> when the reaper restarted it
        self._info_kwargs: dict[str, Any] = {}
        self._track_starts = tracks_starts(spec, config)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        distributed = self._distributed
        # KilledWorker: the task's worker died; CommClosedError (an OSError) and other OSErrors:
        # the connection to a worker or the scheduler broke.
        self._lost_types = (distributed.KilledWorker, OSError, TimeoutError)
        if self.config.scheduler:
            address = self.config.scheduler
            try:
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise UserError(f"cannot connect to the dask scheduler at {address}: {exc}") from None
            self.workers = self.config.workers
        else:
            try:
                self.cluster = distributed.LocalCluster(
                    n_workers=self.config.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.CRITICAL,
                    scheduler_kwargs={"allowed_failures": 0},
                    preload=[__name__],
                )
                self.client = distributed.Client(self.cluster, set_as_default=False)
            except Exception as exc:
                self._close_cluster()
                raise DaskWorkerError(f"the local dask cluster did not start: {exc}") from exc
            self.workers = self.config.workers
        if "n_workers" in inspect.signature(self.client.scheduler_info).parameters:
            self._info_kwargs = {"n_workers": -1}
        try:
            self._check_workers()
        except BaseException:
            self.shutdown(wait=1.0)
            raise
        self._ac = distributed.as_completed(loop=self.client.loop, with_results=True, raise_errors=False)
        self._refresh_info()
        threads: list[tuple[Callable[[], None], str]] = [
            (self._collect, "batchtui-dask-collector"),
            (self._poll, "batchtui-dask-info"),
            (self._reaper, "batchtui-dask-reaper"),
        ]
        if self._track_starts:
            threads.append((self._starts, "batchtui-dask-starts"))
        for target, name in threads:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _check_workers(self) -> None:
        """Wait for a worker, then build the processor on one: fail fast on a bad environment."""
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (TimeoutError, OSError) as exc:
            raise DaskWorkerError(f"no dask worker joined {self._address()} within {WORKER_WAIT_S:g}s") from exc
        future = self.client.submit(probe, self.task, pure=False, key=f"{self._key_prefix}-probe")
        try:
            problem = future.result(timeout=WORKER_WAIT_S)
        except Exception as exc:  # batchtui missing on the worker, a version mismatch...
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            raise DaskWorkerError(
                f"a dask worker cannot run this batch: {problem}"
                " (batchtui, the --call module and the folder the batch started in must exist on every worker)"
            )

    def shutdown(self, wait: float = 5.0) -> None:
        self._closing.set()
        self._wake.set()
        with self._lock:
            tasks = list(self._tasks.values())
            self._tasks.clear()
            self._by_seq.clear()
        if self.client is not None and tasks:
            with contextlib.suppress(Exception):
                self.client.cancel([t.future for t in tasks])
            if self.spec.kind == "shell":
                self._broadcast_kill(None)
        if self._ac is not None:
            self._ac.clear()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=max(1.0, wait))
        self._close_cluster()

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=10)
            self.cluster = None

    # -- the Executor interface ----------------------------------------------------------------

    def submit(self, chunk: list[Item]) -> None:
        key = f"{self._key_prefix}-{chunk[0].seq}-{next(self._counter)}"
        try:
            future = self.client.submit(run_chunk, self.task, chunk, key=key, pure=False)
        except Exception as exc:  # the client is closed or the scheduler is gone
            self.completions.put(self._lost(chunk, exc))
            return
        with self._lock:
            self._tasks[key] = _Task(future, chunk)
            for item in chunk:
                self._by_seq[item.seq] = key
        self._ac.add(future)
        self._wake.set()

    def set_workers(self, n: int) -> None:
        """LocalCluster: scale to ``n`` worker processes. Existing cluster: the window size."""
        if self.cluster is not None:
            self.cluster.scale(n)
        self.workers = n

    def cancel(self, seqs: Iterable[int]) -> list[int]:
        """Items handed to dask cannot be taken back yet: none is cancelled (they run or are killed)."""
        return []

    def cancel_all(self) -> list[int]:
        return []

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return 0, len(self._by_seq)

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        """Cancel the future running ``seq`` and hand back that item's outcome now.

        The other items of its chunk are submitted again (same attempt). What was running stops
        as :meth:`_cancel` can make it. False when ``seq`` is not here (its outcome is already on
        the completion queue).
        """
        with self._lock:
            key = self._by_seq.get(seq)
            if key is None:
                return False
            task = self._tasks[key]
            if task.future.done():
                return True  # its outcomes are on their way: the runner applies the kill reason
            del self._tasks[key]
            for item in task.chunk:
                self._by_seq.pop(item.seq, None)
        self._cancel([task.future], seq)
        killed = [it for it in task.chunk if it.seq == seq]
        rest = [it for it in task.chunk if it.seq != seq]
        self.completions.put(self._lost(killed, None, "cancelled by the engine"))
        if rest:
            self.submit(rest)
        return True

    def kill_all(self) -> int:
        with self._lock:
            tasks = [t for t in self._tasks.values() if not t.future.done()]
            for t in tasks:
                self._tasks.pop(t.future.key, None)
                for item in t.chunk:
                    self._by_seq.pop(item.seq, None)
        if not tasks:
            return 0
        self._cancel([t.future for t in tasks], None)
        n = 0
        for t in tasks:
            self.completions.put(self._lost(t.chunk, None, "cancelled by the engine"))
            n += len(t.chunk)
        return n

    def cluster_info(self) -> ClusterInfo | None:
        """Workers and memory of the cluster, sampled about once a second (never blocks)."""
        return self._cluster_info

    # -- threads -------------------------------------------------------------------------------

    def _collect(self) -> None:
        """Follow the futures as they complete (their results gathered on the client's loop as
        each finishes); hand each chunk's outcomes to the runner."""
        ac = self._ac
        while not self._closing.is_set():
            try:
                done = ac.next_batch(block=True)
            except StopIteration:  # nothing in flight: wait for a submit
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            except Exception:
                if self._closing.is_set():
                    return
                log.exception("dask collector")
                time.sleep(0.1)
                continue
            for future, value in done:
                self._deliver(future, value)

    def _deliver(self, future: Any, value: Any) -> None:
        """One completed future: its outcomes, or (no list came back) the chunk as lost/failed."""
        exc: BaseException | None = None
        if not (future.status == "finished" and isinstance(value, list)):
            if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
                exc = value[1]  # (type, exception, traceback) of an erred task
            elif isinstance(value, BaseException):
                exc = value
            else:
                exc = WorkerLost(f"dask task {future.status}")
        with self._lock:
            task = self._tasks.get(future.key)
            if task is None or task.future is not future:
                return  # cancelled by kill() (its outcome was handed back then)
            del self._tasks[future.key]
            for item in task.chunk:
                if self._by_seq.get(item.seq) == future.key:
                    del self._by_seq[item.seq]
            if exc is None or not self._we_restarted(exc):
                self.completions.put(value if exc is None else self._lost(task.chunk, exc))
                return
        # Caught up in a restart the reaper made to stop another item: not this item's failure.
        self.submit(task.chunk)

    def _we_restarted(self, exc: BaseException) -> bool:
        address = getattr(getattr(exc, "last_worker", None), "address", None)
        at = self._restarted.get(address) if isinstance(address, str) else None
        return at is not None and time.monotonic() - at < RESTART_WINDOW_S

    def _sweep(self) -> None:
        """Safety net: a future that erred after it had finished (its result lost, then its
        recomputation failed) is never yielded by as_completed; hand its chunk back as lost."""
        now = time.monotonic()
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            if task.future.status not in ("error", "cancelled"):
                task.failed_at = None
            elif task.failed_at is None:
                task.failed_at = now
            elif now - task.failed_at > SWEEP_AFTER_S:
                self._deliver(task.future, WorkerLost(f"dask task {task.future.status}"))

    def _cancel(self, futures: list[Any], seq: int | None) -> None:
        """Stop what those futures run. Shell items: kill their process groups on the workers.
        Python calls on our own LocalCluster: restart the worker running one, in the background
        (the process executor kills the process, too). Elsewhere a running call goes on."""
        if self.spec.kind == "shell":
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
            self._broadcast_kill(seq)
        elif self.cluster is not None:
            self._reap.put(futures)
        else:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)

    def _reaper(self) -> None:
        """LocalCluster only: cancel killed futures; restart the workers still running them."""
        while not self._closing.is_set():
            try:
                futures: list[Any] = self._reap.get(timeout=0.2)
            except queue.Empty:
                continue
            with contextlib.suppress(queue.Empty):
                while True:
                    futures.extend(self._reap.get_nowait())
            try:
                self._reap_now(futures)
            except Exception:
                if not self._closing.is_set():
                    log.exception("dask reaper")

    def _reap_now(self, futures: list[Any]) -> None:
        keys = [f.key for f in futures]
        where: dict[str, str] = self.client.run_on_scheduler(processing_on, keys)
        busy: dict[str, list[str]] = {}
        for key, address in where.items():
            busy.setdefault(address, []).append(key)
        running: set[str] = set()
        for address, on_worker in busy.items():
            replies = self.client.run(executing_keys, on_worker, workers=[address], on_error="ignore")
            if replies.get(address):
                running.add(address)
        self.client.cancel(futures)
        if running and not self._closing.is_set():
            log.info("restarting dask workers %s to stop killed items", sorted(running))
            now = time.monotonic()
            for address in running:
                self._restarted[address] = now
            self.client.restart_workers(sorted(running), raise_for_error=False)
            now = time.monotonic()  # the window counts from the end of the restart
            for address in running:
                self._restarted[address] = now

    def started(self, seq: int) -> float | None:
        with self._lock:
            key = self._by_seq.get(seq)
            task = self._tasks.get(key) if key is not None else None
            return task.since if task is not None else None

    def _starts(self) -> None:
        """With a --timeout on Python calls: learn when each task began to run on its worker
        (a task waits on the scheduler or behind another on a worker; that time is not its
        own). Known to within the workers' heartbeat, so a timeout is never cut short."""
        while not self._closing.wait(START_POLL_S):
            with self._lock:
                waiting = {key: task for key, task in self._tasks.items() if task.since is None}
            if not waiting:
                continue
            try:
                running: dict[str, float] = self.client.run_on_scheduler(running_for, list(waiting))
            except Exception:
                if not self._closing.is_set():
                    log.debug("dask start tracking", exc_info=True)
                continue
            now = time.monotonic()
            with self._lock:
                for key, seconds in running.items():
                    task = waiting.get(key)
                    if task is not None and task.since is None:
                        task.since = now - seconds

    def _poll(self) -> None:
        while not self._closing.wait(INFO_INTERVAL_S):
            self._refresh_info()
            self._sweep()

    def _refresh_info(self) -> None:
        try:
            info = self.client.scheduler_info(**self._info_kwargs)
        except Exception:
            return
        workers = info.get("workers") or {}
        limit = used = 0.0
        threads = 0
        for w in workers.values():
            threads += int(w.get("nthreads") or 0)
            limit += float(w.get("memory_limit") or 0)
            used += float((w.get("metrics") or {}).get("memory") or 0)
        self._cluster_info = ClusterInfo(
            scheduler=str(info.get("address") or self._address()),
            local=self.cluster is not None,
            workers=len(workers),
            threads=threads,
            memory_total_mb=round(limit / 1048576, 1),
            memory_used_mb=round(used / 1048576, 1),
        )

    # -- helpers -------------------------------------------------------------------------------

    def _address(self) -> str:
        if self.config.scheduler:
            return self.config.scheduler
        return str(getattr(self.cluster, "scheduler_address", "the local cluster"))

    def _lost(self, chunk: list[Item], exc: BaseException | None, text: str = "") -> list[Outcome]:
        """Outcomes for a chunk whose task did not return: a lost worker is transient."""
        if exc is None or isinstance(exc, self._lost_types) or _is_cancelled(exc):
            info = classify(WorkerLost(text or _lost_text(exc)))
        else:
            info = self.classifier(exc)
        now = time.time()
        return [Outcome(it.seq, it.attempt, now, 0.0, error=info) for it in chunk]

    def _broadcast_kill(self, seq: int | None) -> None:
        with contextlib.suppress(Exception):
            self.client.run(kill_on_worker, self.task.cache_key, seq, wait=False)


def _lost_text(exc: BaseException | None) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        worker = getattr(getattr(exc, "last_worker", None), "address", None) or "a worker"
        return f"dask worker {worker} died while running the item ({name})"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"dask worker lost: {name}" + (f": {first}" if first else "")


def _is_cancelled(exc: BaseException) -> bool:
    return any(cls.__name__ in ("CancelledError", "FutureCancelledError") for cls in type(exc).__mro__)


def make_dask_executor(spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> DaskExecutor:
    return DaskExecutor(spec, config, completions)


__all__ = [
    "ClusterInfo",
    "DaskExecutor",
    "DaskWorkerError",
    "TaskSpec",
    "dask_setup",
    "kill_on_worker",
    "make_dask_executor",
    "probe",
    "require_distributed",
    "run_chunk",
]
