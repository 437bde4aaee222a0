"""A worker's outcomes on their way to the runner: handed over in groups, never held behind a
slow item.

A worker hands its outcomes over in groups, since one hand-over per quick item (a queue put from
a thread, a pipe message from a pool process) would cost more than the item. But an outcome kept
back for its group must not wait for the item that runs next: a chunk's quick items, finished,
would be neither committed nor shown until the chunk's slowest item ends. So no outcome waits
more than :data:`REPORT_EVERY_S`: the worker hands its group over when it adds to it that much
later, and a flusher thread (one per process, started on first use) hands over a group its
worker left waiting while it runs a longer item.

::

    worker thread ── add(outcome) ──▶ Outbox ── send(group) ──▶ completion queue / pipe
                                        ▲
    flusher thread ── a group older than REPORT_EVERY_S ─┘

One lock per outbox orders every hand-over: groups leave in the order their outcomes were
decided, and :meth:`Outbox.close` returns only once the last one has left.

On Linux the flusher waits on a kernel timer (.timerfd) that the worker sets for its group's
deadline and unsets when the group leaves: the flusher wakes only for a group that really waited
its time. Elsewhere it waits on a condition variable and is woken only when it sleeps with
nothing to watch: while it waits for the earliest deadline of the outboxes it watches, a new one
needs no wake-up (its group began later, so its deadline comes after the one the flusher waits
for, and the flusher looks at every outbox then). Waking it for each group cost a thread switch
per chunk, twice: with 4 `true` items a chunk, 25 us an item of the worker's CPU, a third of all
the executor adds to a shell item. The condition variable still woke it twice for each chunk of
several items (to watch its first group, then at its deadline, long after the chunk ended); in
a pool worker each wake-up takes the GIL from the thread running the items.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from .timerfd import Timer

#: An outcome reaches the runner at most this long after it is decided; one a policy decides on
#: goes at once (a cost for the budget; a failure that may halt the batch: attempts.may_halt).
REPORT_EVERY_S: Final = 0.02


class _Watcher(Protocol):
    def watch(self, box: Outbox, at: float) -> None: ...
    def forget(self, box: Outbox) -> None: ...


class Outbox:
    """The outcomes one worker has decided and not yet handed over (``send`` takes a list)."""

    __slots__ = ("_flusher", "_lock", "_pending", "_send", "_since")

    def __init__(self, send: Callable[[list[Any]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._since = 0.0  # time.perf_counter() of the oldest pending outcome
        self._flusher: _Watcher | None = None  # the flusher watching the group that waits

    def add(self, outcome: Any, urgent: bool, now: float) -> None:
        """One more outcome, decided at ``now`` (``time.perf_counter()``); ``urgent`` hands
        over the group at once."""
        with self._lock:
            pending = self._pending
            pending.append(outcome)
            if len(pending) == 1:
                self._since = now
            if urgent or now - self._since >= REPORT_EVERY_S:
                self._hand_over()
            elif len(pending) == 1:
                # The next item may be long: someone must not wait for it.
                self._flusher = flusher = _flusher()
                flusher.watch(self, now + REPORT_EVERY_S)

    def keep(self, outcome: Any) -> None:
        """One more outcome, which the caller takes at once (:meth:`take`): nothing is sent,
        and no flusher watches for it."""
        with self._lock:
            self._pending.append(outcome)

    def take(self) -> list[Any]:
        """What is left, for the caller to hand over itself (with the word that its chunk ended)."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._unwatch()
            return pending

    def close(self) -> None:
        """Hand over what is left (the worker is done with its chunk)."""
        with self._lock:
            if self._pending:
                self._hand_over()

    def discard(self) -> None:
        """Forget what is left, handed over another way (a dask task's result repeats it)."""
        with self._lock:
            self._pending = []
            self._unwatch()

    def _hand_over(self) -> None:  # the lock held
        pending, self._pending = self._pending, []
        self._send(pending)
        self._unwatch()

    def _unwatch(self) -> None:  # the lock held: nothing waits, no flusher needs to watch
        flusher = self._flusher
        if flusher is not None:
            self._flusher = None
            flusher.forget(self)  # a flusher on a timer unsets it when nothing else waits

    def due(self, now: float) -> float | None:
        """Flusher side: hand the group over if it has waited long enough; else when it will
        have (None: nothing waits, and the flusher forgets this outbox)."""
        with self._lock:
            if not self._pending:
                self._unwatch()  # under this lock: an add() cannot slip in between
                return None
            at = self._since + REPORT_EVERY_S
            if now < at:
                return at
            self._hand_over()
            return None


