"""What an item handed out is doing now: running (on which try, for how long) or queued.

The store marks every item handed out 'processing' (after a second out, so quick items never
cost a write), the queued ones too, and its ``attempts`` counts the finished tries only. What
the item does now is in live_progress.json's ``in_flight``: its try, when it really began and
whether it waits in a queue. The items table and the item detail both read it from here, so a
row and its detail never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchtui.engine.batchdir import BatchDir, parse_iso
from batchtui.engine.errors import BatchtuiError
from batchtui.engine.liveness import engine_status
from batchtui.engine.models import ACTIVE_STATES, LiveProgress
from batchtui.engine.summary import stored_counts

__all__ = ["Flight", "flights", "item_flight", "nothing_runs"]


@dataclass(frozen=True, slots=True)
class Flight:
    """One item in flight as live_progress.json tells it."""

    attempt: int
    """The try it is on (queued: the try it will be on)."""
    queued: bool
    """Handed out, not started: waiting for a worker."""
    since: float | None
    """When it began to run (epoch seconds); None while queued or when unreadable."""
    started_at: str
    """``since`` as written (queued: when it was handed out)."""

    @property
    def word(self) -> str:
        """What the item does, in one word (the status column's and the detail's)."""
        return "queued" if self.queued else "running"

    def running_s(self, now: float) -> float | None:
        """How long it has run at ``now`` (epoch seconds); None while queued."""
        return None if self.since is None else max(0.0, now - self.since)


def flights(live: LiveProgress | None) -> dict[int, Flight]:
    """The items in flight by seq, from ``live`` (none when the batch is not active: what
    the file says then is what was in flight when its engine ended)."""
    if live is None or live.state not in ACTIVE_STATES:
        return {}
    out = {}
    for f in live.in_flight:
        since = None
        if not f.queued:
            try:
                since = parse_iso(f.started_at)
            except ValueError:
                since = None
        out[f.seq] = Flight(attempt=f.attempt, queued=f.queued, since=since, started_at=f.started_at)
    return out


def nothing_runs(live: LiveProgress, held: bool, batch: BatchDir | None = None) -> LiveProgress:
    """``live`` as a view shows it: the figures of an active batch that no engine holds any
    more (killed: INTERRUPTED) with nothing running, queued or waiting, and no ETA. The file
    still says what was in flight when its engine died, and the dashboard said "running 3/3",
    an ETA and items running for 19s, 20s... on a batch nothing ran (``held``: an engine holds
    the batch, or runs in this app). Its counts are then ``batch``'s items.db's, when it can be
    read: a killed engine commits before it writes live_progress.json, and its last write
    can be a commit behind (the dashboard showed 36/200 where `show` and `ls` said 44)."""
    if held or live.state not in ACTIVE_STATES:
        return live
    counts = None if batch is None else stored_counts(batch)
    return (live if counts is None else live.model_copy(update={"counts": counts})).ended(live.state, live.halt_reason)


def item_flight(batch: BatchDir, seq: int, now: float) -> tuple[Flight | None, bool]:
    """What item ``seq`` does now if an engine runs it (live_progress.json's in-flight list),
    and whether an engine holds the batch (False as well when its files cannot be read)."""
    try:
        live = batch.read_live()
        held = engine_status(batch, live=live, now=now).held
    except (BatchtuiError, OSError, ValueError):
        return None, False
    return (flights(live).get(seq) if held else None), held
