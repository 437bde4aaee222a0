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
