"""Executors: where items run. Thread and process pools behind one small interface (the
process pool is in :mod:`.pool`, dask in :mod:`.dask_executor`).

The runner submits chunks (lists of items) and reads :class:`Outcome` lists from one
completion queue. A chunk waits in the executor's :class:`~.handoff.Handoff` until a worker
takes it, and each of its items starts only through its gate, so the runner can take back
any item that has not started (a stop, pause, halt, memory hold or skip). Executors never
touch the batch files: the runner is the single writer.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import capture, fdlimit, tasklimit
from .attempts import Classifier, Outcome, RoomWait, run_items
from .callables import CallableProcessor
from .errors import NO_THREAD, BatchtuiError, WorkerLost, classify
from .handoff import DONE, QUEUED, RUNNING, Chunk, Handoff
from .processors import Item, ProcessorSpec, build_processor

if TYPE_CHECKING:  # a pool worker imports this module: it needs no settings models
    from .config import BatchConfig
    from .earlyhalt import EarlyHalt
    from .inflight import InflightFile, Slot

log = logging.getLogger("batchtui.engine")

#: Slots of a pool worker's shared gate: the runner's largest chunk (dispatch.MAX_CHUNK).
MAX_CHUNK_SLOTS: Final = 256


#: How long a pool worker's item has to unwind after a soft kill before its process is killed.
KILL_ESCALATE_S: Final = 2.0

#: Worker threads given up on (each held by a timed-out Python call, which a thread cannot stop)
#: that are replaced, at most, per worker asked for; past that the run halts
#: (:meth:`ThreadExecutor.abandon`).
LOST_PER_WORKER: Final = 4


def _salvage(chunk: Chunk, reported: set[int], exc: BaseException | None, text: str) -> list[Outcome]:
    """A worker lost hold of ``chunk`` (its process died, or a bug of ours): what is left of it.

    Items that never started are cancelled and come back ``returned`` (put back to pending,
    no attempt counted); items that started and were not reported fail as ``WorkerLost``
    (transient: retried), carrying the cause."""
    out: list[Outcome] = []
    now, mono = time.time(), time.monotonic()
    info = classify(WorkerLost(text if exc is None else f"{text}: {type(exc).__name__}: {exc}"))
    for index, item in enumerate(chunk.items):
        if item.seq in reported:
            continue
        began = chunk.gate.started(index)  # a running item's start, read before the cancel
        state = chunk.gate.cancel(index)
        if state == QUEUED:
            out.append(Outcome(item.seq, item.attempt, now, 0.0, returned=True))
        elif state in (RUNNING, DONE):
            # The time it ran until its process went (a timeout, a skip, a crash): recorded as
            # 0.0 s, a timed-out attempt read as one that never ran.
            ran = max(0.0, mono - began) if began is not None else 0.0
            out.append(Outcome(item.seq, item.attempt, now - ran, ran, error=info))
    return out


CompletionQueue = queue.SimpleQueue[list[Outcome]]


class Executor(Protocol):
    """What the runner needs from an executor.

    Work goes out with :meth:`submit` and stays within the runner's reach until each item
    starts: :meth:`cancel` takes back items that have not started (they never will), and
    :meth:`kill` reaches one that has."""

    workers: int

    def start(self) -> None: ...

    def submit(self, chunk: list[Item]) -> None: ...

    def set_workers(self, n: int) -> None: ...

    def cancel(self, seqs: Iterable[int]) -> list[int]:
        """The items of ``seqs`` handed out and not started: they will never start (no outcome)."""
        ...

    def cancel_all(self) -> list[int]: ...

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        """Kill ``seq`` if it is running; its outcome still comes (as killed)."""
        ...

    def kill_all(self) -> int: ...

    def started(self, seq: int) -> float | None:
        """When ``seq`` began to run (``time.monotonic()``), None while it waits in a queue."""
        ...

    def counts(self) -> tuple[int, int]:
        """(queued, running) among the items handed out."""
        ...

    def shutdown(self, wait: float = 5.0) -> None: ...


class _HandoffExecutor:
    """What the local executors share: the hand-off queue their workers take chunks from."""

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        self.spec = spec
        self.config = config
        self.completions = completions
        self.classifier = Classifier.from_config(config)
        self.handoff = Handoff()
        self.workers = 0
        #: Why fewer workers run than the last start or set_workers asked for (None: as asked).
        self.shortfall: str | None = None
        self._lock = threading.Lock()
        self.early_halt: EarlyHalt | None = None

    def _fitting(self, n: int, files_kind: str, tasks: int) -> tuple[int, str | None]:
        """How many workers to have of ``n``, and why fewer.

        Under a low limit on open files, only the workers it has room for beside the engine's
        own files (:func:`.fdlimit.fitting`, by ``files_kind``) start, so that the store and
        live_progress.json never meet EMFILE. Under a pids limit (:func:`.tasklimit.room`), only
        those with room for their ``tasks`` each (a thread and its command; a process, its
        feeder thread and one more), with :data:`.tasklimit.RESERVE` tasks kept free for the
        process's other threads (a dashboard's, which it needs to go on). One at least: its
        start says whether there is room."""
        if n <= self.workers:
            return n, None
        target, note = n, None
        files = fdlimit.fitting(n, files_kind)
        if files is not None:
            target, note = files[0], f"the limit on open files (ulimit -n {files[1]}) has room for {files[0]}"
        left = tasklimit.room()
        if left is not None:
            fits = self.workers + max(0, (left - tasklimit.RESERVE) // tasks)
            if fits < target:
                target = fits
                note = (
                    f"the pids limit leaves room for {left} more threads and processes, {tasks} a worker"
                    f" with {tasklimit.RESERVE} kept free"
                )
        return max(1, target), note

    def _report(self, outcomes: list[Outcome]) -> None:
        """Hand outcomes to the runner (from a worker or feeder thread)."""
        if self.early_halt is not None:
            taken = self.early_halt(outcomes, self.handoff.cancel_all)
            if taken is not None:
                outcomes = outcomes + [Outcome(seq, 0, 0.0, 0.0, returned=True) for seq in taken]
        self.completions.put(outcomes)

    def submit(self, chunk: list[Item]) -> None:
        if self.early_halt is None:
            self.handoff.put(chunk)
            return
        if self.early_halt.admit(lambda: self.handoff.put(chunk)):
            return
        # Held back by a trip the runner has not taken in yet: back to it, never started.
        self.completions.put([Outcome(item.seq, 0, 0.0, 0.0, returned=True) for item in chunk])

    def cancel(self, seqs: Iterable[int]) -> list[int]:
        return self.handoff.cancel(seqs)

    def cancel_all(self) -> list[int]:
        return self.handoff.cancel_all()

    def started(self, seq: int) -> float | None:
        return self.handoff.started(seq)

    def counts(self) -> tuple[int, int]:
        return self.handoff.counts()

    def kill_all(self) -> int:
        running = self.handoff.running()
        for seq, (item, _since) in running.items():
            self.kill(seq, item.attempt)
        return len(running)

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        raise NotImplementedError


class ThreadExecutor(_HandoffExecutor):
    """Worker threads in the engine process (default for shell commands).

    Shell items run as subprocesses, so threads are all they need; Python callables that
    release the GIL (I/O) do well here too. A worker thread never dies of an item: anything
    that escapes (a bug of ours) fails the items it held and the thread goes on.
    """

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        super().__init__(spec, config, completions)
        self.processor: Any = None
        self.threads: list[threading.Thread] = []
        self._counter = 0
        self._captured = False
        self._woken = threading.Event()  # set at shutdown: a worker waiting for room leaves
        #: Where each worker notes the item it runs (engine/inflight.py): items run in this
        #: process, and one that kills it must be known to the next engine.
        self.inflight: InflightFile | None = None
        #: The thread running each chunk taken (by id), and the chunks whose thread was given up
        #: (:meth:`abandon`): it leaves once its call returns. ``lost``: such threads still held.
        self._holders: dict[int, threading.Thread] = {}
        self._lost: dict[int, list[int]] = {}  # chunk id -> the items its held call runs
        self.lost = 0
        self._asked = 1  # the workers last asked for

    def keep_inflight(self, inflight: InflightFile) -> None:
        """Note the items in ``inflight`` while they run (before :meth:`start`)."""
        self.inflight = inflight

    def start(self) -> None:
        self.processor = build_processor(
            self.spec,
            timeout=self.config.timeout,
            log_limit=self.config.log_limit,
            max_result_bytes=self.config.max_result_bytes,
        )
        if isinstance(self.processor, CallableProcessor):
            capture.install(self.config.log_limit)  # what the items print goes to their logs
            self._captured = True
        self.set_workers(self.config.workers)

    def _loop(self) -> None:
        inflight = self.inflight
        slot = inflight.take() if inflight is not None else None
        try:
            self._work(slot)
        finally:
            if inflight is not None:
                inflight.give_back(slot)

    def _work(self, slot: Slot | None) -> None:
        """A worker thread's chunks, one after the other, until the hand-off closes."""
        processor, classifier, chunked = self.processor, self.classifier, self.spec.chunked
        handoff, put = self.handoff, self._report
        early = self.early_halt
        # A success that may halt the batch goes to the early halt at once, in this thread,
        # before the worker's next item begins (see EarlyHalt.judges_successes).
        judged = early.judges_successes if early is not None and early.rate_watched else None
        # A failure that may halt it goes there at once too; the others in groups (run_items).
        judged_below = self.config.max_attempts if early is not None and early.rate_watched else 0
        room = RoomWait()
        me, holders, lock = threading.current_thread(), self._holders, self._lock
        while True:
            chunk = handoff.take()
            if chunk is None:
                return
            holders[id(chunk)] = me
            reported: set[int] = set()

            def report(outcomes: list[Outcome], reported: set[int] = reported) -> None:
                reported.update([o.seq for o in outcomes])
                room.saw(outcomes)
                put(outcomes)

            try:
                run_items(processor, chunk.items, classifier, chunked, chunk.gate, report, judged, slot, judged_below)
            except BaseException as exc:
                if sys.is_finalizing():
                    raise
                log.exception("a worker thread failed; its items are handed back")
                put(_salvage(chunk, reported, exc, "the worker thread failed"))
            with lock:
                del holders[id(chunk)]
                handoff.done(chunk)
                if id(chunk) in self._lost:  # given up (abandon)
                    del self._lost[id(chunk)]
                    self.lost -= 1
                    if self.workers >= self._asked:
                        return  # another thread took its place
                    self.workers += 1  # none did (the limit of threads given up): back to work
            wait = room.after_chunk()
            if wait:
                self._woken.wait(wait)  # no room to start commands: let it free (shutdown wakes)

    #: What becomes of a call given up (:meth:`abandon`), and what would stop such calls.
    GIVE_UP, REMEDY = "its thread is given up and a new one takes its place", "--executor process kills such calls"
    HELD_HERE = True  # those calls run in this process: its lock is kept until it exits (TakeOver.close)

    def abandon(self, seq: int) -> bool | None:
        """Give up on the worker thread running ``seq``: its Python call timed out, and a thread
        cannot be stopped. The items of its chunk not started go to the other workers at once,
        and a new thread takes its place (the pool keeps its size), up to
        :data:`LOST_PER_WORKER` threads given up a worker asked for. The thread leaves when its
        call returns, whose outcome the runner ignores.

        True: replaced. False: given up but not replaced, the limit is reached (a timeout then
        halts the run before every worker is held; after a skip the thread comes back to work
        when its call returns). None: ``seq`` is not running here (it just ended)."""
        with self._lock:
            chunk = self.handoff.running_chunk(seq)
            if chunk is None or id(chunk) in self._lost:
                return None
            self._lost[id(chunk)] = self.running_with(seq)
            self.lost += 1
            self.workers -= 1
            self.handoff.reclaim(chunk)
            self.handoff.done(chunk)  # its item is settled: no longer counted running here
            if self.lost > LOST_PER_WORKER * self._asked:
                return False
        self.set_workers(self._asked)
        return True

    def held(self) -> set[int]:
        """The items whose calls were given up and still run (a retry must wait for them)."""
        with self._lock:
            return {seq for seqs in self._lost.values() for seq in seqs}

    def running_with(self, seq: int) -> list[int]:
        """The items running in one call with ``seq`` (a chunked callable's: its chunk), ``seq``
        included; [] if it is not running."""
        chunk = self.handoff.running_chunk(seq)
        if chunk is None:
            return []
        return [item.seq for index, item in enumerate(chunk.items) if chunk.gate.state(index) == RUNNING]

    def set_workers(self, n: int) -> None:
        """Grow or shrink to ``n`` worker threads. Where the system lets fewer start (a limit on
        processes: threads count), the run goes on with those and :attr:`shortfall` says so;
        none at all raises :class:`WorkerInitError`."""
        with self._lock:
            self._asked = max(1, n)
            self.threads = [t for t in self.threads if t.is_alive()]
            self.shortfall = None
            target, note = self._fitting(n, "shell" if self.spec.kind == "shell" else "", 2)
            while self.workers < target:
                self._counter += 1
                t = threading.Thread(target=self._loop, name=f"batchtui-worker-{self._counter}", daemon=True)
                try:
                    t.start()
                except RuntimeError:  # "can't start new thread": no room for one more
                    note = f"cannot start a thread ({NO_THREAD})"
                    if not self.workers:
                        raise WorkerInitError(f"0 of {n} workers started: {note}") from None
                    break
                self.threads.append(t)
                self.workers += 1
            if self.workers < n and note:
                self.shortfall = f"{self.workers} of {n} workers started: {note}"
            if self.workers > n:
                self.handoff.retire(self.workers - n)
                self.workers = n

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        if self.processor is None or self.handoff.state(seq) != RUNNING:
            return False
        return bool(self.processor.kill(seq, attempt))

    def shutdown(self, wait: float = 5.0) -> None:
        self.handoff.cancel_all()  # the run is over: nothing still queued may start
        self.handoff.close(len(self.threads))
        self._woken.set()
        deadline = time.monotonic() + wait
        with self._lock:
            held = {self._holders.get(key) for key in self._lost}
        for t in self.threads:
            if t not in held:  # a thread given up holds a call that may never return
                t.join(max(0.0, deadline - time.monotonic()))
        if self._captured:
            self._captured = False
            capture.uninstall()


class WorkerInitError(BatchtuiError):
    """A worker could not build the processor (e.g. the callable does not import there): the run
    halts before any item starts, and the CLI says why in one line (exit 2), no traceback.
    ``str()`` is the worker's own message (the runner's halt reason quotes it)."""


def make_executor(spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> Executor:
    kind = config.resolved_executor(spec.kind)
    if kind == "thread":
        return ThreadExecutor(spec, config, completions)
    if kind == "process":
        from .pool import ProcessExecutor  # its worker side imports this module

        return ProcessExecutor(spec, config, completions)
    if kind == "dask":
        # Imported here: dask is an optional extra and importing batchtui never imports it.
        from .dask_executor import DaskExecutor

        return DaskExecutor(spec, config, completions)
    from .errors import UserError

    raise UserError(f"unknown executor {kind!r} (use thread, process or dask)")
