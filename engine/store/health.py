"""Whether a batch's item store is sound: what ``show``, ``check`` and ``recover`` ask first."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .connection import StoreBusy, StoreError, StoreLinked, StoreUnreachable, busy
from .items import ItemStore


def store_is_healthy(path: Path, budget_s: float | None = None) -> bool:
    """Whether items.db opens and passes SQLite's quick check.

    ``budget_s`` bounds the check (it reads the whole file: seconds on a cold 1M-item batch):
    past it, the check stops and only what it read so far counts. A view (``show``) uses that;
    ``recover`` and ``check`` do not. A store that cannot be read from here but is not known to
    be damaged (no permission, a read-only folder) raises
    :class:`~.store.connection.StoreUnreachable` rather than answering False, and one another
    process holds locked, :class:`~.store.connection.StoreBusy`.
    """
    try:
        store = ItemStore.open_readonly(path)
    except (StoreUnreachable, StoreBusy, StoreLinked):
        raise  # not known damaged: the caller says why it cannot be read
    except (StoreError, sqlite3.Error, OSError):
        return False
    cut = False
    if budget_s is not None:
        deadline = time.monotonic() + budget_s

        def over() -> int:
            nonlocal cut
            cut = time.monotonic() > deadline
            return int(cut)

        store.conn.set_progress_handler(over, 10_000)
    try:
        try:
            rows = store.conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.OperationalError:
            if not cut:
                raise
            rows = [("ok",)]  # nothing wrong in the part it had time to read
        store.conn.set_progress_handler(None, 0)
        store.counts()
    except StoreBusy:
        raise
    except (StoreError, sqlite3.Error) as exc:
        if busy(exc):
            raise StoreBusy.of(path, exc) from None
        return False
    finally:
        store.close()
    return [tuple(r) for r in rows] == [("ok",)]


__all__ = ["store_is_healthy"]
