"""The worker side of the dask executor: what runs inside dask worker processes (and on the
scheduler), sent there by reference. It imports nothing from dask at import time.

Each dask task is one chunk, :func:`run_chunk`. Its items start only through the start gate of
the worker process it runs in (:class:`WorkerGates`, one per process): a slot per item of each
task seen here, *queued* until the item begins. The engine's cancel is a broadcast
(:func:`cancel_tokens`, run on every worker): each worker settles the slots it holds under its
lock, queued -> cancelled, and reports which had begun; a worker the task has not reached yet
keeps the slots pre-cancelled, so a task still in transit refuses them too. An item refused
comes back as ``returned`` (never started). A task whose future the client released (the
engine cancelled it, or the engine is gone) starts no further item either.

::

    engine                           every worker process                    the task's thread
    cancel_tokens(key: indexes) ──▶  WorkerGates: key -> slots  ◀── begin(i) / end(i, outcomes)
       (begun? arrived?)  ◀────────  queued -> cancelled                     run_chunk(...)
    salvage_tasks(keys) ──▶ one worker: cancel what is queued, hand over the outcomes so far
    outcomes event  ◀── (an Outbox: at most 20 ms after each item ends) ───── run_chunk(...)
       (and up to which item the chunk's items ended: the next one's clock starts)
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .attempts import Classifier, Outcome, run_items
from .errors import Fatal, classify
from .handoff import CANCELLED, DONE, QUEUED, RUNNING
from .outbox import Outbox
from .outputs import DEFAULT_MAX_RESULT_BYTES
from .processors import CallableProcessor, Item, ProcessorSpec, build_processor, code_digest

#: Slots a worker process remembers (queued, running, done, pre-cancelled), oldest tasks forgotten
#: first: an outcome in transit is never mistaken for a cancel (100k items go by long after).
GATE_SLOTS: Final = 100_000
#: Processors kept per worker process (one per engine run: each engine's kills reach its own).
PROCESSORS_KEPT: Final = 16
#: A group of outcomes larger than this (pickled) is not streamed: it comes with its task's
#: result. The scheduler keeps the last events of every topic (1,000 by default, until the
#: engine asks it to forget them at the end), so an event stays small; a large result goes the
#: way dask moves data.
STREAM_MAX_BYTES: Final = 16 << 10


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything a worker needs besides the items: plain data, pickled into each task."""

    spec_json: str
    timeout: float | None
    log_limit: int
    chunked: bool
    classifier: Classifier
    engine: str = ""  # the engine run's task-key prefix: its own processor on each worker
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    #: The sha256 of the --call source where the engine runs: a worker loads that code or none
    #: (a long-lived worker re-imports an edited file; a worker with another copy refuses).
    code: str | None = None

    @property
    def cache_key(self) -> str:
        return f"{self.engine}|{self.spec_json}|{self.timeout}|{self.log_limit}|{self.max_result_bytes}|{self.code}"


class _Slots:
    """The gate of one task on one worker: a state per item and the outcomes decided so far."""

    __slots__ = ("arrived", "began_at", "finished", "outcomes", "states")

    def __init__(self, n: int) -> None:
        self.states = bytearray(n)
        self.arrived = False  # run_chunk began here (else: pre-cancelled slots of a task in transit)
        self.finished = False
        self.outcomes: list[Outcome] = []
        self.began_at = 0.0  # time.time() when its latest item began (a chunked call's: all of them)


