"""The start gates of a dask worker process: a slot per item of each task it has seen (or been
told of), queued until the item begins, and the holds of the engine runs awaiting a verdict.
One per worker process (:data:`.dask_worker._gates`); see :mod:`.dask_worker` and
:mod:`.dask_verdicts`. It imports nothing from dask.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from .attempts import Outcome
from .handoff import CANCELLED, DONE, QUEUED, RUNNING

#: Slots a worker process remembers (queued, running, done, pre-cancelled), oldest tasks forgotten
#: first: an outcome in transit is never mistaken for a cancel (100k items go by long after).
GATE_SLOTS: Final = 100_000
#: A worker held after an outcome that may halt the batch waits this long at most for the
#: engine's verdict (a lift, or the cancel of what it holds), then goes on: a verdict lost with a
#: failed broadcast must not stall the run for ever. An engine that is gone released its tasks,
#: and those start nothing (see :func:`.dask_worker._on_worker`).
VERDICT_WAIT_S: Final = 10.0
#: What an engine run's workers hold for besides a fatal error (:meth:`WorkerGates.set_strict`):
#: a failure for good (the failure rate is near its limit), and a success too (before
#: --min-items outcomes are in, the outcome that makes them so may cross the limit).
FAILURES: Final = 1
SUCCESSES: Final = 2

log = logging.getLogger(__name__)


class Slots:
    """The gate of one task on one worker: a state per item and the outcomes decided so far."""

    __slots__ = ("arrived", "batch", "began_at", "engine", "finished", "outcomes", "seqs", "states")

    def __init__(self, n: int) -> None:
        self.states = bytearray(n)
        self.arrived = False  # run_chunk began here (else: pre-cancelled slots of a task in transit)
        self.finished = False
        self.outcomes: list[Outcome] = []
        self.began_at = 0.0  # time.time() when its latest item began (a chunked call's: all of them)
        # Set as the task arrives: its batch's token, its engine run, and its items' seqs.
        self.batch = self.engine = ""
        self.seqs: tuple[int, ...] = ()


class WorkerGates:
    """The start gates of the tasks a worker process has seen (or been told about), by task key."""

    def __init__(self, limit: int = GATE_SLOTS) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._tasks: collections.OrderedDict[str, Slots] = collections.OrderedDict()
        self._size = 0
        self._limit = limit
        #: Per engine run, the (seq, attempt) of outcomes that may halt its batch and that its
        #: engine has not yet judged: while any is here, no item of that run begins here.
        self._held: dict[str, set[tuple[int, int]]] = {}
        #: Per engine run, what else holds besides a fatal error (:data:`FAILURES` near the
        #: failure rate's limit, :data:`SUCCESSES` too before --min-items outcomes), and the
        #: latest of its engine's says (a task sent before one says less).
        self.strict: dict[str, int] = {}
        self._said: dict[str, int] = {}
        #: Per batch (its token), the engine run that holds it now (:meth:`take_batch`): the
        #: tasks of any other run of that batch begin nothing more here.
        self._owners: dict[str, str] = {}

    def set_strict(self, engine: str, said: tuple[int, int]) -> None:
        """What ``engine`` said (its count of changes, and what holds: 0, :data:`FAILURES` or
        :data:`SUCCESSES`), unless it said something later already."""
        epoch, level = said
        with self._lock:
            if epoch < self._said.get(engine, 0):
                return
            self._said[engine] = epoch
            if level:
                self.strict[engine] = int(level)
            else:
                self.strict.pop(engine, None)

    def hold(self, engine: str, marks: list[tuple[int, int]]) -> None:
        """Outcomes that may halt ``engine``'s batch were decided here: its items wait (before
        they leave this process, so the verdict cannot come first)."""
        if marks:
            with self._lock:
                self._held.setdefault(engine, set()).update(marks)

    def lift(self, engine: str, marks: list[tuple[int, int]] | None) -> None:
        """The engine judged ``marks`` (None: all of them) and did not halt: its items go on."""
        with self._cond:
            held = self._held.get(engine)
            if held is not None:
                if marks is None:
                    held.clear()
                else:
                    held.difference_update(marks)
                if not held:
                    del self._held[engine]
            self._cond.notify_all()

    def await_verdict(
        self,
        engine: str,
        entry: Slots,
        index: int | None,
        released: Callable[[], bool],
        limit: float | None = None,
    ) -> None:
        """Before item ``index`` of ``entry`` begins (None: the chunk's items, together): while
        ``engine`` is held here, wait for its verdict, a lift or the cancel of what would begin
        (then :meth:`begin` says no)."""
        with self._cond:
            if engine not in self._held:
                return
            states = entry.states
            deadline = time.monotonic() + (VERDICT_WAIT_S if limit is None else limit)
            while engine in self._held and (QUEUED in states if index is None else states[index] == QUEUED):
                if released():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    self._held.pop(engine, None)  # a lost verdict: go on, as without the hold
                    # Said where the worker's output goes (the engine's terminal for its own
                    # cluster): a halt decided meanwhile may have let this item start.
                    log.warning(
                        "batchtui: no verdict from the engine on an outcome that may halt its batch in %.0f s:"
                        " this worker goes on (a halt may overshoot by its items)",
                        VERDICT_WAIT_S if limit is None else limit,
                    )
                    return
                self._cond.wait(min(left, 0.05))  # released() is polled: a gone engine says no

    def _entry(self, key: str, n: int) -> Slots:  # lock held
        entry = self._tasks.get(key)
        if entry is None:
            entry = self._tasks[key] = Slots(n)
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

    def arrive(self, key: str, n: int, batch: str = "", engine: str = "", seqs: tuple[int, ...] = ()) -> Slots:
        """Task ``key`` (``n`` items, of ``engine``'s run of ``batch``) began here. A task of a
        run whose batch another run took since (:meth:`take_batch`) begins none of its items."""
        with self._lock:
            entry = self._entry(key, n)
            entry.arrived = True
            entry.batch, entry.engine, entry.seqs = batch, engine, seqs
            if batch and self._owners.get(batch, engine) != engine:
                entry.states[:] = bytes([CANCELLED]) * len(entry.states)
            self._trim(keep=key)
            return entry

    def take_batch(self, batch: str, engine: str) -> tuple[set[str], list[int]]:
        """``engine``'s run holds ``batch`` now (an engine that held it before died, or left
        Python calls it gave up running): the items of every other run of the batch that have
        not begun here never will. Returns those runs and the seqs of their items still running
        here (:meth:`orphans`)."""
        with self._cond:
            self._owners[batch] = engine
            others = {e.engine for e in self._tasks.values() if e.batch == batch and e.engine != engine}
            self._cond.notify_all()  # an item waiting for a verdict of the old run is refused now
            return others, self._orphans(batch, engine)

    def batch_running(self, batch: str) -> list[int]:
        """The seqs of ``batch``'s items running here now, of any run (nothing is changed)."""
        with self._lock:
            return [
                seq
                for entry in self._tasks.values()
                if entry.batch == batch and entry.arrived and not entry.finished
                for index, seq in enumerate(entry.seqs)
                if index < len(entry.states) and entry.states[index] == RUNNING
            ]

    def orphans(self, batch: str, engine: str) -> list[int]:
        """The seqs of ``batch``'s items that runs other than ``engine``'s are running here (each
        refusing what it has queued: nothing of them begins any more)."""
        with self._lock:
            return self._orphans(batch, engine)

    def _orphans(self, batch: str, engine: str) -> list[int]:  # lock held
        running: list[int] = []
        for entry in self._tasks.values():
            if entry.batch != batch or entry.engine == engine or not entry.arrived or entry.finished:
                continue
            states = entry.states
            for index, state in enumerate(states):
                if state == QUEUED:
                    states[index] = CANCELLED
                elif state == RUNNING and index < len(entry.seqs):
                    running.append(entry.seqs[index])
        return running

    def begin(self, entry: Slots, index: int) -> bool:
        with self._lock:
            if entry.states[index] != QUEUED:
                return False
            entry.states[index] = RUNNING
            entry.began_at = time.time()
            return True

    def refuse(self, entry: Slots, index: int) -> None:
        with self._lock:
            if entry.states[index] == QUEUED:
                entry.states[index] = CANCELLED

    def end(self, entry: Slots, index: int, outcomes: list[Outcome]) -> None:
        with self._lock:
            entry.outcomes.extend(outcomes)
            entry.states[index] = DONE

    def finish(self, entry: Slots) -> None:
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
            self._cond.notify_all()  # an item waiting for a verdict is cancelled: it says so now
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
