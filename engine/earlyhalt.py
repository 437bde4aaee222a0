"""The early halt: the halts an outcome decides (a fatal error, the failure rate), decided in the
thread that reports outcomes, before that worker takes its next item. Shared by the local executors
(:mod:`.executors`, :mod:`.pool`) and dask (:mod:`.dask_verdicts`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .attempts import Outcome


class EarlyHalt:
    """The halts an outcome decides (a fatal error, the failure rate), decided in the thread
    that reports outcomes, before that worker takes its next item (the runner decides them
    too, a moment later, from the same outcomes).

    Without it, the workers of quick failing items run on while the runner catches up (a
    fatal error with one worker: two or three more items started); with it, the halt
    overshoots by at most the items already running when the limit is crossed. It trips
    once: what it took back comes to the runner as ``returned`` outcomes, and if the runner
    sees it otherwise (an operator retried failures meanwhile) they simply run later.
    """

    def __init__(
        self,
        check: Callable[[int, int], str | None],
        complete: int,
        failed: int,
        max_attempts: int,
        min_items: int = 0,
        rate_watched: bool = False,
        items: int | None = None,
    ) -> None:
        self._check = check
        self._complete = complete
        self._failed = failed
        self._max_attempts = max_attempts
        self._min_items = min_items
        #: A failure rate is watched (--max-failure-rate): until --min-items outcomes are in,
        #: a success may halt the batch too (:meth:`judges_successes`).
        self.rate_watched = rate_watched
        #: The batch's items (None: not known): fewer than --min-items, the rate is never judged.
        self._items = items
        self._lock = threading.Lock()
        self._ignored: set[int] = set()
        self.tripped = False
        #: The outcome that tripped it: until the runner has taken it in (and halted, or
        #: :meth:`dismiss`-ed the trip), nothing more is handed to the workers (:meth:`admit`).
        self.tripped_by: Outcome | None = None
        #: Called after :meth:`dismiss` (the dask executor's workers hold on a trip).
        self.on_dismiss: Callable[[], None] | None = None

    def admit(self, hand_out: Callable[[], None]) -> bool:
        """Call ``hand_out`` (work given to the workers) unless a trip holds it back: False
        then. Under the lock a trip takes back the work not started with, so work is either
        handed out before the trip (and taken back by it) or not at all: the runner, which has
        not yet seen the trip's outcomes, filled the room they left after the trip."""
        with self._lock:
            if self.tripped:
                return False
            hand_out()
            return True

    def dismiss(self, complete: int, failed: int) -> None:
        """The runner took the trip's outcomes in and did not halt (an operator retried
        failures meanwhile): work goes out again, counted from the runner's counts."""
        with self._lock:
            self.tripped, self.tripped_by = False, None
            self._complete, self._failed = complete, failed
        if self.on_dismiss is not None:
            self.on_dismiss()

    def judges_successes(self) -> bool:
        """Whether a success may still halt the batch, so that it must be reported at once and
        its worker wait for the verdict, as for a failure. The rate is judged from --min-items
        outcomes on: the outcome that makes them --min-items halts the batch when the failures
        among them are over the limit, a success as well as a failure. Past that, a success
        only lowers the rate. Before, a crossing success waited in its worker's outbox (up to
        REPORT_EVERY_S) while that worker ran on: 21 items ran where 10 may.

        Only while that outcome may cross it: the failures by then (those in, and every
        outcome before it at worst) over the limit at --min-items; and never when the batch
        has fewer items than --min-items."""
        least = self._min_items
        if not self.rate_watched or (self._items is not None and self._items < least):
            return False
        with self._lock:
            done = self._complete + self._failed
            if self.tripped or done >= least:
                return False
            worst = self._failed + (least - done - 1)
            return self._check(least - worst, worst) is not None

    def headroom(self, cap: int) -> int:
        """How many more failures for good cannot halt the batch, whatever else comes (at most
        ``cap``): counted with no success but those --min-items needs. 0 once tripped."""
        with self._lock:
            if self.tripped:
                return 0
            complete, failed, least = self._complete, self._failed, self._min_items

            def trips(more: int) -> bool:
                now = failed + more
                return self._check(max(complete, least - now), now) is not None

            if not trips(cap):
                return cap
            lo, hi = 0, cap  # the first count that trips is in (lo, hi]
            if trips(0):
                return 0
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if trips(mid) else (mid, hi)
            return lo

    def ignore(self, seq: int) -> None:
        """The runner is killing ``seq`` (skip, stop): its outcome is not the item's verdict."""
        with self._lock:
            self._ignored.add(seq)

    def __call__(self, outcomes: list[Outcome], take_back: Callable[[], list[int]]) -> list[int] | None:
        """Count ``outcomes``; when they halt the batch now (once), the seqs ``take_back``
        took back from the workers (not started), else None."""
        with self._lock:
            if self.tripped or not outcomes:
                return None
            fatal = False
            for o in outcomes:
                if o.returned or o.seq in self._ignored:
                    continue
                err = o.error
                if err is None:
                    self._complete += 1
                elif err.category == "fatal":
                    fatal = True
                elif not (err.retryable and o.attempt < self._max_attempts):
                    self._failed += 1
            if not fatal and self._check(self._complete, self._failed) is None:
                return None
            self.tripped, self.tripped_by = True, outcomes[-1]
            return take_back()