class WorkerGates:
    """The start gates of the tasks a worker process has seen (or been told about), by task key."""

    def __init__(self, limit: int = GATE_SLOTS) -> None:
        self._lock = threading.Lock()
        self._tasks: collections.OrderedDict[str, _Slots] = collections.OrderedDict()
        self._size = 0
        self._limit = limit

    def _entry(self, key: str, n: int) -> _Slots:  # lock held
        entry = self._tasks.get(key)
        if entry is None:
            entry = self._tasks[key] = _Slots(n)
            self._size += n
        return entry

    def _trim(self, keep: str = "") -> None:  # lock held: forget the oldest tasks not running here
        if self._size <= self._limit:
            return
        for key in list(self._tasks):
            entry = self._tasks[key]
            if key == keep or (entry.arrived and not entry.finished):
                continue
            del self._tasks[key]
            self._size -= len(entry.states)
            if self._size <= self._limit:
                return

    def arrive(self, key: str, n: int) -> _Slots:
        with self._lock:
            entry = self._entry(key, n)
            entry.arrived = True
            self._trim(keep=key)
            return entry

    def begin(self, entry: _Slots, index: int) -> bool:
        with self._lock:
            if entry.states[index] != QUEUED:
                return False
            entry.states[index] = RUNNING
            entry.began_at = time.time()
            return True

    def refuse(self, entry: _Slots, index: int) -> None:
        with self._lock:
            if entry.states[index] == QUEUED:
                entry.states[index] = CANCELLED

    def end(self, entry: _Slots, index: int, outcomes: list[Outcome]) -> None:
        with self._lock:
            entry.outcomes.extend(outcomes)
            entry.states[index] = DONE

    def finish(self, entry: _Slots) -> None:
        with self._lock:
            entry.finished = True
            entry.outcomes = []

    def running(self, key: str, index: int) -> bool:
        """Whether item ``index`` of task ``key`` began here and has not ended."""
        with self._lock:
            entry = self._tasks.get(key)
            return entry is not None and entry.arrived and entry.states[index] == RUNNING

    def cancel(self, wanted: dict[str, tuple[int, list[int]]]) -> dict[str, tuple[bool, list[int]]]:
        """Queued -> cancelled for ``{key: (chunk length, indexes)}``; per key, whether the task
        reached this worker and which of the indexes had begun here."""
        out: dict[str, tuple[bool, list[int]]] = {}
        with self._lock:
            for key, (n, indexes) in wanted.items():
                entry = self._entry(key, n)
                states = entry.states
                begun = []
                for index in indexes:
                    state = states[index]
                    if state == QUEUED:
                        states[index] = CANCELLED
                    elif state != CANCELLED:
                        begun.append(index)
                out[key] = (entry.arrived, begun)
            self._trim()
        return out

    def salvage(
        self, wanted: dict[str, int], killed: list[tuple[str, int]]
    ) -> dict[str, tuple[bool, bytes, list[Outcome], float]] | None:
        """Before the engine restarts this worker to stop the ``killed`` items (task key, index):
        None if none of them runs any more (nothing is touched). Else cancel what is queued of
        the tasks ``{key: chunk length}`` (pre-cancelled if not here yet); per key, whether it
        arrived, its slots' states, the outcomes decided so far and when the item it runs began
        (``time.time()``: the killed item's attempt lasted from then)."""
        out: dict[str, tuple[bool, bytes, list[Outcome], float]] = {}
        with self._lock:
            running = [self._tasks.get(key) for key, _ in killed]
            if not any(e is not None and e.states[i] == RUNNING for e, (_, i) in zip(running, killed, strict=True)):
                return None
            for key, n in wanted.items():
                entry = self._entry(key, n)
                states = entry.states
                for index, state in enumerate(states):
                    if state == QUEUED:
                        states[index] = CANCELLED
                out[key] = (entry.arrived, bytes(states), list(entry.outcomes), entry.began_at)
            self._trim()
        return out


_gates = WorkerGates()
_processors: collections.OrderedDict[str, Any] = collections.OrderedDict()
_processors_lock = threading.Lock()


def _processor_for(task: TaskSpec) -> Any:
    """The processor of this engine run in this worker process: built once, shared by its threads."""
    with _processors_lock:
        processor = _processors.get(task.cache_key)
        if processor is None:
            spec = ProcessorSpec.model_validate_json(task.spec_json)
            processor = build_processor(
                spec,
                timeout=task.timeout,
                log_limit=task.log_limit,
                max_result_bytes=task.max_result_bytes,
                code=task.code,
            )
            _processors[task.cache_key] = processor
            while len(_processors) > PROCESSORS_KEPT:
                _processors.popitem(last=False)
        _processors.move_to_end(task.cache_key)
        return processor


