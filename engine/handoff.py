"""The hand-off between the runner and an executor's workers: work the runner can take back.

The runner dispatches items in chunks ahead of the workers (a quick shell command is too short
for a round trip per item), but a decision to stop, pause, halt, hold for memory or skip must
reach every item that has not started yet. So an item handed out is not yet the worker's: each
dispatched item has a :class:`Gate` slot that is *queued* until the worker that runs it calls
:meth:`Gate.begin` right before the item starts. The runner's :meth:`Gate.cancel` and the
worker's ``begin`` settle each queued slot exactly once, under the gate's lock: either the item
starts (and a kill must reach it) or it never starts (and the runner puts it back to pending at
once, no attempt counted). Nothing handed out is ever out of the runner's reach.

::

    runner                       Handoff                      worker (thread / feeder)
    put(items) ───────────────▶  deque of Chunks  ◀─────────  take()
    cancel(seqs) ─▶ Gate.cancel  each Chunk has a Gate  ◀──── Gate.begin(i) / Gate.end(i)
                    (queued -> cancelled: never starts)        (queued -> running -> done)

The process executor moves a chunk's gate into memory shared with its worker process when it
sends the chunk (:class:`SharedGate`), so the same rule holds across the process boundary.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .shell.item import Item  # not .processors: a pool worker imports this, and no settings model

QUEUED: Final = 0
RUNNING: Final = 1
DONE: Final = 2
CANCELLED: Final = 3


class Gate(Protocol):
    """The start gate of one chunk's items, by index in the chunk."""

    def begin(self, index: int) -> bool:
        """Queued -> running (True); False when the item was cancelled: it must not start."""
        ...

    def end(self, index: int) -> None:
        """Running -> done."""
        ...

    def cancel(self, index: int) -> int:
        """Queued -> cancelled; returns the state the slot was in (QUEUED: it will never start)."""
        ...

    def state(self, index: int) -> int: ...

    def started(self, index: int) -> float | None:
        """When the item began (``time.monotonic()``), None unless it is running."""
        ...


class LocalGate:
    """A gate in this process: a byte per item and one lock."""

    __slots__ = ("_lock", "_since", "_states", "moved_to")

    def __init__(self, n: int) -> None:
        self._lock = threading.Lock()
        self._states = bytearray(n)
        self._since: list[float] = [0.0] * n
        self.moved_to: Gate | None = None  # the shared gate that took over (process executor)

    def begin(self, index: int) -> bool:
        with self._lock:
            if self._states[index] != QUEUED:
                return False
            self._states[index] = RUNNING
            self._since[index] = time.monotonic()
            return True

    def end(self, index: int) -> None:
        with self._lock:
            self._states[index] = DONE

    def cancel(self, index: int) -> int:
        with self._lock:
            if self.moved_to is not None:
                return self.moved_to.cancel(index)
            state = self._states[index]
            if state == QUEUED:
                self._states[index] = CANCELLED
            return state

    def state(self, index: int) -> int:
        with self._lock:
            if self.moved_to is not None:
                return self.moved_to.state(index)
            return self._states[index]

    def started(self, index: int) -> float | None:
        with self._lock:
            if self.moved_to is not None:
                return self.moved_to.started(index)
            return self._since[index] if self._states[index] == RUNNING else None

    def move_to(self, gate: Any) -> list[int]:
        """Hand the slots over to ``gate`` (which must accept ``load(states)``); from now on
        cancels go there. Returns the indexes still queued (to be sent)."""
        with self._lock:
            gate.load(self._states)
            self.moved_to = gate
            return [i for i, s in enumerate(self._states) if s == QUEUED]


@dataclass(slots=True)
class Chunk:
    """Items handed out together, with their gate."""

    items: list[Item]
    gate: LocalGate
    taken: bool = False
    #: The items as a pool's feeder pickled them, when the chunk went back to the hand-off
    #: unsent (too big to be sent ahead): whichever feeder takes it next sends these bytes.
    pickled: bytes | None = None


class _Where:
    """Where an item's current dispatch is: its chunk, and its place in the chunk's gate."""

    __slots__ = ("chunk", "index")

    def __init__(self, chunk: Chunk, index: int) -> None:
        self.chunk, self.index = chunk, index


