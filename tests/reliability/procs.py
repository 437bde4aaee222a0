"""Processors for the reliability suite (``--call tests/reliability/procs.py:NAME``)."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any


def _log_start(item: Any) -> None:
    """One line per execution start in $BTUI_TEST_EXEC_LOG (one O_APPEND write: no tearing)."""
    path = os.environ.get("BTUI_TEST_EXEC_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{item.seq} {item.attempt} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _unit(seq: int) -> float:
    """A stable pseudo-random number in [0, 1) for an item (same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(str(seq).encode(), digest_size=8).digest(), "big") / 2**64


def work(item: Any) -> dict[str, Any]:
    """Logs its start, works 2-12 ms (no time with $BTUI_TEST_UNPACED set), returns a result
    derived from the item."""
    _log_start(item)
    if not os.environ.get("BTUI_TEST_UNPACED"):
        time.sleep(0.002 + 0.01 * _unit(item.seq))
    return {"seq": item.seq, "line": item.data, "double": item.seq * 2}


def flaky30(item: Any) -> dict[str, Any]:
    """30% of the items fail their first attempt with ConnectionError (transient: retried)."""
    if item.attempt == 1 and _unit(item.seq) < 0.3:
        raise ConnectionError(f"connection reset by peer on {item.seq}")
    return {"seq": item.seq, "attempt": item.attempt}


def slow(item: Any) -> dict[str, Any]:
    """Logs its start with its pid, then sleeps 0.3 s: long enough to be caught running."""
    _log_start(item)
    time.sleep(0.3)
    return {"seq": item.seq, "pid": os.getpid()}


def paced(item: Any) -> dict[str, Any]:
    """50 ms per item, fails items with seq % 7 == 3 (to have failed items to retry). With
    $BTUI_TEST_HOLD set, items from seq $BTUI_TEST_HOLD_FROM on first wait until that
    file exists (a gate: what a test sends meanwhile finds them not yet run), then take no time."""
    hold = os.environ.get("BTUI_TEST_HOLD")
    if hold and item.seq >= int(os.environ.get("BTUI_TEST_HOLD_FROM", "0")):
        while not os.path.exists(hold):
            time.sleep(0.01)
    else:
        time.sleep(0.05)
    if item.seq % 7 == 3 and item.attempt == 1:
        raise ValueError(f"bad value in {item.seq}")
    return {"seq": item.seq}


def echo(item: Any) -> dict[str, Any]:
    """Returns the item's data as given (used with hostile records)."""
    return {"data": item.data, "key": item.key}
