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
import hashlib
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .attempts import Classifier, Outcome, may_halt, run_items
from .dask_gates import SUCCESSES, Slots, WorkerGates
from .errors import Fatal, classify
from .outbox import Outbox
from .outputs import DEFAULT_MAX_RESULT_BYTES
from .processors import CallableProcessor, Item, ProcessorSpec, build_processor, code_digest

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
    #: --max-attempts when a failure rate is watched, else 0: with it, a failure for good holds
    #: the worker as a fatal error does (:func:`~.attempts.may_halt`).
    judged_below: int = 0
    #: The batch's token (its folder, :func:`batch_token`): a later engine run of the batch
    #: finds what an earlier one left running on the workers (:func:`take_batch_on_worker`).
    batch: str = ""

    @property
    def cache_key(self) -> str:
        return f"{self.engine}|{self.spec_json}|{self.timeout}|{self.log_limit}|{self.max_result_bytes}|{self.code}"


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


Tell = Callable[[list[Outcome], list[tuple[int, int]]], None]


def _on_worker(task: TaskSpec, key: str, chunk: list[Item]) -> tuple[Callable[[], bool], Outbox | None, Tell | None]:
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
        return (lambda: False), None, None
    with contextlib.suppress(Exception):
        worker.log_event(started_topic(task.engine), key)
    topic = outcomes_topic(task.engine)

    def released() -> bool:
        ts = tasks.get(key)
        return ts is None or ts.state == "cancelled"

    index_of = {item.seq: index for index, item in enumerate(chunk)}

    def send(outcomes: list[Outcome], held: list[tuple[int, int]] | None = None) -> None:
        # From the task's thread or the outbox's flusher: log_event hands the message to the
        # worker's event loop, which batches it to the scheduler with the task's other messages.
        # ``held``: the outcomes among them that hold this worker until the engine's verdict.
        raw = pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
        blob = raw if len(raw) <= STREAM_MAX_BYTES else None
        ended = 1 + max(index_of[o.seq] for o in outcomes)
        with contextlib.suppress(Exception):  # the worker is closing: the result will say
            worker.log_event(topic, [key, blob, ended, held or []])

    return released, Outbox(send), send


def run_chunk(task: TaskSpec, chunk: list[Item], key: str, strict: tuple[int, int] = (0, 0)) -> list[Outcome]:
    """The dask task: run a chunk on the worker, each item only through this process's gate.

    Never raises for an item's failure. Returns an outcome per item that ran and a
    ``returned`` outcome per item refused (cancelled before it began: it never started).
    The outcomes of the items that ran also go to the engine as they are decided (an event, at
    most :data:`.outbox.REPORT_EVERY_S` later): a chunk's finished items are not held behind its
    slower ones. The returned list repeats them (the engine keeps the first copy it gets), so an
    event lost with its worker, or one too large to stream, costs nothing.
    """
    _gates.set_strict(task.engine, strict)  # as when it was sent (a worker that joined since)
    entry = _gates.arrive(key, len(chunk), task.batch, task.engine, tuple(item.seq for item in chunk))
    released, box, tell = _on_worker(task, key, chunk)
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
            return _run_together(processor, task, chunk, entry, released, tell)
        classifier = task.classifier
        last = len(chunk) - 1
        for index, item in enumerate(chunk):
            _gates.await_verdict(task.engine, entry, index, released)
            if released():
                _gates.refuse(entry, index)
            if not _gates.begin(entry, index):
                out.append(Outcome(item.seq, item.attempt, time.time(), 0.0, returned=True))
                continue
            # One item at a time, its outcome kept in the gate as soon as it is decided: an engine
            # that restarts this worker to stop a running call salvages the chunk-mates' outcomes.
            got = run_items(processor, [item], classifier, False)
            held = _hold_if_judged(task, got)
            _gates.end(entry, index, got)
            out += got
            if held and tell is not None:  # at once, and so the engine knows to answer
                tell(got, held)
            elif box is not None and index < last:  # the last one goes with the result at once
                now = time.perf_counter()
                for o in got:  # a failure that may halt went at once above (held)
                    box.add(o, o.cost is not None, now)
        return out
    finally:
        if box is not None:
            box.discard()  # what it holds is in the result
        _gates.finish(entry)