@dataclass
class Handoff:
    """The queue of chunks between the runner and the workers, and where each item is.

    Runner side: :meth:`put`, :meth:`cancel`, :meth:`cancel_all`, :meth:`started`,
    :meth:`running`. Worker side: :meth:`take`, then the chunk's gate, then :meth:`done`.

    The runner reaches a chunk's gate only under this object's lock, and a worker forgets a
    chunk (:meth:`done`) under it before it takes the next: a shared gate that the process
    executor reloads for its next chunk is never read for the previous one's items.
    """

    _cond: threading.Condition = field(default_factory=lambda: threading.Condition(threading.Lock()))
    _chunks: collections.deque[Chunk | None] = field(default_factory=collections.deque)
    _where: dict[int, _Where] = field(default_factory=dict)  # seq -> its current dispatch

    def put(self, items: list[Item]) -> None:
        chunk = Chunk(items, LocalGate(len(items)))
        with self._cond:
            where = self._where
            for index, item in enumerate(items):
                where[item.seq] = _Where(chunk, index)
            self._chunks.append(chunk)
            self._cond.notify()

    def put_front(self, chunk: Chunk) -> None:
        """A chunk a worker took and could not run (it is retiring): the next worker runs it."""
        with self._cond:
            chunk.taken = False
            self._chunks.appendleft(chunk)
            self._cond.notify()

    def close(self, workers: int) -> None:
        """Tell ``workers`` waiting workers to leave (one sentinel each)."""
        with self._cond:
            self._chunks.extend([None] * workers)
            self._cond.notify_all()

    def retire(self, workers: int) -> None:
        """Tell ``workers`` workers to leave before they take more work (fewer workers)."""
        with self._cond:
            self._chunks.extendleft([None] * workers)
            self._cond.notify_all()

    def take(self, timeout: float | None = None, held: Callable[[Chunk], bool] | None = None) -> Chunk | None:
        """The next chunk (blocking); None tells the worker to leave. Raises TimeoutError. A
        chunk ``held`` says must wait stays where it is (a cancel finds it), the next one goes."""
        with self._cond:
            while True:
                if held is None:
                    if self._chunks:
                        chunk = self._chunks.popleft()
                        break
                else:
                    at = next((i for i, c in enumerate(self._chunks) if c is None or not held(c)), None)
                    if at is not None:
                        chunk = self._chunks[at]
                        del self._chunks[at]
                        break
                if not self._cond.wait(timeout):
                    raise TimeoutError
            if chunk is not None:
                chunk.taken = True
            return chunk

    def reclaim(self, chunk: Chunk) -> int:
        """Take back the items of ``chunk`` (taken by a worker) that have not started, and queue
        them first, as a chunk of their own, for any worker. Each is settled in the old chunk's
        gate (cancelled: it never starts there) and moved to the new one under this lock, so the
        runner's cancel and kill find it in exactly one place. Returns how many there were."""
        with self._cond:
            where = self._where
            items = []
            for index, item in enumerate(chunk.items):
                w = where.get(item.seq)
                if w is not None and w.chunk is chunk and chunk.gate.cancel(index) == QUEUED:
                    items.append(item)
            if not items:
                return 0
            fresh = Chunk(items, LocalGate(len(items)))
            for index, item in enumerate(items):
                where[item.seq] = _Where(fresh, index)
            self._chunks.appendleft(fresh)
            self._cond.notify()
            return len(items)

    def running_chunk(self, seq: int) -> Chunk | None:
        """The chunk in which ``seq`` is running now (None: queued, ended, or not here)."""
        with self._cond:
            w = self._where.get(seq)
            return w.chunk if w is not None and w.chunk.gate.state(w.index) == RUNNING else None

    def done(self, chunk: Chunk) -> None:
        """The worker is finished with ``chunk``: forget where its items were."""
        with self._cond:
            where = self._where
            for item in chunk.items:
                w = where.get(item.seq)
                if w is not None and w.chunk is chunk:
                    del where[item.seq]

    def cancel(self, seqs: Iterable[int]) -> list[int]:
        """The items of ``seqs`` that were handed out and had not started: they never will."""
        with self._cond:
            return self._cancel(seqs)

    def cancel_all(self) -> list[int]:
        """Every item handed out that has not started: none of them will."""
        with self._cond:
            return self._cancel(list(self._where))

    def _cancel(self, seqs: Iterable[int]) -> list[int]:  # lock held
        cancelled = []
        where = self._where
        for seq in seqs:
            w = where.get(seq)
            if w is not None and w.chunk.gate.cancel(w.index) == QUEUED:
                cancelled.append(seq)
                del where[seq]
        self._drop_dead_chunks()
        return cancelled

    def _drop_dead_chunks(self) -> None:
        # A queued chunk whose items were all cancelled need not wake a worker. (lock held)
        if self._chunks:
            self._chunks = collections.deque(
                c for c in self._chunks if c is None or any(c.gate.state(i) == QUEUED for i in range(len(c.items)))
            )

    def state(self, seq: int) -> int | None:
        with self._cond:
            w = self._where.get(seq)
            return None if w is None else w.chunk.gate.state(w.index)

    def started(self, seq: int) -> float | None:
        """When ``seq`` began to run, None while it is queued (or not here)."""
        with self._cond:
            w = self._where.get(seq)
            return None if w is None else w.chunk.gate.started(w.index)

    def running(self) -> dict[int, tuple[Item, float]]:
        """The items running now, with when each began."""
        out = {}
        with self._cond:
            for seq, w in self._where.items():
                since = w.chunk.gate.started(w.index)
                if since is not None:
                    out[seq] = (w.chunk.items[w.index], since)
        return out

    def counts(self) -> tuple[int, int]:
        """(queued, running) among the items handed out."""
        running = queued = 0
        with self._cond:
            for w in self._where.values():
                state = w.chunk.gate.state(w.index)
                if state == RUNNING:
                    running += 1
                elif state == QUEUED:
                    queued += 1
        return queued, running


