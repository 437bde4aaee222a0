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

The flusher is woken only when it sleeps with nothing to watch. While it waits for the earliest
deadline of the outboxes it watches, a new one needs no wake-up: its group began later, so its
deadline comes after the one the flusher waits for, and the flusher looks at every outbox then.
Waking it for each group cost a thread switch per chunk, twice: with 4 `true` items a chunk,
25 us an item of the worker's CPU, a third of all the executor adds to a shell item.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

#: An outcome reaches the runner at most this long after it is decided; one a policy decides on
#: goes at once (a cost for the budget; a failure that may halt the batch: attempts.may_halt).
REPORT_EVERY_S: Final = 0.02


class Outbox:
    """The outcomes one worker has decided and not yet handed over (``send`` takes a list)."""

    __slots__ = ("_lock", "_pending", "_send", "_since")

    def __init__(self, send: Callable[[list[Any]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._since = 0.0  # time.perf_counter() of the oldest pending outcome

    def add(self, outcome: Any, urgent: bool, now: float) -> None:
        """One more outcome, decided at ``now`` (``time.perf_counter()``); ``urgent`` hands
        over the group at once."""
        with self._lock:
            pending = self._pending
            pending.append(outcome)
            if len(pending) == 1:
                self._since = now
            if urgent or now - self._since >= REPORT_EVERY_S:
                self._pending = []
                self._send(pending)
            elif len(pending) == 1:
                _flusher().watch(self)  # the next item may be long: someone must not wait for it

    def close(self) -> None:
        """Hand over what is left (the worker is done with its chunk)."""
        with self._lock:
            pending = self._pending
            if pending:
                self._pending = []
                self._send(pending)

    def discard(self) -> None:
        """Forget what is left, handed over another way (a dask task's result repeats it)."""
        with self._lock:
            self._pending = []

    def due(self, now: float, flusher: _Flusher) -> float | None:
        """Flusher side: hand the group over if it has waited long enough; else when it will
        have (None: nothing waits, and the flusher forgets this outbox)."""
        with self._lock:
            pending = self._pending
            if not pending:
                flusher.forget(self)  # under this lock: an add() cannot slip in between
                return None
            at = self._since + REPORT_EVERY_S
            if now < at:
                return at
            self._pending = []
            self._send(pending)
            flusher.forget(self)
            return None


class _Flusher:
    """The thread that hands over the groups their workers left waiting."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._boxes: set[Outbox] = set()
        self._idle = False  # asleep with no outbox to watch: only then does a new one wake it
        self._thread = threading.Thread(target=self._run, name="batchtui-outbox", daemon=True)
        self._thread.start()

    def watch(self, box: Outbox) -> None:
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
        clock = time.perf_counter
        while True:
            with self._cond:
                while not self._boxes:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                boxes = list(self._boxes)
            # The boxes' locks are taken without this one held: add() takes them in the other order.
            next_at: float | None = None
            for box in boxes:
                at = box.due(clock(), self)
                if at is not None and (next_at is None or at < next_at):
                    next_at = at
            if next_at is not None:
                with self._cond:
                    self._cond.wait(max(0.0, next_at - clock()))


_FLUSHER: _Flusher | None = None
_FLUSHER_PID = 0
_FLUSHER_LOCK = threading.Lock()


def _flusher() -> _Flusher:
    """This process's flusher (a forked child starts its own: threads do not survive a fork)."""
    global _FLUSHER, _FLUSHER_PID
    flusher = _FLUSHER
    if flusher is not None and os.getpid() == _FLUSHER_PID:
        return flusher
    with _FLUSHER_LOCK:
        if _FLUSHER is None or os.getpid() != _FLUSHER_PID:
            _FLUSHER, _FLUSHER_PID = _Flusher(), os.getpid()
        return _FLUSHER
