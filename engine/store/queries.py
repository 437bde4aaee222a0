"""Read-only item queries: the one store API the views (the TUI, the CLI's reports) use.

A view opens :class:`ItemQueries` on a batch's ``items.db`` and asks it for counts, pages of
rows, one item with its attempts, or every row of an export, narrowed by an
:class:`ItemFilter`. The filter is a plain value: the items table keeps one per view, and the
same object (in a :class:`Selection`, engine/store/selection.py) says which items a bulk action
applies to. No view writes SQL or opens SQLite
itself; every error reading the store comes out as a :class:`StoreError`.

The functions that take a connection are the queries themselves; the engine's
:class:`~.items.ItemStore` answers its views' reads with them too, so there is one SQL text
per question.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple

import orjson

from ..errors import ErrorInfo
from ..files import WriteFailed
from ..grouping import group_id
from ..models import MAX_SEQ, Counts, ErrorGroup
from .connection import (
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreLinked,
    StoreUnreachable,
    busy,
    connect_readonly,
    missing,
)
from .keyset import Anchors
from .schema import ITEM_COLUMNS, STATUSES, check_version, has_slowest_index
from .selected import (
    count_selected,
    sample_selected,
    selected_among,
    selected_counts,
    selected_seqs,
    unretriable,
    unretriable_types,
)
from .selection import ACTION_STATUSES, EVERYTHING, ItemFilter, Selection, selection_condition
from .selection import where as filter_where
from .slowest import slowest_page

__all__ = [
    "ACTION_STATUSES",
    "ITEM_COLUMNS",
    "ORDERS",
    "STATUSES",
    "AttemptRow",
    "ItemDetail",
    "ItemFilter",
    "ItemQueries",
    "ItemRow",
    "Selection",
    "StoreBusy",
    "StoreCorrupt",
    "StoreError",
    "StoreLinked",
    "StoreUnreachable",
    "selection_condition",
]

_COLUMNS: Final = ", ".join(ITEM_COLUMNS)
#: Rows read per query when streaming every row (an export): memory stays flat.
_STREAM_PAGE: Final = 2000


class AttemptRow(NamedTuple):
    """One attempt of an item (``attempts`` table)."""

    seq: int
    attempt: int
    status: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: ErrorInfo | None


@dataclass(slots=True)
class ItemRow:
    """A full item row, for views (show, export, the TUI's table and detail screen)."""

    seq: int
    key: str
    data: Any
    kind: str
    status: str
    attempts: int
    error_type: str | None
    error_category: str | None
    error_message: str | None
    error_detail: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    cost: float | None
    result: Any

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ITEM_COLUMNS}


class ItemDetail(NamedTuple):
    """One item and every attempt of it, oldest first."""

    row: ItemRow
    attempts: list[AttemptRow]


# -- the queries, on a connection --------------------------------------------------------------


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    # The \udcXX escapes of a file name that is not UTF-8 (enqueue._data_json), which orjson
    # refuses: for a view, the name with those bytes shown as \xNN, as in the item's key.
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def item_row(values: Sequence[Any]) -> ItemRow:
    """An :class:`ItemRow` from the values of :data:`ITEM_COLUMNS`, its JSON parsed."""
    v = list(values)
    v[2] = _loads(v[2])
    v[14] = _loads(v[14])
    return ItemRow(*v)


