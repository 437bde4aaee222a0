"""Deep pages of the slowest-first order without walking the rows above them: anchors.

A page at row ``k`` read with ``LIMIT n OFFSET k`` walks ``k`` entries first, so the last page
of a 1M-item view cost 200 times the first. :class:`Anchors` keeps, for one reading
connection, the key of every :data:`STEP`-th entry of the two ordered runs a slowest-first
page is made of (engine/store/slowest.py):

- ``finished``: the finished items of a status (None: of every status but 'processing'), in
  the order of :data:`~.schema.SLOWEST_INDEX`, by their key ``(duration_s, seq)``;
- ``rest``: the items of the view that show no duration, by seq (their key).

A page then starts at the anchor at or before it and walks at most STEP entries to its first
row (a keyset seek: the index is entered at the key, not at its start). Anchors not known yet
are found by hops of STEP entries from the last one known (``LIMIT 1 OFFSET STEP``, in C), so
the first read at some depth walks there once, as before, and every read after it (scrolling
on, coming back, the same page read again) costs what the first page does.

Anchors hold for one state of the store: every read checks ``PRAGMA data_version`` (changed
by any commit of another connection, such as the engine's) and drops them all when it moved.
Hopping costs about twice what one OFFSET read does (each hop merges the two ranges a key
starts), so anchors are found only while the store is quiet (:attr:`Anchors.quiet`: unchanged
since the read before); a read just after a change reads with OFFSET, as before. So on a
finished batch deep pages cost what the first does from the third read on; on a batch the
engine is writing they cost what an OFFSET does, since every group commit moves the rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

__all__ = ["STEP", "Anchors"]

#: Entries between two anchors: what a page may walk before its first row.
STEP: Final = 512
#: Runs kept at once (the views read through one connection: a few statuses).
_MAX_RUNS: Final = 16

#: ``hop(key, skip)``: the key of the entry ``skip`` entries past ``key`` (from ``key``
#: itself, inclusive; None: the run's first entry), or None past the end.
Hop = Callable[[Any, int], Any]
#: ``tail(key)``: how many entries the run holds from ``key`` on (inclusive).
Tail = Callable[[Any], int]


class Anchors:
    """Anchors of the ordered runs read through one connection (see the module docstring)."""

    def __init__(self) -> None:
        self.quiet = False  # the store has not changed since the read before (see check)
        self._version: int | None = None
        self._keys: dict[Any, list[Any]] = {}  # run -> key of entry i * STEP
        self._sizes: dict[Any, int] = {}  # run -> its length, once walked to its end

    def check(self, conn: sqlite3.Connection) -> None:
        """Drop every anchor when the store changed since the last read. Called outside a
        transaction, before the read's snapshot begins: an unchanged version then means no
        commit came between this read's snapshot and the last one's."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        self.quiet = version == self._version
        if not self.quiet:
            self._version = version
            self._keys.clear()
            self._sizes.clear()

    def seek(self, run: Any, position: int, hop: Hop, tail: Tail) -> tuple[int, Any] | None:
        """The anchor at or before ``position`` of ``run`` as (its position, its key); None when
        the run ends at or before ``position``."""
        size = self._sizes.get(run)
        if size is not None and position >= size:
            return None
        keys = self._keys.get(run)
        if keys is None:
            if len(self._keys) >= _MAX_RUNS:
                oldest = next(iter(self._keys))
                del self._keys[oldest]
                self._sizes.pop(oldest, None)  # with its anchors: it is walked again if read
            first = hop(None, 0)
            if first is None:
                self._sizes[run] = 0
                return None
            keys = self._keys[run] = [first]
        want = position // STEP
        while len(keys) <= want and run not in self._sizes:
            key = hop(keys[-1], STEP)
            if key is None:
                self._sizes[run] = (len(keys) - 1) * STEP + tail(keys[-1])
                break
            keys.append(key)
        size = self._sizes.get(run)
        if size is not None and position >= size:
            return None
        at = min(want, len(keys) - 1)
        return at * STEP, keys[at]

    def size(self, run: Any, hop: Hop, tail: Tail) -> int:
        """How many entries ``run`` holds (walked to its end once, by hops)."""
        self.seek(run, 1 << 62, hop, tail)  # past every entry: hops to the end, which it notes
        return self._sizes[run]
