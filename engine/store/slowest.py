"""A page of items in "slowest first" order (``queries.ORDERS["duration"]``) without sorting the store.

The order is the duration a view shows (:func:`~.queries.shown_duration`), longest first, seq
breaking ties, the items that show none last in seq order. That splits a view's items in three:

- finished: not handed out ('processing'), with a stored duration (the last try's), in the
  store's order ``duration_s DESC, seq``;
- running: handed out and running now, by the time they have run so far, which only the view
  knows (live_progress.json's items in flight: a few dozen), so they are sorted here;
- the rest (never run, queued, handed out and not running): by seq, after both.

A page of the first two is a merge: with ``r`` items running, the finished items on rows
``offset .. offset+limit`` of the view are among the finished ones from ``offset - r`` on, so
one read of at most ``limit + r`` of them, merged with the running ones, places every row.

The finished ones are read in order from :data:`~.schema.SLOWEST_INDEX` (one ordered range of
it per status, merged by SQLite): nothing sorted, no table row read but the page's. Where that
cannot be (an old store without the index; a text or error filter, which only the table's rows
answer), the page is the view sorted whole by the duration shown, as it always was, but only
its seqs go through the sort. The index is no part of a new store: every completion would write
an entry in a random place of it, so the engine builds it only when a view asks for this order
(the ``index`` command, engine/operations.py).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

import orjson

from .keyset import Anchors
from .schema import ITEM_COLUMNS, SLOWEST_INDEX_NAME, has_slowest_index
from .selection import ItemFilter
from .selection import where as filter_where

__all__ = ["finished_sql", "slowest_page", "walks_index"]

_COLUMNS: Final = ", ".join(ITEM_COLUMNS)
#: Every status but 'processing' (an item handed out shows no stored duration).
_NOT_HANDED_OUT: Final = ("pending", "complete", "failed", "skipped")


def slowest_page(
    conn: sqlite3.Connection,
    f: ItemFilter,
    offset: int,
    limit: int,
    running: Mapping[int, float],
    anchors: Anchors | None = None,
) -> list[tuple[Any, ...]]:
    """Rows ``offset .. offset+limit`` of the view ``f`` slowest first, as :data:`ITEM_COLUMNS`
    values; ``running``: the running items' times so far (seconds, by seq). One read
    transaction (unless the caller's), so the reads agree however the engine writes.
    ``anchors``: the connection's (engine/store/keyset.py), so a deep page walks no further
    than a shallow one; used only in a transaction begun here (they are checked before it)."""
    if limit <= 0:
        return []
    # A NaN time is none (SQLite binds NaN as NULL): that item shows nothing, with the rest.
    times = {int(seq): s for seq, s in running.items() if s is not None and not math.isnan(s)}
    began = not conn.in_transaction
    if began:
        if anchors is not None:
            anchors.check(conn)
        conn.execute("BEGIN")
    else:
        anchors = None
    try:
        if walks_index(conn, f):
            return _merged_page(conn, f, max(0, offset), limit, times, anchors)
        return _sorted_page(conn, f, max(0, offset), limit, times)
    finally:
        if began:
            conn.execute("COMMIT")


def walks_index(conn: sqlite3.Connection, f: ItemFilter) -> bool:
    """Whether a page of ``f`` is merged from the index (else sorted): a view of the items in
    flight (no finished item in it), or one that narrows by status alone in a store that has
    the index. A filter on anything the index does not hold would read a row for each entry
    walked, in a random order (700k reads for a text found twice among 1M items: several times
    the sort of the rows it keeps)."""
    if f.status == "processing":
        return True
    return f.replace(status=None).is_everything and has_slowest_index(conn)


def _merged_page(
    conn: sqlite3.Connection,
    f: ItemFilter,
    offset: int,
    limit: int,
    times: dict[int, float],
    anchors: Anchors | None,
) -> list[tuple[Any, ...]]:
    moving = _running_rows(conn, f, times)
    finished: list[tuple[Any, int]] = []
    finished_too = f.status != "processing"  # else the view holds no finished item
    start = max(0, offset - len(moving)) if finished_too else 0
    wanted = offset + limit - start
    runs = _Runs(conn, f, times, anchors)
    if finished_too:
        finished = runs.finished(start, wanted)
    placed, above = _merge(start, finished, moving, offset, offset + limit)
    rows = _by_seq(conn, [item for item in placed if isinstance(item, int)])
    page = [rows[item] if isinstance(item, int) else item for item in placed]
    if len(page) == limit or len(finished) == wanted:  # all finished and running items
        return page
    # The finished items end on this page or before it: the rest by seq, after them all.
    if not finished and start > 0:  # the read began past the last finished item: count them
        above = runs.finished_count() + len(moving)
    return page + runs.rest(max(0, offset - above), limit - len(page))


class _Runs:
    """The two ordered runs a merged page reads (see engine/store/keyset.py): the finished
    items from the index, the rest by seq; each read from its anchor when there are anchors
    and the store is quiet, else with OFFSET from its start."""

    def __init__(
        self, conn: sqlite3.Connection, f: ItemFilter, times: dict[int, float], anchors: Anchors | None
    ) -> None:
        self.conn, self.status = conn, f.status
        self.anchors = anchors if anchors is not None and anchors.quiet else None  # see keyset.py
        where, args = filter_where(f)
        blank = (
            "(status <> 'processing' AND duration_s IS NULL"
            " OR status = 'processing' AND seq NOT IN (SELECT value FROM json_each(?)))"
        )
        self._rest_sql = f"FROM items{where}{' AND ' if where else ' WHERE '}{blank}"
        self._rest_args = [*args, _json(times)]
        self._rest_run = ("rest", f, frozenset(times))

    def finished(self, start: int, n: int) -> list[tuple[Any, int]]:
        """``n`` finished items' (duration, seq) from the ``start``-th on."""
        sql = finished_sql(self.status)
        if self.anchors is None:
            return self.conn.execute(f"{sql} LIMIT ? OFFSET ?", (n, start)).fetchall()
        found = self.anchors.seek(("finished", self.status), start, self._finished_hop, self._finished_tail)
        if found is None:
            return []
        at, key = found
        sql = finished_sql(self.status, from_key=True)
        return self.conn.execute(f"{sql} LIMIT :n OFFSET :skip", _key(key, n=n, skip=start - at)).fetchall()

    def finished_count(self) -> int:
        if self.anchors is None:
            return int(self.conn.execute(f"SELECT COUNT(*) FROM ({finished_sql(self.status)})").fetchone()[0])
        return self.anchors.size(("finished", self.status), self._finished_hop, self._finished_tail)

    def _finished_hop(self, key: Any, skip: int) -> Any:
        if key is None:
            return self.conn.execute(f"{finished_sql(self.status)} LIMIT 1 OFFSET ?", (skip,)).fetchone()
        sql = f"{finished_sql(self.status, from_key=True)} LIMIT 1 OFFSET :skip"
        return self.conn.execute(sql, _key(key, skip=skip)).fetchone()

    def _finished_tail(self, key: Any) -> int:
        sql = f"SELECT COUNT(*) FROM ({finished_sql(self.status, from_key=True)})"
        return int(self.conn.execute(sql, _key(key)).fetchone()[0])

    def rest(self, start: int, n: int) -> list[tuple[Any, ...]]:
        """``n`` rows of the items that show no duration, by seq, from the ``start``-th on."""
        sql, args = self._rest_sql, self._rest_args
        if self.anchors is None:
            return self.conn.execute(
                f"SELECT {_COLUMNS} {sql} ORDER BY seq LIMIT ? OFFSET ?", [*args, n, start]
            ).fetchall()
        found = self.anchors.seek(self._rest_run, start, self._rest_hop, self._rest_tail)
        if found is None:
            return []
        at, seq = found
        query = f"SELECT {_COLUMNS} {sql} AND seq >= ? ORDER BY seq LIMIT ? OFFSET ?"
        return self.conn.execute(query, [*args, seq, n, start - at]).fetchall()

    def _rest_hop(self, seq: int | None, skip: int) -> int | None:
        sql, args = self._rest_sql, self._rest_args
        if seq is None:
            row = self.conn.execute(f"SELECT seq {sql} ORDER BY seq LIMIT 1 OFFSET ?", [*args, skip]).fetchone()
        else:
            query = f"SELECT seq {sql} AND seq >= ? ORDER BY seq LIMIT 1 OFFSET ?"
            row = self.conn.execute(query, [*args, seq, skip]).fetchone()
        return None if row is None else int(row[0])

    def _rest_tail(self, seq: int) -> int:
        query = f"SELECT COUNT(*) {self._rest_sql} AND seq >= ?"
        return int(self.conn.execute(query, [*self._rest_args, seq]).fetchone()[0])


def _key(key: tuple[Any, int], **more: int) -> dict[str, Any]:
    """The parameters of :func:`finished_sql` ``from_key``: an entry's (duration, seq)."""
    return {"d": key[0], "s": key[1], **more}


def finished_sql(status: str | None, *, from_key: bool = False) -> str:
    """The ``(duration_s, seq)`` of the finished items (of ``status``; None: of every status),
    in order, from the index: one ordered range of it per status, merged by SQLite.
    ``from_key``: from the entry ``(:d, :s)`` on (itself included): per status, the entries of
    that duration from that seq, then those of a shorter one, each a range the index seeks to,
    so nothing above the key is walked. :d is bound as read from the index, so it compares as
    the index orders (a text duration above every number)."""
    ranges = (" AND duration_s = :d AND seq >= :s", " AND duration_s < :d") if from_key else ("",)
    arms = [
        f"SELECT duration_s, seq FROM items INDEXED BY {SLOWEST_INDEX_NAME}"
        f" WHERE status = '{s}' AND duration_s IS NOT NULL{cond}"
        for s in ((status,) if status else _NOT_HANDED_OUT)
        if s in _NOT_HANDED_OUT  # a literal from the fixed set, never user text
        for cond in ranges
    ]
    return " UNION ALL ".join(arms) + " ORDER BY 1 DESC, 2"


def _sorted_page(
    conn: sqlite3.Connection, f: ItemFilter, offset: int, limit: int, times: dict[int, float]
) -> list[tuple[Any, ...]]:
    """The page of every row of the view sorted by the duration shown (the running items'
    times bound in a CASE): only seqs go through the sort, then the page's rows are read."""
    where, args = filter_where(f)
    if times:
        cases = " ".join("WHEN ? THEN ?" for _ in times)
        shown = f"(CASE WHEN status = 'processing' THEN (CASE seq {cases} END) ELSE duration_s END)"
    else:
        shown = "(CASE WHEN status = 'processing' THEN NULL ELSE duration_s END)"
    sql = f"SELECT seq FROM items{where} ORDER BY {shown} DESC, seq LIMIT ? OFFSET ?"
    order_args = [value for seq, seconds in sorted(times.items()) for value in (seq, seconds)]
    seqs = [r[0] for r in conn.execute(sql, [*args, *order_args, limit, offset]).fetchall()]
    rows = _by_seq(conn, seqs)
    return [rows[seq] for seq in seqs]


def _running_rows(conn: sqlite3.Connection, f: ItemFilter, times: dict[int, float]) -> list[_Running]:
    """The view's running items (the store's 'processing' with a time), slowest first."""
    if not times or f.status not in (None, "processing"):
        return []
    where, args = filter_where(f)
    cond = "status = 'processing' AND seq IN (SELECT value FROM json_each(?))"
    sql = f"SELECT {_COLUMNS} FROM items{where}{' AND ' if where else ' WHERE '}{cond}"
    rows = conn.execute(sql, [*args, _json(times)]).fetchall()
    return sorted((_Running(times[row[0]], row[0], row) for row in rows), key=lambda r: (-r.seconds, r.seq))


class _Running(NamedTuple):
    seconds: float
    seq: int
    row: tuple[Any, ...]


def _merge(
    start: int, finished: Sequence[tuple[Any, int]], moving: Sequence[_Running], first: int, end: int
) -> tuple[list[int | tuple[Any, ...]], int]:
    """Rows ``first .. end`` of the merge of ``finished`` (the finished items from row
    ``start`` of theirs on: (duration, seq)) and ``moving`` (every running item, slowest
    first): the seq of a finished item, the row of a running one. Also the number of rows
    placed (from 0) when the merge ended before ``end``.

    A running item that goes before the first finished one read is placed at ``start`` or
    later, though it may belong before: harmless, since those all belong before ``first``
    (``start`` is ``first`` less the number of running items) unless ``start`` is 0, where
    every place is exact."""
    out: list[int | tuple[Any, ...]] = []
    place, i, j = start, 0, 0
    while place < end and (i < len(finished) or j < len(moving)):
        if j == len(moving) or (i < len(finished) and _before(finished[i], moving[j])):
            item: int | tuple[Any, ...] = finished[i][1]
            i += 1
        else:
            item = moving[j].row
            j += 1
        if place >= first:
            out.append(item)
        place += 1
    return out, place


def _before(done: tuple[Any, int], running: _Running) -> bool:
    """Whether a finished item (duration, seq) goes before a running one: the longer first,
    then the lower seq. SQLite puts text (and blobs) above every number: a duration edited
    into "x" by hand goes first there, and here."""
    duration, seq = done
    if not isinstance(duration, int | float):
        return True
    return bool(duration > running.seconds or (duration == running.seconds and seq < running.seq))


def _by_seq(conn: sqlite3.Connection, seqs: list[int]) -> dict[int, tuple[Any, ...]]:
    if not seqs:
        return {}
    sql = f"SELECT {_COLUMNS} FROM items WHERE seq IN (SELECT value FROM json_each(?))"
    return {row[0]: row for row in conn.execute(sql, (_json(seqs),)).fetchall()}


def _json(values: Any) -> str:
    return orjson.dumps(sorted(values)).decode()