def started_topic(engine: str) -> str:
    """The dask event topic on which an engine run's tasks say that they began."""
    return f"{engine}-started"


def outcomes_topic(engine: str) -> str:
    """The dask event topic on which an engine run's tasks hand over outcomes before they end."""
    return f"{engine}-outcomes"


def _on_worker(task: TaskSpec, key: str, chunk: list[Item]) -> tuple[Callable[[], bool], Outbox | None]:
    """Say (an event to the engine) that task ``key`` began here. Return a check of whether the
    client released it since (the engine cancelled it, or left: the worker marks an executing
    task it was told to forget ``cancelled``), and the outbox that streams its outcomes.

    Each group of outcomes also says up to which item of the chunk the items have ended (the
    same event, so no message more): the engine starts the next item's clock (--timeout, the
    time it has run) then, not at the chunk's start. A group too large to stream still says so."""
    try:
        from distributed import get_worker  # type: ignore[import-untyped,import-not-found,unused-ignore]

        worker = get_worker()
        tasks = worker.state.tasks
    except (ImportError, ValueError, AttributeError):  # not in a dask worker (tests call it directly)
        return (lambda: False), None
    with contextlib.suppress(Exception):
        worker.log_event(started_topic(task.engine), key)
    topic = outcomes_topic(task.engine)

    def released() -> bool:
        ts = tasks.get(key)
        return ts is None or ts.state == "cancelled"

    index_of = {item.seq: index for index, item in enumerate(chunk)}

    def send(outcomes: list[Outcome]) -> None:
        # From the task's thread or the outbox's flusher: log_event hands the message to the
        # worker's event loop, which batches it to the scheduler with the task's other messages.
        raw = pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
        blob = raw if len(raw) <= STREAM_MAX_BYTES else None
        ended = 1 + max(index_of[o.seq] for o in outcomes)
        with contextlib.suppress(Exception):  # the worker is closing: the result will say
            worker.log_event(topic, [key, blob, ended])

    return released, Outbox(send)


def run_chunk(task: TaskSpec, chunk: list[Item], key: str) -> list[Outcome]:
    """The dask task: run a chunk on the worker, each item only through this process's gate.

    Never raises for an item's failure. Returns an outcome per item that ran and a
    ``returned`` outcome per item refused (cancelled before it began: it never started).
    The outcomes of the items that ran also go to the engine as they are decided (an event, at
    most :data:`.outbox.REPORT_EVERY_S` later): a chunk's finished items are not held behind its
    slower ones. The returned list repeats them (the engine keeps the first copy it gets), so an
    event lost with its worker, or one too large to stream, costs nothing.
    """
    entry = _gates.arrive(key, len(chunk))
    released, box = _on_worker(task, key, chunk)
    out: list[Outcome] = []
    try:
        try:
            processor = _processor_for(task)
        except Exception as exc:  # the worker cannot build the processor: not the items' fault
            info = classify(Fatal(f"dask worker on {socket.gethostname()} cannot build the processor: {exc}"))
            now = time.time()
            for index, item in enumerate(chunk):
                if _gates.begin(entry, index):
                    outcome = [Outcome(item.seq, item.attempt, now, 0.0, error=info)]
                    _gates.end(entry, index, outcome)
                    out += outcome
                else:
                    out.append(Outcome(item.seq, item.attempt, now, 0.0, returned=True))
            return out
        if task.chunked and isinstance(processor, CallableProcessor):
            return _run_together(processor, task, chunk, entry, released)
        classifier = task.classifier
        last = len(chunk) - 1
        for index, item in enumerate(chunk):
            if released():
                _gates.refuse(entry, index)
            if not _gates.begin(entry, index):
                out.append(Outcome(item.seq, item.attempt, time.time(), 0.0, returned=True))
                continue
            # One item at a time, its outcome kept in the gate as soon as it is decided: an engine
            # that restarts this worker to stop a running call salvages the chunk-mates' outcomes.
            got = run_items(processor, [item], classifier, False)
            _gates.end(entry, index, got)
            out += got
            if box is not None and index < last:  # the last one goes with the result at once
                now = time.perf_counter()
                for o in got:
                    box.add(o, o.error is not None or o.cost is not None, now)
        return out
    finally:
        if box is not None:
            box.discard()  # what it holds is in the result
        _gates.finish(entry)