def _run_together(
    processor: CallableProcessor, task: TaskSpec, chunk: list[Item], entry: Slots, released: Any, tell: Tell | None
) -> list[Outcome]:
    """A chunked callable takes its items together: they begin (or were cancelled) together."""
    _gates.await_verdict(task.engine, entry, None, released)
    if released():
        for index in range(len(chunk)):
            _gates.refuse(entry, index)
    begun = [i for i in range(len(chunk)) if _gates.begin(entry, i)]
    now = time.time()
    ran = set(begun)
    out = [Outcome(it.seq, it.attempt, now, 0.0, returned=True) for i, it in enumerate(chunk) if i not in ran]
    if begun:
        got = run_items(processor, [chunk[i] for i in begun], task.classifier, True)
        held = _hold_if_judged(task, got)
        for n, i in enumerate(begun):
            _gates.end(entry, i, got if n == 0 else [])
        out += got
        if held and tell is not None:
            tell(got, held)
    return out


def _hold_if_judged(task: TaskSpec, outcomes: list[Outcome]) -> list[tuple[int, int]]:
    """Outcomes that may halt the batch hold this worker's items of the run until the engine has
    judged them (:func:`lift_on_worker`, or a cancel): without it the worker started its next
    queued task while the outcome was on its way, and a halt overshot (a fatal error with one
    worker: three items ran). A failure for good holds only once the engine said the failure
    rate is near its limit (:func:`strict_on_worker`): far from it, no failure can halt; and a
    success too while the engine says it may still cross the limit (before --min-items
    outcomes: :meth:`.executors.EarlyHalt.judges_successes`)."""
    level = _gates.strict.get(task.engine, 0)
    judged = task.judged_below if level else 0
    successes = level >= SUCCESSES
    marks = [(o.seq, o.attempt) for o in outcomes if may_halt(o, judged, successes)]
    _gates.hold(task.engine, marks)
    return marks


def strict_on_worker(engine: str, said: tuple[int, int]) -> None:
    """Run on every worker (``client.run``): what holds ``engine``'s items besides a fatal
    error (its failures for good, its successes too, or neither); see
    :meth:`WorkerGates.set_strict`."""
    _gates.set_strict(engine, said)


def lift_on_worker(engine: str, marks: list[tuple[int, int]] | None) -> None:
    """Run on every worker (``client.run``): the engine judged ``marks`` (None: every one of
    its run) and does not halt; see :meth:`WorkerGates.lift`."""
    _gates.lift(engine, marks)


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


def take_batch_on_worker(batch: str, engine: str) -> list[int]:
    """Run on every worker (``client.run``) as ``engine``'s run of ``batch`` starts on a cluster
    it does not own: nothing more begins here of the batch's earlier runs (an engine killed -9
    leaves its tasks on such a cluster), their shell items are killed (process groups, as for a
    stop), and the seqs of their items still running here are returned (a Python call cannot be
    stopped: the new run holds those items until they end, :func:`orphans_on_worker`)."""
    others, running = _gates.take_batch(batch, engine)
    if others and running:
        with _processors_lock:
            theirs = [p for cache_key, p in _processors.items() if cache_key.partition("|")[0] in others]
        for processor in theirs:
            processor.kill_all()
    return running


def orphans_on_worker(batch: str, engine: str) -> list[int]:
    """Run on every worker (``client.run``): the seqs of ``batch``'s items that runs other than
    ``engine``'s still run here (see :func:`take_batch_on_worker`)."""
    return _gates.orphans(batch, engine)


def running_on_worker(batch: str) -> list[int]:
    """Run on every worker (``client.run``): the seqs of ``batch``'s items running here, of any
    engine's run; a question only (``batchtui check``, a resume's checks before it takes the batch)."""
    return _gates.batch_running(batch)


def batch_token(batch_dir: str) -> str:
    """What names a batch on the workers: a digest of its folder's real path (the engine's path
    of it, which every worker shares: see :mod:`.dask_executor`)."""
    return hashlib.sha256(os.path.realpath(batch_dir).encode("utf-8", "surrogateescape")).hexdigest()[:16]


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