class _TimedFlusher:
    """The thread that hands over the groups their workers left waiting, woken by a kernel timer
    set for the earliest deadline of the groups it watches (:mod:`.timerfd`): a group handed
    over before its deadline (most are: their chunk ended) unsets it, and nothing wakes."""

    def __init__(self, timer: Timer) -> None:
        self._lock = threading.Lock()
        self._boxes: set[Outbox] = set()
        self._timer = timer
        self._armed: float | None = None  # the deadline the timer is set for (perf_counter)
        self._thread = threading.Thread(target=self._run, name="batchtui-outbox", daemon=True)
        self._thread.start()

    def watch(self, box: Outbox, at: float) -> None:  # the box's lock held
        with self._lock:
            self._boxes.add(box)
            self._arm(at)

    def _arm(self, at: float) -> None:  # this lock held
        if self._armed is None or at < self._armed:
            self._armed = at
            self._timer.arm(at - time.perf_counter())

    def forget(self, box: Outbox) -> None:  # the box's lock held
        with self._lock:
            self._boxes.discard(box)
            if not self._boxes and self._armed is not None:
                self._armed = None
                self._timer.disarm()

    def _run(self) -> None:
        while True:
            self._timer.wait()
            with self._lock:
                self._armed = None  # expired (a watch since has set it again: _arm below keeps that)
                boxes = list(self._boxes)
            next_at = _hand_over_due(boxes)
            if next_at is not None:
                with self._lock:
                    self._arm(next_at)


class _Flusher:
    """The thread that hands over the groups their workers left waiting, on a condition
    variable (where there is no kernel timer to wait on: see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._boxes: set[Outbox] = set()
        self._idle = False  # asleep with no outbox to watch: only then does a new one wake it
        self._thread = threading.Thread(target=self._run, name="batchtui-outbox", daemon=True)
        self._thread.start()

    def watch(self, box: Outbox, at: float) -> None:
        with self._cond:
            if box not in self._boxes:
                self._boxes.add(box)
                if self._idle:
                    self._idle = False
                    self._cond.notify()

    def forget(self, box: Outbox) -> None:  # the box's lock held
        with self._cond:
            self._boxes.discard(box)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._boxes:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                boxes = list(self._boxes)
            next_at = _hand_over_due(boxes)
            if next_at is not None:
                with self._cond:
                    self._cond.wait(max(0.0, next_at - time.perf_counter()))


def _hand_over_due(boxes: list[Outbox]) -> float | None:
    """A flusher's look at the outboxes it watches: those whose group has waited its time hand
    it over; the earliest deadline of the others (None: none waits). The boxes' locks are taken
    without the flusher's held: add() takes them in the other order."""
    next_at: float | None = None
    for box in boxes:
        at = box.due(time.perf_counter())
        if at is not None and (next_at is None or at < next_at):
            next_at = at
    return next_at


_FLUSHER: _Watcher | None = None
_FLUSHER_PID = 0
_FLUSHER_LOCK = threading.Lock()
#: Whether a flusher may wait on a kernel timer (tests set it False for the condition variable).
USE_TIMER = True


def _flusher() -> _Watcher:
    """This process's flusher (a forked child starts its own: threads do not survive a fork)."""
    global _FLUSHER, _FLUSHER_PID
    flusher = _FLUSHER
    if flusher is not None and os.getpid() == _FLUSHER_PID:
        return flusher
    with _FLUSHER_LOCK:
        if _FLUSHER is None or os.getpid() != _FLUSHER_PID:
            _FLUSHER, _FLUSHER_PID = _new_flusher(), os.getpid()
        return _FLUSHER


def _new_flusher() -> _Watcher:
    if USE_TIMER:
        try:
            from . import timerfd  # ctypes: imported by the first group that waits (a pool worker's too)
        except (ImportError, OSError):  # out of descriptors: the import cannot open its files
            timer = None
        else:
            timer = timerfd.make()
        if timer is not None:
            return _TimedFlusher(timer)
    return _Flusher()