def size(conn: sqlite3.Connection) -> int:
    """Rows in the whole store. seq is dense from 0 (enqueue), the invariant :func:`page`'s
    unfiltered range scan also relies on: MAX(seq)+1 is one index lookup where COUNT(*) scans
    (about 20 ms on 1M rows)."""
    return int(conn.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM items").fetchone()[0])


def status_counts(conn: sqlite3.Connection) -> Counts:
    """Items by status, and the total."""
    c = Counts()
    for status, n in conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status"):
        setattr(c, status, n)
    c.total = c.pending + c.processing + c.complete + c.failed + c.skipped
    return c


def count(conn: sqlite3.Connection, f: ItemFilter) -> int:
    """Items the filter keeps."""
    where, args = filter_where(f)
    return int(conn.execute(f"SELECT COUNT(*) FROM items{where}", args).fetchone()[0])


#: The orders a view can show items in: name -> ORDER BY (seq last, so pages never overlap).
#: "duration" and "tries" put the slowest and most-tried first (NULLs, not run yet, last).
#: "duration" is the one a view shows (:func:`shown_duration`): no column, so its entry only
#: says what it is; :mod:`.slowest` reads its pages.
ORDERS: Final[dict[str, str]] = {
    "seq": "seq",
    "duration": "shown duration DESC, seq",
    "tries": "attempts DESC, seq",
}


def shown_duration(status: str, duration_s: float | None, running_s: float | None = None) -> float | None:
    """The duration a view shows of an item (what "duration" orders by): the stored one (the
    last finished try's), except for an item handed out (the store's 'processing': running,
    queued, waiting out a backoff), whose stored one is a previous try's: the time a running
    one has run so far (``running_s``: only a view knows it, from live_progress.json), else none."""
    return running_s if status == "processing" else duration_s


def page(
    conn: sqlite3.Connection,
    f: ItemFilter,
    offset: int,
    limit: int,
    order: str = "seq",
    running: Mapping[int, float] | None = None,
    anchors: Anchors | None = None,
) -> list[ItemRow]:
    """Rows ``offset .. offset+limit`` of the filtered view, in ``order`` (one of :data:`ORDERS`).

    ``running``: how long each running item has run (seconds, by seq), as the view shows it;
    "duration" orders those by it (the other items in flight show none: last). ``anchors``:
    the connection's, so a deep page slowest first costs what the first does (keyset.py)."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r} (one of {', '.join(ORDERS)})")
    if order == "duration":
        return [item_row(r) for r in slowest_page(conn, f, offset, limit, running or {}, anchors)]
    where, args = filter_where(f)
    if order != "seq":
        sql = f"SELECT {_COLUMNS} FROM items{where} ORDER BY {ORDERS[order]} LIMIT ? OFFSET ?"
        return [item_row(r) for r in conn.execute(sql, [*args, limit, offset]).fetchall()]
    if not where:
        # Unfiltered: seq is dense, so a range scan beats OFFSET on a 1M-row table.
        sql = f"SELECT {_COLUMNS} FROM items WHERE seq >= ? ORDER BY seq LIMIT ?"
        return [item_row(r) for r in conn.execute(sql, (offset, limit)).fetchall()]
    sql = f"SELECT {_COLUMNS} FROM items{where} ORDER BY seq LIMIT ? OFFSET ?"
    return [item_row(r) for r in conn.execute(sql, [*args, limit, offset]).fetchall()]


def iter_rows(conn: sqlite3.Connection, f: ItemFilter) -> Iterator[ItemRow]:
    """Every row the filter keeps, in seq order; pages by seq so memory stays flat."""
    where, args = filter_where(f)
    joiner = " AND " if where else " WHERE "
    last = -1
    while True:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM items{where}{joiner}seq > ? ORDER BY seq LIMIT {_STREAM_PAGE}", [*args, last]
        ).fetchall()
        if not rows:
            return
        for r in rows:
            yield item_row(r)
        last = rows[-1][0]


def get_row(conn: sqlite3.Connection, seq: int) -> ItemRow | None:
    if not 0 <= seq <= MAX_SEQ:
        return None  # no such item; SQLite could not even take the number (64-bit integers)
    row = conn.execute(f"SELECT {_COLUMNS} FROM items WHERE seq=?", (seq,)).fetchone()
    return item_row(row) if row else None


def attempts(conn: sqlite3.Connection, seq: int) -> list[AttemptRow]:
    out = []
    for r in conn.execute(
        "SELECT seq, attempt, status, started_at, finished_at, duration_s, error_type, error_category,"
        " error_message, error_detail FROM attempts WHERE seq=? ORDER BY attempt",
        (seq,),
    ):
        err = ErrorInfo(r[6], r[7], r[8] or "", r[9] or "") if r[6] else None
        out.append(AttemptRow(r[0], r[1], r[2], r[3], r[4], r[5], err))
    return out


def error_groups(conn: sqlite3.Connection, limit: int | None = 20) -> list[ErrorGroup]:
    """Failed items grouped by error type and normalized message (each with its id, first and
    last finish time and an example), biggest first; ``limit`` None: every group."""
    rows = conn.execute(
        "SELECT error_type, MAX(error_category), error_group, COUNT(*), MIN(seq), MIN(finished_at),"
        " MAX(finished_at) FROM items WHERE status='failed' GROUP BY error_type, error_group"
        " ORDER BY COUNT(*) DESC, MIN(seq) LIMIT ?",
        (-1 if limit is None else limit,),
    ).fetchall()
    out = []
    for etype, cat, group, n, example, first, last in rows:
        msg = conn.execute("SELECT error_message FROM items WHERE seq=?", (example,)).fetchone()
        out.append(
            ErrorGroup(
                error_type=etype or "unknown",
                category=cat or "item",
                message=group or "",
                count=n,
                example_seq=example,
                example_message=(msg[0] if msg else "") or "",
                id=group_id(etype or "unknown", group or ""),
                first_seen=first,
                last_seen=last,
            )
        )
    return out


def errors_by(conn: sqlite3.Connection, column: str) -> dict[str, int]:
    """Failed items by ``error_type`` or ``error_category``, biggest first."""
    if column not in ("error_type", "error_category"):
        raise ValueError(column)
    return {
        (k or "unknown"): n
        for k, n in conn.execute(
            f"SELECT {column}, COUNT(*) FROM items WHERE status='failed' GROUP BY {column} ORDER BY 2 DESC"
        )
    }


# -- the views' handle -------------------------------------------------------------------------


class ItemQueries:
    """A read-only handle on one ``items.db`` for a view: never blocks or disturbs the engine
    (WAL: each query sees the last commit). Not thread-safe: a thread opens its own.

    Use as a context manager, or :meth:`close` it. Every method raises :class:`StoreError`
    when the store cannot be read (:class:`StoreCorrupt` when it is damaged,
    :class:`StoreUnreachable` when it cannot be read from here but no damage is known).
    """

    def __init__(self, path: Path) -> None:
        """Open ``path`` (raises :class:`StoreError` when it is missing or no batchtui store)."""
        if not path.exists():
            raise missing(path)
        self.path = path
        self._conn = connect_readonly(path)
        self._anchors = Anchors()  # of the slowest-first pages read through this connection
        try:
            check_version(self._conn, path)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ItemQueries:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (sqlite3.Error, WriteFailed) as exc:
            if busy(exc):
                raise StoreBusy.of(self.path, exc) from None
            raise StoreError(f"{self.path}: cannot read the store ({exc})") from None

    def size(self) -> int:
        """Rows in the whole store (filtered or not): what sizes a view's seq column."""
        with self._reading():
            return size(self._conn)

    def counts(self) -> Counts:
        """Items by status, and the total."""
        with self._reading():
            return status_counts(self._conn)

    def count(self, f: ItemFilter = EVERYTHING) -> int:
        """Items the filter keeps (``ItemFilter()``: :meth:`size`, one index lookup)."""
        with self._reading():
            return size(self._conn) if f.is_everything else count(self._conn, f)

    def page(
        self, f: ItemFilter, offset: int, limit: int, order: str = "seq", running: Mapping[int, float] | None = None
    ) -> list[ItemRow]:
        """Rows ``offset .. offset+limit`` of the filtered view, in ``order`` (see :data:`ORDERS`;
        ``running``: the running items' times so far, see :func:`page`)."""
        with self._reading():
            return page(self._conn, f, offset, limit, order, running, self._anchors)

    def has_slowest_index(self) -> bool:
        """Whether the store has the index slowest first is read from (engine/store/slowest.py)."""
        with self._reading():
            return has_slowest_index(self._conn)

    def rows(self, f: ItemFilter = EVERYTHING) -> Iterator[ItemRow]:
        """Every row the filter keeps, in seq order, streamed (an export)."""
        with self._reading():
            yield from iter_rows(self._conn, f)

    def row(self, seq: int) -> ItemRow | None:
        """Item ``seq``, or None when there is none."""
        with self._reading():
            return get_row(self._conn, seq)

    def item(self, seq: int) -> ItemDetail | None:
        """Item ``seq`` with its attempts, or None when there is none."""
        with self._reading():
            row = get_row(self._conn, seq)
            return None if row is None else ItemDetail(row, attempts(self._conn, seq))

    def error_groups(self, limit: int | None = 20) -> list[ErrorGroup]:
        """Failed items grouped by error type and normalized message, with their ids, biggest
        first (``limit`` None: all of them)."""
        with self._reading():
            return error_groups(self._conn, limit)

    def count_selected(self, sel: Selection) -> int:
        """Items the selection holds (counted by SQLite: nothing loaded)."""
        with self._reading():
            return count_selected(self._conn, sel)

    def sample_selected(
        self, sel: Selection, n: int = 5, statuses: Sequence[str] | None = None, *, retriable: bool = False
    ) -> list[tuple[int, str]]:
        """The first ``n`` items of the selection (seq, key), for a confirmation; with
        ``statuses``, only those in them (``retriable``: see :func:`sample_selected`)."""
        with self._reading():
            return sample_selected(self._conn, sel, n, statuses, retriable=retriable)

    def selected_counts(self, sel: Selection) -> Counts:
        """The items of the selection by status, and the total (one query)."""
        with self._reading():
            return selected_counts(self._conn, sel)

    def selected_seqs(
        self, sel: Selection, statuses: Sequence[str] | None = None, *, retriable: bool = False, limit: int
    ) -> list[int] | None:
        """The seqs of ``sel`` an action would change, or None past ``limit`` (:func:`selected_seqs`)."""
        with self._reading():
            return selected_seqs(self._conn, sel, statuses, retriable=retriable, limit=limit)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """The queries made inside see one state of the store (one read transaction), however
        the engine writes meanwhile: a dialog's counts and the items it pins agree."""
        with self._reading():
            self._conn.execute("BEGIN")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")

    def unretriable(self, sel: Selection | None = None) -> int:
        """The items of ``sel`` a retry leaves failed (:func:`unretriable`)."""
        with self._reading():
            return unretriable(self._conn, sel)

    def unretriable_types(self, sel: Selection | None = None) -> dict[str, int]:
        """:meth:`unretriable` by error type, for saying why."""
        with self._reading():
            return unretriable_types(self._conn, sel)

    def selected_among(self, sel: Selection, seqs: Iterable[int]) -> set[int]:
        """Which of the given (visible) seqs the selection holds: one query, for the marks."""
        with self._reading():
            return selected_among(self._conn, sel, seqs)

    def errors_by(self, column: str) -> dict[str, int]:
        """Failed items by ``error_type`` or ``error_category``, biggest first."""
        with self._reading():
            return errors_by(self._conn, column)
