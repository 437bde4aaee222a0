"""The items table's items in flight as it shows them, and how long the running ones have run.

The store says 'processing' for every item handed out (its ``attempts`` and ``duration_s`` are
the finished tries'); what each one does now is in live_progress.json (:mod:`..flight`):
running on try N for so long, or queued. A row of such an item is drawn as that
(:func:`.items_rows.in_flight`), and "slowest first" orders the running ones by the time they
have run (:func:`batchtui.engine.store.queries.page`'s ``running``), so the order agrees with
the duration column: the times are taken at one moment (:attr:`FlightRows.now`) for both.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..flight import Flight
from .items_rows import Row, in_flight

__all__ = ["FlightRows"]


class FlightRows:
    """The items in flight (live_progress.json's, by seq) at the moment :attr:`now`."""

    def __init__(self) -> None:
        self.flights: dict[int, Flight] = {}
        self.now = 0.0
        #: An engine runs the batch (else nothing is in flight: a dead one's 'processing' rows
        #: are pending to the next run, as the counts say).
        self.engine = True
        self._shown: dict[int, Row] = {}  # the rows on screen this changed, by index

    def set(self, flights: dict[int, Flight], now: float, engine: bool = True) -> bool:
        """The items in flight are ``flights`` at ``now`` (``engine``: an engine runs the batch);
        True when a running item's time changed (its place in "slowest first" may have)."""
        before = self.running_times()
        self.flights, self.now, self.engine = flights, now, engine
        return self.running_times() != before

    @property
    def seqs(self) -> frozenset[int]:
        """The items in flight: what the In flight tab lists while an engine runs."""
        return frozenset(self.flights)

    @property
    def listed(self) -> frozenset[int] | None:
        """The items the In flight tab lists: those in flight, none when no engine runs ("In
        flight 0" listed a dead engine's 8 rows); None: the store's 'processing' rows (nothing
        read of live_progress.json yet)."""
        return self.seqs if self.flights or not self.engine else None

    def row(self, row: Row) -> Row:
        """``row`` as it is shown now: an item the store says is 'processing' as running or
        queued when live_progress.json has it in flight."""
        # An item handed out is 'pending' in the store until the engine's next commit: in
        # flight all the same (queued, or already running).
        if row.status in ("processing", "pending") and (flight := self.flights.get(row.seq)) is not None:
            return in_flight(row, flight, self.now)
        return row

    def running_times(self) -> dict[int, float]:
        """How long each running item has run at :attr:`now` (seconds, by seq), as shown."""
        return {seq: s for seq, flight in self.flights.items() if (s := flight.running_s(self.now)) is not None}

    def changed_lines(self, rows: Iterable[tuple[int, Row | None]]) -> list[int]:
        """The indexes among ``rows`` (index, row as read) whose line changed since the last
        call: a row in flight that is shown differently, or one no longer in flight."""
        shown = {}
        for index, row in rows:
            if row is not None and (as_shown := self.row(row)) is not row:
                shown[index] = as_shown
        before, self._shown = self._shown, shown
        return [index for index in before.keys() | shown.keys() if before.get(index) != shown.get(index)]
