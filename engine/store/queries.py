"""Read-only item queries: the one store API the views (the TUI, the CLI's reports) use.

A view opens :class:`ItemQueries` on a batch's ``items.db`` and asks it for counts, pages of
rows, one item with its attempts, or every row of an export, narrowed by an
:class:`ItemFilter`. The filter is a plain value: the items table keeps one per view, and the
same object says which items a bulk action applies to. No view writes SQL or opens SQLite
itself; every error reading the store comes out as a :class:`StoreError`.

The functions that take a connection are the queries themselves; the engine's
:class:`~.items.ItemStore` answers its views' reads with them too, so there is one SQL text
per question.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson

from ..errors import ErrorInfo, group_id
from ..files import WriteFailed
from ..models import MAX_SEQ, Counts, ErrorGroup
from .connection import StoreCorrupt, StoreError, connect_readonly, recover_hint
from .schema import ITEM_COLUMNS, STATUSES, check_version

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
    "StoreCorrupt",
    "StoreError",
]

_COLUMNS: Final = ", ".join(ITEM_COLUMNS)
#: Rows read per query when streaming every row (an export): memory stays flat.
_STREAM_PAGE: Final = 2000


@dataclass(frozen=True, slots=True)
class AttemptRow:
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


@dataclass(frozen=True, slots=True)
class ItemDetail:
    """One item and every attempt of it, oldest first."""

    row: ItemRow
    attempts: list[AttemptRow]


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """Which items a view shows or an action applies to: every field given narrows (AND).

    ``status`` is one of :data:`STATUSES`; ``error_type`` matches exactly; ``error_group`` is
    a group's id (8 hex digits, :func:`~batchtui.engine.errors.group_id`); ``text`` is a
    case-insensitive substring of the key or the error message, ``match`` of the error message
    only (``%`` and ``_`` are plain characters in both); ``key_glob`` is a glob on the key
    (``*``, ``?``, ``[...]``, case-sensitive); ``seqs`` keeps only those items (an empty set:
    none); ``seq_ranges`` only the seqs of those inclusive ranges (kept sorted and merged). An
    empty string means "not given". ``ItemFilter()`` is every item.
    """

    status: str | None = None
    error_type: str | None = None
    error_group: str | None = None
    text: str | None = None
    seqs: frozenset[int] | None = None
    match: str | None = None
    key_glob: str | None = None
    seq_ranges: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        for name in ("status", "error_type", "error_group", "text", "match", "key_glob"):
            value = getattr(self, name)
            if value == "":
                object.__setattr__(self, name, None)
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text, not {type(value).__name__}")
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r} (one of {', '.join(STATUSES)})")
        if self.error_group is not None and not _GROUP_ID.fullmatch(self.error_group):
            raise ValueError(f"error group {self.error_group!r} is not a group id (8 hex digits)")
        if self.seqs is not None:  # a set or list given: frozen, so the filter stays hashable
            object.__setattr__(self, "seqs", frozenset(self.seqs))
        if self.seq_ranges is not None:
            object.__setattr__(self, "seq_ranges", merge_ranges(self.seq_ranges))

    @property
    def is_everything(self) -> bool:
        """True when the filter narrows nothing."""
        return self == _EVERYTHING

    def replace(self, **changes: Any) -> ItemFilter:
        """A copy with ``changes`` (None clears a field)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The fields given, as JSON values (``seqs`` a sorted list, ``seq_ranges`` pairs)."""
        out: dict[str, Any] = {}
        for name in _FILTER_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "seqs":
                value = sorted(value)
            elif name == "seq_ranges":
                value = [list(r) for r in value]
            out[name] = value
        return out

    @classmethod
    def from_json(cls, obj: Any) -> ItemFilter:
        """The filter :meth:`to_json` gave; ValueError saying what is wrong with anything else."""
        if not isinstance(obj, dict):
            raise ValueError(f"a filter must be an object, not {type(obj).__name__}")
        unknown = sorted(set(obj) - set(_FILTER_FIELDS))
        if unknown:
            raise ValueError(f"unknown filter field(s): {', '.join(map(str, unknown))}")
        fields = dict(obj)
        if fields.get("seqs") is not None:
            seqs = fields["seqs"]
            if not isinstance(seqs, list):
                raise ValueError("filter seqs must be a list of item numbers")
            fields["seqs"] = frozenset(_seq(s) for s in seqs)
        if fields.get("seq_ranges") is not None:
            fields["seq_ranges"] = _ranges_from_json(fields["seq_ranges"], "seq_ranges")
        return cls(**fields)


_EVERYTHING: Final = ItemFilter()
#: The statuses of the items each bulk action changes (ItemStore.retry_selected, skip_selected,
#: prioritize): what its confirmation counts and samples.
ACTION_STATUSES: Final[dict[str, tuple[str, ...]]] = {
    "retry": ("failed", "skipped"),
    "skip": ("pending", "processing", "failed"),
    "prioritize": ("pending", "failed"),
}
_FILTER_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ItemFilter))
_GROUP_ID: Final = re.compile(r"[0-9a-f]{8}")
#: Up to this many ranges go into a query as ``seq BETWEEN`` terms; more as one JSON array.
_INLINE_RANGES: Final = 16

Range = tuple[int, int]


def merge_ranges(ranges: Iterable[Sequence[int]]) -> tuple[Range, ...]:
    """Inclusive seq ranges sorted and merged (overlapping or adjacent ones become one)."""
    spans = []
    for r in ranges:
        a, b = (int(r[0]), int(r[1])) if len(r) == 2 else (-1, -1)
        if not 0 <= a <= b <= MAX_SEQ:
            raise ValueError(f"bad seq range {list(r)!r} (two item numbers, the first not above the second)")
        spans.append((a, b))
    spans.sort()
    out: list[Range] = []
    for a, b in spans:
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def _subtract(ranges: tuple[Range, ...], a: int, b: int) -> tuple[Range, ...]:
    """``ranges`` without the seqs ``a..b``."""
    out: list[Range] = []
    for lo, hi in ranges:
        if hi < a or lo > b:
            out.append((lo, hi))
            continue
        if lo < a:
            out.append((lo, a - 1))
        if hi > b:
            out.append((b + 1, hi))
    return tuple(out)


def _seq(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ValueError(f"bad item number {value!r}")
    return value


def _ranges_from_json(value: Any, what: str) -> tuple[Range, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of [first, last] pairs")
    pairs = []
    for r in value:
        if not isinstance(r, list) or len(r) != 2:
            raise ValueError(f"{what}: {r!r} is not a [first, last] pair")
        pairs.append((_seq(r[0]), _seq(r[1])))
    return merge_ranges(pairs)


@dataclass(frozen=True, slots=True)
class Selection:
    """The items a bulk action (retry, skip, prioritize) applies to, without a set of seqs.

    The union of ``views`` (filters: the dashboard's ``a`` adds the current view; a CLI
    selection is one view) minus ``excluded`` (seqs unmarked after an ``a``), and ``ranges``
    (seqs marked one by one or as a range). Ranges are sorted, merged and inclusive, so marking
    every item of a 300k-item view costs one filter, and marking a run of rows one range. The
    methods return a new Selection; :func:`_selection_where` turns it into the one SQL that
    counts it, samples it, draws its marks and applies it, in the engine and offline alike.
    """

    views: tuple[ItemFilter, ...] = ()
    ranges: tuple[Range, ...] = ()
    excluded: tuple[Range, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "ranges", merge_ranges(self.ranges))
        object.__setattr__(self, "excluded", merge_ranges(self.excluded) if self.views else ())

    @classmethod
    def of(cls, f: ItemFilter) -> Selection:
        """The items of one filter (a CLI selection)."""
        return cls(views=(f,))

    @property
    def is_empty(self) -> bool:
        """Nothing marked (no view, no range): whatever the store holds, no item is selected."""
        return not self.views and not self.ranges

    def mark(self, seq: int) -> Selection:
        return self.mark_range(seq, seq)

    def unmark(self, seq: int) -> Selection:
        ranges = _subtract(self.ranges, seq, seq)
        excluded = merge_ranges((*self.excluded, (seq, seq))) if self.views else ()
        return Selection(self.views, ranges, excluded)

    def toggle(self, seq: int, marked: bool) -> Selection:
        """Flip item ``seq``: ``marked`` says whether it is selected now (``selected_among``)."""
        return self.unmark(seq) if marked else self.mark(seq)

    def mark_range(self, a: int, b: int) -> Selection:
        """Mark the seqs ``a..b`` (either order), also any unmarked after an ``a``."""
        lo, hi = min(a, b), max(a, b)
        return Selection(self.views, merge_ranges((*self.ranges, (lo, hi))), _subtract(self.excluded, lo, hi))

    def add_view(self, f: ItemFilter) -> Selection:
        """Mark every item of ``f`` (the ``a`` key): by query, nothing loaded. Every exclusion
        is dropped: "every item of the view" includes those unmarked before (which of them are
        in ``f`` is the store's to say, so the exclusions of other views go too)."""
        views = self.views if f in self.views else (*self.views, f)
        return Selection(views, self.ranges, ())

    def to_json(self) -> dict[str, Any]:
        """The selection as JSON (ControlCommand.select); :meth:`from_json` reads it back."""
        out: dict[str, Any] = {"views": [v.to_json() for v in self.views], "ranges": [list(r) for r in self.ranges]}
        if self.excluded:
            out["excluded"] = [list(r) for r in self.excluded]
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Selection:
        """A selection from JSON (it comes from control.jsonl: anything may be in it); ValueError
        with a clear message on anything that is not one."""
        if not isinstance(obj, dict):
            raise ValueError(f"a selection must be an object, not {type(obj).__name__}")
        unknown = sorted(set(obj) - {"views", "ranges", "excluded"})
        if unknown:
            raise ValueError(f"unknown selection field(s): {', '.join(map(str, unknown))}")
        views = obj.get("views", [])
        if not isinstance(views, list):
            raise ValueError("selection views must be a list of filters")
        return cls(
            tuple(ItemFilter.from_json(v) for v in views),
            _ranges_from_json(obj.get("ranges", []), "ranges"),
            _ranges_from_json(obj.get("excluded", []), "excluded"),
        )


def _seq_in_ranges(ranges: tuple[Range, ...], column: str = "seq") -> tuple[str, list[Any]]:
    """A condition: ``column`` in one of ``ranges`` (few: BETWEEN terms the index answers;
    many: one JSON array, each range an index range scan)."""
    if not ranges:
        return "0", []
    if len(ranges) <= _INLINE_RANGES:
        return "(" + " OR ".join(f"{column} BETWEEN ? AND ?" for _ in ranges) + ")", [v for r in ranges for v in r]
    sql = (
        f"{column} IN (SELECT i.seq FROM json_each(?) AS r CROSS JOIN items AS i"
        " WHERE i.seq BETWEEN json_extract(r.value, '$[0]') AND json_extract(r.value, '$[1]'))"
    )
    return sql, [orjson.dumps(ranges).decode()]


def _clauses(f: ItemFilter) -> tuple[list[str], list[Any]]:
    """The filter's conditions (ANDed) and their parameters."""
    clauses: list[str] = []
    args: list[Any] = []
    if f.status:
        # A literal (from the fixed set, never user text) lets SQLite use the partial index of
        # failed items without visiting rows; a bound parameter would not, and every refresh of
        # a large batch's view would pay for the rows visited.
        if f.status not in STATUSES:
            raise ValueError(f"unknown status {f.status!r}")
        clauses.append(f"status = '{f.status}'")
    if f.error_type:
        clauses.append("error_type = ?")
        args.append(f.error_type)
    if f.error_group:
        # The id is a hash of (type, normalized message): SQLite computes it (a function of the
        # connection, cached per pair) only for rows that have an error.
        clauses.append("error_type IS NOT NULL AND batchtui_group_id(error_type, error_group) = ?")
        args.append(f.error_group)
    if f.text:
        clauses.append("(key LIKE ? ESCAPE '\\' OR error_message LIKE ? ESCAPE '\\')")
        pattern = _like(f.text)
        args += [pattern, pattern]
    if f.match:
        clauses.append("error_message LIKE ? ESCAPE '\\'")
        args.append(_like(f.match))
    if f.key_glob:
        clauses.append("key GLOB ?")
        args.append(f.key_glob)
    if f.seqs is not None:
        # One JSON array, whatever the number of seqs (SQLite caps a statement's parameters).
        clauses.append("seq IN (SELECT value FROM json_each(?))")
        args.append(orjson.dumps(sorted(f.seqs)).decode())
    if f.seq_ranges is not None:
        sql, more = _seq_in_ranges(f.seq_ranges)
        clauses.append(sql)
        args += more
    return clauses, args


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(f: ItemFilter) -> tuple[str, list[Any]]:
    """The filter as a WHERE clause ('' for none) and its parameters."""
    clauses, args = _clauses(f)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def selection_condition(sel: Selection) -> tuple[str, list[Any]]:
    """The selection as one SQL condition on ``items`` and its parameters: the one definition
    of which items a selection holds (views, reading and the engine's changes all use it)."""
    views: list[str] = []
    args: list[Any] = []
    for v in sel.views:
        clauses, more = _clauses(v)
        views.append("(" + " AND ".join(clauses) + ")" if clauses else "1")
        args += more
    parts: list[str] = []
    if views:
        part = views[0] if len(views) == 1 else "(" + " OR ".join(views) + ")"
        if sel.excluded:
            sql, more = _seq_in_ranges(sel.excluded)
            part = f"({part} AND NOT {sql})"
            args += more
        parts.append(part)
    if sel.ranges:
        sql, more = _seq_in_ranges(sel.ranges)
        parts.append(sql)
        args += more
    if not parts:
        return "0", []
    return (parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"), args


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
    where, args = _where(f)
    return int(conn.execute(f"SELECT COUNT(*) FROM items{where}", args).fetchone()[0])


#: The orders a view can show items in: name -> ORDER BY (seq last, so pages never overlap).
#: "duration" and "tries" put the slowest and most-tried first (NULLs, not run yet, last).
ORDERS: Final[dict[str, str]] = {
    "seq": "seq",
    "duration": "duration_s DESC, seq",
    "tries": "attempts DESC, seq",
}


def page(conn: sqlite3.Connection, f: ItemFilter, offset: int, limit: int, order: str = "seq") -> list[ItemRow]:
    """Rows ``offset .. offset+limit`` of the filtered view, in ``order`` (one of :data:`ORDERS`)."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r} (one of {', '.join(ORDERS)})")
    where, args = _where(f)
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
    where, args = _where(f)
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


def count_selected(conn: sqlite3.Connection, sel: Selection) -> int:
    """Items the selection holds."""
    cond, args = selection_condition(sel)
    return int(conn.execute(f"SELECT COUNT(*) FROM items WHERE {cond}", args).fetchone()[0])


def selected_counts(conn: sqlite3.Connection, sel: Selection) -> Counts:
    """The items of the selection by status (what an action on it would touch), and the total."""
    c = Counts()
    cond, args = selection_condition(sel)
    for status, n in conn.execute(f"SELECT status, COUNT(*) FROM items WHERE {cond} GROUP BY status", args):
        setattr(c, status, n)
    c.total = c.pending + c.processing + c.complete + c.failed + c.skipped
    return c


def sample_selected(
    conn: sqlite3.Connection, sel: Selection, n: int = 5, statuses: Sequence[str] | None = None
) -> list[tuple[int, str]]:
    """The first ``n`` items of the selection in seq order: (seq, key); with ``statuses``, only
    items in those (the ones an action would change)."""
    cond, args = selection_condition(sel)
    if statuses is not None:
        wanted = [s for s in statuses if s in STATUSES]
        cond = f"{cond} AND status IN ({', '.join(repr(s) for s in wanted) or 'NULL'})"  # literals of the fixed set
    return [
        (int(r[0]), str(r[1]))
        for r in conn.execute(f"SELECT seq, key FROM items WHERE {cond} ORDER BY seq LIMIT ?", [*args, n])
    ]


def selected_among(conn: sqlite3.Connection, sel: Selection, seqs: Iterable[int]) -> set[int]:
    """Which of ``seqs`` (the rows on screen, the items in flight) the selection holds: one query."""
    wanted = sorted(set(seqs))
    if not wanted or sel.is_empty:
        return set()
    cond, args = selection_condition(sel)
    sql = f"SELECT seq FROM items WHERE seq IN (SELECT value FROM json_each(?)) AND {cond}"
    return {int(r[0]) for r in conn.execute(sql, [orjson.dumps(wanted).decode(), *args])}


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
    when the store cannot be read (:class:`StoreCorrupt` when it is damaged).
    """

    def __init__(self, path: Path) -> None:
        """Open ``path`` (raises :class:`StoreError` when it is missing or no batchtui store)."""
        if not path.exists():
            raise StoreError(f"{path} does not exist; {recover_hint(path)}")
        self.path = path
        self._conn = connect_readonly(path)
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
            raise StoreError(f"{self.path}: cannot read the store ({exc})") from None

    def size(self) -> int:
        """Rows in the whole store (filtered or not): what sizes a view's seq column."""
        with self._reading():
            return size(self._conn)

    def counts(self) -> Counts:
        """Items by status, and the total."""
        with self._reading():
            return status_counts(self._conn)

    def count(self, f: ItemFilter = _EVERYTHING) -> int:
        """Items the filter keeps (``ItemFilter()``: :meth:`size`, one index lookup)."""
        with self._reading():
            return size(self._conn) if f.is_everything else count(self._conn, f)

    def page(self, f: ItemFilter, offset: int, limit: int, order: str = "seq") -> list[ItemRow]:
        """Rows ``offset .. offset+limit`` of the filtered view, in ``order`` (see :data:`ORDERS`)."""
        with self._reading():
            return page(self._conn, f, offset, limit, order)

    def rows(self, f: ItemFilter = _EVERYTHING) -> Iterator[ItemRow]:
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
        self, sel: Selection, n: int = 5, statuses: Sequence[str] | None = None
    ) -> list[tuple[int, str]]:
        """The first ``n`` items of the selection (seq, key), for a confirmation; with
        ``statuses``, only those in them."""
        with self._reading():
            return sample_selected(self._conn, sel, n, statuses)

    def selected_counts(self, sel: Selection) -> Counts:
        """The items of the selection by status, and the total (one query)."""
        with self._reading():
            return selected_counts(self._conn, sel)

    def selected_among(self, sel: Selection, seqs: Iterable[int]) -> set[int]:
        """Which of the given (visible) seqs the selection holds: one query, for the marks."""
        with self._reading():
            return selected_among(self._conn, sel, seqs)

    def errors_by(self, column: str) -> dict[str, int]:
        """Failed items by ``error_type`` or ``error_category``, biggest first."""
        with self._reading():
            return errors_by(self._conn, column)
