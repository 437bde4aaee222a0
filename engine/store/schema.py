"""The layout of ``items.db``: its tables, indexes and trigger, and the schema version.

A store is made with :func:`create_schema`; every read-write open runs :func:`migrate`, which
adds what later versions of batchtui put in (idempotent, ``IF NOT EXISTS``); every open checks
:func:`check_version`, so a store written by a newer batchtui is refused, never misread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from ..grouping import GROUPING_VERSION, normalize_message
from .connection import StoreBusy, StoreCorrupt, StoreError, busy, recover_hint, write_transaction

SCHEMA_VERSION: Final = 1
#: A regrouping of more error messages than this says so before it begins (about 40,000 a
#: second: a million failed items make a resume wait half a minute, once).
REGROUP_SAID: Final = 100_000
#: The item statuses, in their lifecycle order (DESIGN §3).
STATUSES: Final = ("pending", "processing", "complete", "failed", "skipped")

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'lines',
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error_type TEXT,
    error_category TEXT,
    error_message TEXT,
    error_detail TEXT,
    error_group TEXT,
    started_at TEXT,
    finished_at TEXT,
    duration_s REAL,
    cost REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS items_status ON items(status, seq);
CREATE INDEX IF NOT EXISTS items_failed_type ON items(error_type, seq) WHERE status = 'failed';
CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    duration_s REAL,
    error_type TEXT,
    error_category TEXT,
    error_message TEXT,
    error_detail TEXT,
    PRIMARY KEY (seq, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
"""

#: The attempt that completes an item is logged by SQLite itself, from the items row the same
#: UPDATE writes: one row per attempt, without binding a second row per item in Python (the
#: hot path of a run). Failed and interrupted attempts are logged by the engine.
COMPLETE_TRIGGER: Final = """
CREATE TRIGGER IF NOT EXISTS attempt_of_complete AFTER UPDATE OF status ON items
WHEN NEW.status = 'complete'
BEGIN
    INSERT OR REPLACE INTO attempts(seq, attempt, status, started_at, finished_at, duration_s)
    VALUES (NEW.seq, NEW.attempts, 'complete', NEW.started_at, NEW.finished_at, NEW.duration_s);
END;
"""

#: The items that have a cost (few or none in most batches): the resume's sum and maximum of
#: the costs read this small index instead of the whole table.
COST_INDEX: Final = "CREATE INDEX IF NOT EXISTS items_cost ON items(cost) WHERE cost IS NOT NULL;"

#: The items a view shows slowest first (engine/store/slowest.py): each status's finished items
#: by stored duration, longest first, then seq. Not in a new store, nor added by :func:`migrate`:
#: every completion writes an entry in a random place of it (a group commit of 1000 items
#: writes about 1000 pages of it, where the table's rows, in seq order, take a few dozen), so
#: the engine builds it only once a view asks for that order (on its committer's thread, while
#: the run goes on), and a store keeps it after.
SLOWEST_INDEX_NAME: Final = "items_slowest"
SLOWEST_INDEX: Final = (
    f"CREATE INDEX IF NOT EXISTS {SLOWEST_INDEX_NAME} ON items(status, duration_s DESC, seq)"
    " WHERE duration_s IS NOT NULL;"
)

#: Items to run before every other pending item (``prioritize``), front first: ``ord`` is the
#: place in that queue (the rowid: the dispatcher reads it in order, by a cursor), new ones
#: going in front of older ones. Rows of items no longer pending are dead and pruned; an empty
#: table is what makes a batch with nothing prioritized cost nothing at dispatch.
RUN_FIRST: Final = "CREATE TABLE IF NOT EXISTS run_first (ord INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE);"

#: The columns of an item row as views read it (:class:`~.queries.ItemRow`), in its order.
ITEM_COLUMNS: Final = (
    "seq",
    "key",
    "data",
    "kind",
    "status",
    "attempts",
    "error_type",
    "error_category",
    "error_message",
    "error_detail",
    "started_at",
    "finished_at",
    "duration_s",
    "cost",
    "result",
)


def create_schema(conn: sqlite3.Connection) -> None:
    """Every table, index and trigger of a new store, and its schema version, in one
    transaction: one commit instead of one per statement (each an fsync on a durable
    connection), and never a store with part of its schema."""
    conn.executescript(
        "BEGIN IMMEDIATE;\n"
        + _TABLES
        + COST_INDEX
        + RUN_FIRST
        + COMPLETE_TRIGGER
        + f"INSERT OR REPLACE INTO meta(k, v) VALUES ('schema_version', {int(SCHEMA_VERSION)});\n"
        + f"INSERT OR REPLACE INTO meta(k, v) VALUES ('grouping', {int(GROUPING_VERSION)});\nCOMMIT;"
    )


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a store made by an earlier batchtui up to date (on every read-write open): the
    trigger and the cost index came after schema 1's first stores (a one-time index build), the
    ``run_first`` table (prioritize) later still. An older batchtui ignores that table, so the
    schema version stays 1. A store grouped by other rules is regrouped (:func:`regroup`)."""
    conn.execute(COMPLETE_TRIGGER)
    conn.execute(COST_INDEX)
    conn.execute(RUN_FIRST)
    row = conn.execute("SELECT v FROM meta WHERE k='grouping'").fetchone()
    if row is None or row[0] != GROUPING_VERSION:
        regroup(conn)


def regroup(conn: sqlite3.Connection) -> int:
    """Recompute every stored error group (``error_group``, the normalized message) by this
    version's rules (:mod:`batchtui.engine.grouping`) and record the rules' version, in one
    transaction; return how many rows changed. An older store's groups then match the groups of
    the failures this version adds, in every view, and a group id means the same everywhere. A
    store written by a newer batchtui's rules is regrouped too: the views of this version must
    agree with the failures it records."""
    changed: list[tuple[str, int]] = []
    with write_transaction(conn):
        (total,) = conn.execute("SELECT COUNT(*) FROM items WHERE error_group IS NOT NULL").fetchone()
        if total >= REGROUP_SAID:
            import logging  # only here: a verb that reads a store loads no logging (tests/test_startup.py)

            logging.getLogger("batchtui.engine").warning(
                f"regrouping the batch's {total:,} failed items by this batchtui's error rules"
                f" (once: about {max(1, round(total / 40_000))}s)"
            )
        rows = conn.execute("SELECT seq, key, error_message, error_group FROM items WHERE error_group IS NOT NULL")
        for seq, key, message, group in rows:
            new = normalize_message(message or "", key)
            if new != group:
                changed.append((new, seq))
        conn.executemany("UPDATE items SET error_group=? WHERE seq=?", changed)
        conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('grouping', ?)", (GROUPING_VERSION,))
    return len(changed)


def has_slowest_index(conn: sqlite3.Connection) -> bool:
    """Whether the store has :data:`SLOWEST_INDEX` (one lookup in the schema)."""
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"
    return conn.execute(sql, (SLOWEST_INDEX_NAME,)).fetchone() is not None


def check_version(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`StoreError` unless ``conn`` is a batchtui store this version can read."""
    try:
        row = conn.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone()
    except StoreCorrupt:
        raise
    except sqlite3.DatabaseError as exc:
        if busy(exc):
            raise StoreBusy.of(path, exc) from None
        raise StoreError(f"{path} is not a readable batchtui store: {exc}; {recover_hint(path)}") from None
    if row is None:
        raise StoreError(f"{path} has no schema version (not a batchtui store); {recover_hint(path)}")
    if int(row[0]) > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer batchtui (schema {row[0]})")
