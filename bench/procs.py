"""Processors for the benchmarks (``--call bench/procs.py:noop``)."""

from __future__ import annotations

import os
import time
from typing import Any


def noop(item: Any) -> None:
    return None


def fail_every_50(item: Any) -> None:
    """A no-op that raises for every 50th item (seq % 50 == 0), so the error views have content."""
    if item.seq % 50 == 0:
        raise ValueError(f"bench failure on item {item.seq}")


def sleepy(item: Any) -> None:
    """Sleeps 20 ms: a batch that keeps its engine running while it is watched."""
    time.sleep(0.02)


_SPIN = int(os.environ.get("BENCH_SPIN", "0"))


def spin(item: Any) -> None:
    """Pure Python work: $BENCH_SPIN turns of a loop (the bench calibrates it to --ms)."""
    x = 0
    for i in range(_SPIN):
        x += i


_NAP_S = float(os.environ.get("BENCH_NAP_S", "0.01"))


def nap(item: Any) -> None:
    """Sleeps $BENCH_NAP_S seconds (10 ms by default): an item whose time is all waiting."""
    time.sleep(_NAP_S)


def fail_most(item: Any) -> None:
    """Fails 60% of the items (seq % 5 is 1, 2 or 3) with a ValueError naming the item."""
    if item.seq % 5 in (1, 2, 3):
        raise ValueError(f"bad record {item.seq}")


def flaky_once(item: Any) -> None:
    """Every 10th item's first attempt fails with a ConnectionError (transient: retried)."""
    if item.seq % 10 == 4 and item.attempt == 1:
        raise ConnectionError("peer reset")