def _run_together(
    processor: CallableProcessor, task: TaskSpec, chunk: list[Item], entry: _Slots, released: Any
) -> list[Outcome]:
    """A chunked callable takes its items together: they begin (or were cancelled) together."""
    if released():
        for index in range(len(chunk)):
            _gates.refuse(entry, index)
    begun = [i for i in range(len(chunk)) if _gates.begin(entry, i)]
    now = time.time()
    ran = set(begun)
    out = [Outcome(it.seq, it.attempt, now, 0.0, returned=True) for i, it in enumerate(chunk) if i not in ran]
    if begun:
        got = run_items(processor, [chunk[i] for i in begun], task.classifier, True)
        for n, i in enumerate(begun):
            _gates.end(entry, i, got if n == 0 else [])
        out += got
    return out


def cancel_tokens(wanted: dict[str, tuple[int, list[int]]]) -> dict[str, tuple[bool, list[int]]]:
    """Run on every worker (``client.run``): see :meth:`WorkerGates.cancel`."""
    return _gates.cancel(wanted)


def salvage_tasks(
    wanted: dict[str, int], killed: list[tuple[str, int]]
) -> dict[str, tuple[bool, bytes, list[Outcome], float]] | None:
    """Run on one worker (``client.run``): see :meth:`WorkerGates.salvage`."""
    return _gates.salvage(wanted, killed)


def probe(task: TaskSpec) -> str | None:
    """Run once at start on a worker: None when the processor builds there, else why not."""
    try:
        _processor_for(task)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def code_on_worker(call: str, cwd: str | None) -> str | None:
    """Run on every worker (``client.run``) at start: the sha256 of the --call source there."""
    return code_digest(call, cwd)


def kill_on_worker(cache_key: str, key: str, index: int, seq: int, attempt: int) -> int:
    """Run on every worker (``client.run``): kill item ``seq``'s process group where its task
    began it (a shell about to start dies as it starts)."""
    processor = _processors.get(cache_key)
    if processor is None:
        return 0
    return int(_gates.running(key, index) and bool(processor.kill(seq, attempt)))


def kill_all_on_worker(cache_key: str) -> int:
    """Run on every worker (``client.run``): kill every running shell item of this engine run."""
    processor = _processors.get(cache_key)
    return 0 if processor is None else int(processor.kill_all())


def forget_topics(topics: list[str], dask_scheduler: Any = None) -> None:
    """Run on the scheduler as an engine run ends: drop the events of its ``topics``, which a
    scheduler keeps (the last 1,000 of each) for as long as it runs. A private part of
    distributed, so best effort: left alone where it is not."""
    truncate = getattr(getattr(dask_scheduler, "_broker", None), "truncate", None)
    if callable(truncate):
        for topic in topics:
            truncate(topic)


def processing_on(keys: list[str], dask_scheduler: Any = None) -> dict[str, str]:
    """Run on the scheduler: the worker each of ``keys`` is assigned to."""
    out: dict[str, str] = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        ws = getattr(ts, "processing_on", None)
        if ws is not None:
            out[key] = ws.address
    return out


def dask_setup(worker: Any) -> None:
    """Worker preload (LocalCluster only): a Ctrl-C in the engine's terminal reaches the whole
    process group; the engine decides when its workers stop, as with the process executor."""
    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)
