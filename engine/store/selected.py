"""The queries of a :class:`~.selection.Selection`: what a bulk action (retry, skip, run first)
applies to, counted, sampled and listed for its confirmation, and the marks drawn on screen.

Each takes a connection: :class:`~.queries.ItemQueries` (the views) and the engine's
:class:`~.items.ItemStore` ask the same SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..models import Counts
from .schema import STATUSES
from .selection import RETRIABLE, Selection, selection_condition

__all__ = [
    "count_selected",
    "sample_selected",
    "selected_among",
    "selected_counts",
    "selected_seqs",
    "unretriable",
    "unretriable_types",
]


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


def _changed_condition(sel: Selection, statuses: Sequence[str] | None, retriable: bool) -> tuple[str, list[Any]]:
    """The items of ``sel`` an action would change: in ``statuses`` (None: any), and with
    ``retriable``, none that no retry can make succeed."""
    cond, args = selection_condition(sel)
    if statuses is not None:
        wanted = [s for s in statuses if s in STATUSES]
        cond = f"{cond} AND status IN ({', '.join(repr(s) for s in wanted) or 'NULL'})"  # literals of the fixed set
    if retriable:
        cond = f"{cond} AND {RETRIABLE}"
    return cond, args


def sample_selected(
    conn: sqlite3.Connection,
    sel: Selection,
    n: int = 5,
    statuses: Sequence[str] | None = None,
    *,
    retriable: bool = False,
) -> list[tuple[int, str]]:
    """The first ``n`` items of the selection in seq order: (seq, key); with ``statuses``, only
    items in those (the ones an action would change); ``retriable`` (a retry's, a
    prioritize's): none that no retry can make succeed, which they leave failed."""
    cond, args = _changed_condition(sel, statuses, retriable)
    return [
        (int(r[0]), str(r[1]))
        for r in conn.execute(f"SELECT seq, key FROM items WHERE {cond} ORDER BY seq LIMIT ?", [*args, n])
    ]


def selected_seqs(
    conn: sqlite3.Connection,
    sel: Selection,
    statuses: Sequence[str] | None = None,
    *,
    retriable: bool = False,
    limit: int,
) -> list[int] | None:
    """The seqs of ``sel`` (with ``statuses``, those an action would change; ``retriable``: as
    for :func:`sample_selected`), in seq order; None when there are more than ``limit``."""
    cond, args = _changed_condition(sel, statuses, retriable)
    rows = conn.execute(f"SELECT seq FROM items WHERE {cond} ORDER BY seq LIMIT ?", [*args, limit + 1]).fetchall()
    return None if len(rows) > limit else [int(r[0]) for r in rows]


def unretriable(conn: sqlite3.Connection, sel: Selection | None = None) -> int:
    """The failed or skipped items of ``sel`` (None: every item) no retry can make succeed (an
    invalid source record, a field missing, a NUL byte): what a retry or prioritize selects and
    leaves as it is (selection.RETRIABLE)."""
    return sum(unretriable_types(conn, sel).values())


def unretriable_types(conn: sqlite3.Connection, sel: Selection | None = None) -> dict[str, int]:
    """:func:`unretriable` by error type (selection.UNRETRIABLE_TYPES), for saying why."""
    cond, args = selection_condition(sel) if sel is not None else ("1", [])
    sql = (
        "SELECT error_type, COUNT(*) FROM items WHERE status IN ('failed', 'skipped')"
        f" AND NOT ({RETRIABLE}) AND {cond} GROUP BY error_type"
    )
    return {str(t): int(n) for t, n in conn.execute(sql, args)}


def selected_among(conn: sqlite3.Connection, sel: Selection, seqs: Iterable[int]) -> set[int]:
    """Which of ``seqs`` (the rows on screen, the items in flight) the selection holds: one query."""
    wanted = sorted(set(seqs))
    if not wanted or sel.is_empty:
        return set()
    cond, args = selection_condition(sel)
    sql = f"SELECT seq FROM items WHERE seq IN (SELECT value FROM json_each(?)) AND {cond}"
    return {int(r[0]) for r in conn.execute(sql, [orjson.dumps(wanted).decode(), *args])}
