"""Retries due about together go out together (engine/dispatch.py RETRY_GATHER_S), never before
their backoff ends.

Each retry went out as its own backoff ended: the jitter spreads them, so 6,000 retries of a
batch took 9,400 turns of the runner's loop, in chunks of one or two items (3.8 s more of the
engine's CPU than the same items without retries). A retry may now start up to a twentieth of
its backoff late (50 ms at most), with every retry whose backoff is over by then."""

from __future__ import annotations

from typing import Any

import pytest

from batchtui.engine.config import BatchConfig
from batchtui.engine.dispatch import RETRY_GATHER_S, Dispatcher
from batchtui.engine.processors import Item, python_spec

from .test_control_holds import PROCS


def dispatcher(**config: Any) -> Dispatcher:
    # No pending item left: what goes out is the retries.
    return Dispatcher(BatchConfig(**config), python_spec(f"{PROCS}:noop"), "/b", lambda after, n: [], lambda: None)


def item(seq: int) -> Item:
    return Item(seq, str(seq), str(seq), 2, "/b")


def taken(d: Dispatcher, now: float, room: int = 100) -> list[list[int]]:
    return [[i.seq for i in chunk] for chunk in d.take(now, room, 100, set()).chunks]


def test_retries_due_within_the_window_go_out_in_one_chunk() -> None:
    d = dispatcher()
    t = 1000.0
    for seq, backoff in enumerate([2.0, 2.01, 2.02, 2.049, 2.06]):
        d.schedule_retry(item(seq), t + backoff, t)
    first = t + 2.0 + RETRY_GATHER_S  # the first one's backoff over, and its lateness
    assert d.retries[0].late == RETRY_GATHER_S
    assert d.next_event(t + 2.0, False) == pytest.approx(RETRY_GATHER_S)
    assert taken(d, t + 2.0) == [] and taken(d, first - 0.001) == []
    assert taken(d, first) == [[0, 1, 2, 3]]  # the one due at +2.06 is not: never early
    assert d.next_event(first, False) == pytest.approx(2.06 - 2.0)
    assert taken(d, t + 2.06) == []
    assert taken(d, t + 2.06 + RETRY_GATHER_S) == [[4]]


def test_a_short_backoff_is_late_by_a_twentieth_of_it_and_none_not_at_all() -> None:
    d = dispatcher()
    t = 50.0
    d.schedule_retry(item(1), t + 0.2, t)
    d.schedule_retry(item(2), t, t)  # --backoff 0: at once
    assert d.retries[0].late == 0.0 and taken(d, t) == [[2]]
    (late,) = d.retries
    assert late.late == pytest.approx(0.2 / 20)
    assert taken(d, t + 0.2) == [] and taken(d, late.ready + late.late) == [[1]]


def test_room_still_bounds_the_retries_taken() -> None:
    d = dispatcher()
    t = 7.0
    for seq in range(10):
        d.schedule_retry(item(seq), t + 1.0 + seq / 1000, t)
    at = t + 1.0 + RETRY_GATHER_S
    assert taken(d, at, room=4) == [[0, 1, 2, 3]]
    # The others go together once the first of them is as late (its backoff ended 4 ms after).
    assert taken(d, at, room=100) == []
    assert taken(d, at + 0.005, room=100) == [[4, 5, 6, 7, 8, 9]]