class ItemKilled(BaseException):
    """Raised inside a pool worker's running item when the engine kills it (skip, stop,
    timeout). A BaseException, as KeyboardInterrupt is, so ``except Exception`` in the
    user's code does not swallow it."""


class SharedGate:
    """The gate of the chunk a pool worker process is running, in memory shared with it.

    The same object (rebuilt from its parts by the worker) serves both sides: the engine's
    feeder loads each chunk's slots into it before sending the chunk, the worker begins and
    ends items through it, and the engine cancels queued items and asks for kills through it.
    One lock (a semaphore both processes share) settles each slot.

    Kills are soft first: the engine names the slot in ``kill_at`` and signals the worker
    (:data:`KILL_SIGNAL`); the worker's handler raises :class:`ItemKilled` in the running item
    only while that item's call is armed, so the rest of the chunk goes on and its outcomes
    are not lost. An item that does not unwind (stuck in C code) is SIGKILLed by the engine.
    """

    kills_by_signal: Final = True

    def __init__(self, states: Any, since: Any, kill_at: Any, lock: Any) -> None:
        self.parts = (states, since, kill_at, lock)
        self._states, self._since, self._kill_at, self._lock = states, since, kill_at, lock
        self.capacity = len(states)
        self.current = -1  # worker side: the slot running now
        self.armed = False  # worker side: inside the item's own call

    def load(self, states: bytearray) -> None:
        with self._lock:
            self._kill_at.value = -1
            for i, state in enumerate(states):
                self._states[i] = state

    def begin(self, index: int) -> bool:
        with self._lock:
            if self._states[index] != QUEUED:
                return False
            self._states[index] = RUNNING
            self._since[index] = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
        self.current = index
        return True

    def end(self, index: int) -> None:
        self.current = -1
        with self._lock:
            self._states[index] = DONE

    def cancel(self, index: int) -> int:
        with self._lock:
            state = int(self._states[index])
            if state == QUEUED:
                self._states[index] = CANCELLED
            return state

    def state(self, index: int) -> int:
        with self._lock:
            return int(self._states[index])

    def started(self, index: int) -> float | None:
        with self._lock:
            return float(self._since[index]) if self._states[index] == RUNNING else None

    def request_kill(self, index: int) -> bool:
        """Engine side: ask for the running item in ``index`` to die; False if it is not running."""
        with self._lock:
            if self._states[index] != RUNNING:
                return False
            self._kill_at.value = index
            return True

    # -- worker side -------------------------------------------------------------------------

    def arm(self) -> None:
        """Right before the item's call: a kill asked for already takes effect now."""
        self.armed = True
        if self._kill_at.value == self.current >= 0:
            self.armed = False
            raise ItemKilled

    def disarm(self) -> None:
        self.armed = False

    def on_signal(self, signum: int, frame: Any) -> None:
        """The worker's handler of KILL_SIGNAL: unwind the running item if it is the one."""
        if self.armed and self._kill_at.value == self.current >= 0:
            self.armed = False
            raise ItemKilled
