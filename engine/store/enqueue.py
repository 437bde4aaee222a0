"""Putting a batch's items into the store: in input order, duplicates dropped, resumable.

:func:`enqueue` is what :meth:`ItemStore.enqueue <.items.ItemStore.enqueue>` runs; reading and
parsing the source is engine/enqueue.py's.
"""

from __future__ import annotations

import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from ..interrupts import held_signals
from .bulk import INSERT_INVALID, INSERT_PENDING

if TYPE_CHECKING:
    from .items import ItemStore


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Pending items of one kind, in input order, given to :meth:`ItemStore.enqueue` as a block:
    ``keys[i]`` is the key of ``lines[i]``, whose data is the JSON string of that line.

    The caller vouches that no line holds a character JSON escapes (a quote, a backslash, a
    control character, a lone surrogate), so a line's JSON is the line in quotes and SQLite
    builds it; the block goes in as one flat JSON array to one statement.
    """

    keys: list[str]
    lines: list[str]
    kind: str

    def __len__(self) -> int:
        return len(self.lines)

    def rows(self) -> list[tuple[Any, ...]]:
        """The enqueue rows this block stands for."""
        none = (None,) * 6
        return [(k, f'"{line}"', self.kind, "pending", *none) for k, line in zip(self.keys, self.lines, strict=True)]


#: The insert of a :class:`LineBlock`: an element is the line when the line is its own key,
#: else [key, line]. (SQLite before 3.45 parses an element's JSON again at every ``->>``: one
#: plain string per row costs about half of three fields per row.)
_INSERT_LINE_BLOCK: Final = (
    "INSERT OR IGNORE INTO items(key, data, kind)"
    " SELECT iif(j.type = 'array', j.value ->> 0, j.value),"
    " '\"' || iif(j.type = 'array', j.value ->> 1, j.value) || '\"', ?2"
    " FROM json_each(?1) AS j"
)


def _insert(conn: sqlite3.Connection, batch: list[tuple[Any, ...] | LineBlock]) -> None:
    """In input order: runs of pending rows (3 columns, the rest default), line blocks,
    the rare unreadable records with their error fields on their own."""
    run: list[tuple[Any, ...]] = []
    for row in batch:
        if isinstance(row, LineBlock):
            INSERT_PENDING.run(conn, run)
            run = []
            keys, lines = row.keys, row.lines
            elems = lines if keys is lines else [k if k == v else [k, v] for k, v in zip(keys, lines, strict=True)]
            conn.execute(_INSERT_LINE_BLOCK, (orjson.dumps(elems), row.kind))
            continue
        if row[3] == "pending":
            run.append(row[:3])
            continue
        INSERT_PENDING.run(conn, run)
        run = []
        INSERT_INVALID.run(conn, [row])
    INSERT_PENDING.run(conn, run)


def _insert_chunk(conn: sqlite3.Connection, batch: list[tuple[Any, ...] | LineBlock]) -> int:
    """Insert one chunk (inside the caller's transaction); how many rows it added (the rest
    were keys already stored)."""
    sentinel = conn.execute("SELECT 1 FROM items LIMIT 1").fetchone() is None
    if sentinel:
        conn.execute("INSERT INTO items(seq, key, data) VALUES (-1, '', 'null')")
    before = conn.total_changes
    _insert(conn, batch)
    added = conn.total_changes - before
    if sentinel:
        conn.execute("DELETE FROM items WHERE seq = -1")
    return added


class Waits(Protocol):
    """What tells while the source keeps the enqueue waiting (engine/sources/waiting.py's
    SourceWait): ``listen(fn)`` has ``fn`` called on every tick of a wait, in the thread that
    reads the rows; ``tick`` is how many seconds a tick is."""

    tick: float

    def listen(self, fn: Callable[[], None]) -> None: ...


def enqueue(
    store: ItemStore, rows: Iterable[tuple[Any, ...] | LineBlock], *, chunk: int, waits: Waits | None = None
) -> tuple[int, int]:
    """Insert rows in input order; duplicate keys are dropped. Resumable.

    A row is (key, data_json, kind, status, error_type, error_category, error_message,
    error_detail, error_group, finished_at): status is 'pending', or 'failed' with the error
    fields for a record that could not be read. A :class:`LineBlock` stands for its rows.

    seq is assigned by SQLite as max(seq)+1 (a sentinel row -1 makes the first seq 0), so
    dropped duplicates leave no gaps and the insert runs in SQLite's C loop. Each chunk's
    transaction also records how many source rows were consumed (``enqueue_read``) and the
    duplicates so far, so an enqueue cut short by a crash continues where it stopped: the
    caller skips the first ``enqueue_read`` rows of the source.
    While the source keeps the reading waiting (``waits``, a pipe whose writer pauses), the rows
    read so far are committed as a chunk of their own, so the views count them meanwhile; and
    from such a source, what was read is committed at least once a tick while it comes (a
    writer that sends a line every 0.3 s never keeps the reading waiting a whole tick: its
    lines sat in a chunk of 20,000 and every view said the engine had stopped responding).
    The caller's next commit makes the enqueued rows durable (see below).
    Returns (inserted, duplicates) of this call.
    """
    conn = store.conn
    inserted = dropped = 0
    read = int(store.get_meta("enqueue_read", 0) or 0)
    dup_total = int(store.get_meta("duplicates_dropped", 0) or 0)

    def flush(batch: list[tuple[Any, ...] | LineBlock]) -> None:
        nonlocal inserted, dropped, read, dup_total
        n = sum(len(row) if isinstance(row, LineBlock) else 1 for row in batch)
        with store.transaction():
            added = _insert_chunk(conn, batch)
            read += n
            dup_total += n - added
            store.set_meta("enqueue_read", read)
            store.set_meta("duplicates_dropped", dup_total)
        inserted += added
        dropped += n - added

    # Reading and parsing the source (Python) overlaps the inserts (SQLite's C loop, which
    # lets go of the GIL): chunks go to one writer thread through a queue of one, so the
    # store still has a single writer and commits chunks in order.
    chunks: queue.Queue[list[tuple[Any, ...] | LineBlock] | None] = queue.Queue(maxsize=1)
    failure: list[BaseException] = []

    def writer() -> None:
        while (batch := chunks.get()) is not None:
            if not failure:  # after a failure, drain so the reader never blocks
                try:
                    flush(batch)
                except BaseException as exc:
                    failure.append(exc)

    # The chunks' commits need not reach the disk one by one: SQLite's NORMAL keeps the WAL
    # consistent through a power loss (it may lose the last commits, which a resumed enqueue
    # reads again), and the caller's commit after the last chunk, back at FULL, syncs the
    # WAL with every chunk in it. Saves an fsync per chunk (about a fifth of the enqueue).
    full = conn.execute("PRAGMA synchronous").fetchone()[0] >= 2
    if full:
        conn.execute("PRAGMA synchronous=NORMAL")
    thread = threading.Thread(target=writer, name="batchtui-enqueue", daemon=True)
    held = _Held()

    def put(item: list[tuple[Any, ...] | LineBlock] | None) -> None:
        """To the writer; a Ctrl-C meanwhile comes once the queue is whole (engine/interrupts.py)."""
        with held_signals():
            chunks.put(item)

    every = waits.tick if waits is not None else math.inf
    due = time.monotonic() + every

    def hand_over() -> None:
        nonlocal due
        due = time.monotonic() + every
        if held.rows and not failure:
            put(held.take())

    if waits is not None:
        waits.listen(hand_over)  # called inside next(rows) below, in this thread
    try:
        with held_signals():  # started whole, or not at all (then the finally joins no thread)
            thread.start()
        for row in rows:
            if held.add(row) >= chunk:
                if failure:
                    break
                put(held.take())
                due = time.monotonic() + every
            elif waits is not None and time.monotonic() >= due:
                hand_over()
        hand_over()
    finally:
        with held_signals():  # the writer ends and is joined before a Ctrl-C goes on up
            if thread.ident is not None:
                chunks.put(None)
                thread.join()
        if full:
            conn.execute("PRAGMA synchronous=FULL")
    if failure:
        raise failure[0]
    return inserted, dropped


class _Held:
    """The rows read and not handed to the writer yet, and how many items they stand for."""

    __slots__ = ("rows", "size")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...] | LineBlock] = []
        self.size = 0

    def add(self, row: tuple[Any, ...] | LineBlock) -> int:
        self.rows.append(row)
        self.size += len(row) if isinstance(row, LineBlock) else 1
        return self.size

    def take(self) -> list[tuple[Any, ...] | LineBlock]:
        rows, self.rows, self.size = self.rows, [], 0
        return rows


# -- reading a batch's source again (``resume --rescan``) ---------------------------------------
#
# A rescan streams the whole source once more through the same rows and the same insert as the
# enqueue (a key already stored is ignored, so nothing is ever doubled), and notes every key it
# reads in the table scan_keys, in the same transaction as the chunk's new items. Its counts are
# of this reading alone: the duplicates are the rows read less the distinct keys among them (what
# a batch made from the source as it is now would drop), which replace the stored count instead
# of adding to it. Killed half-way, the items it added stay (they run, or are found again by the
# next rescan, which starts its reading over; ``rescan_base`` keeps the highest seq from before
# the first, so the next one still counts them as new).

_SCAN_TABLE: Final = "CREATE TABLE IF NOT EXISTS scan_keys (key TEXT PRIMARY KEY) WITHOUT ROWID"
_NOT_SCANNED: Final = "key NOT IN (SELECT key FROM scan_keys)"


@dataclass(frozen=True)
class ScanOutcome:
    """What a rescan found: ``read`` source rows, ``distinct`` keys among them, ``new`` items
    added (since the first of a run of rescans cut short), the items whose key was not read
    (``missing``: per status, and the first few as (seq, key)), and how many of those were
    skipped."""

    read: int
    distinct: int
    new: int
    missing: dict[str, int]
    sample: list[tuple[int, str]]
    skipped: int

    @property
    def duplicates(self) -> int:
        return self.read - self.distinct

    @property
    def missing_total(self) -> int:
        return sum(self.missing.values())


def rescan(
    store: ItemStore,
    rows: Iterable[tuple[Any, ...] | LineBlock],
    *,
    drop_reason: str | None = None,
    at: str | None = None,
    chunk: int = 20000,
    sample: int = 5,
) -> ScanOutcome:
    """Read ``rows`` (a whole source, in order) into the store: keys not stored yet become new
    items after the last one, in source order. Then the items whose key was not read are counted,
    and skipped with ``drop_reason`` when given (those pending, failed or left processing: a
    complete item stays complete). The stored ``duplicates_dropped`` becomes this reading's."""
    conn = store.conn
    with store.transaction():
        conn.execute(_SCAN_TABLE)
        conn.execute("DELETE FROM scan_keys")
        if store.get_meta("rescan_base") is None:
            store.set_meta("rescan_base", store.max_seq())
    read = distinct = 0

    def flush(batch: list[tuple[Any, ...] | LineBlock]) -> None:
        nonlocal read, distinct
        with store.transaction():
            before = conn.total_changes
            for row in batch:
                if isinstance(row, LineBlock):
                    conn.executemany("INSERT OR IGNORE INTO scan_keys(key) VALUES (?)", [(k,) for k in row.keys])
                    read += len(row)
                else:
                    conn.execute("INSERT OR IGNORE INTO scan_keys(key) VALUES (?)", (row[0],))
                    read += 1
            distinct += conn.total_changes - before
            _insert_chunk(conn, batch)

    pending: list[tuple[Any, ...] | LineBlock] = []
    size = 0
    for row in rows:
        pending.append(row)
        size += len(row) if isinstance(row, LineBlock) else 1
        if size >= chunk:
            flush(pending)
            pending, size = [], 0
    if pending:
        flush(pending)
    with store.transaction():
        base = int(store.get_meta("rescan_base", -1))
        new = conn.execute("SELECT COUNT(*) FROM items WHERE seq > ?", (base,)).fetchone()[0]
        missing = dict(
            conn.execute(f"SELECT status, COUNT(*) FROM items WHERE {_NOT_SCANNED} GROUP BY status").fetchall()
        )
        shown = conn.execute(f"SELECT seq, key FROM items WHERE {_NOT_SCANNED} ORDER BY seq LIMIT ?", (sample,))
        examples = [(int(s), str(k)) for s, k in shown.fetchall()]
        skipped = 0
        if drop_reason is not None:
            skipped = conn.execute(
                "UPDATE items SET status='skipped', error_message=?, finished_at=?"
                f" WHERE status IN ('pending', 'processing', 'failed') AND {_NOT_SCANNED}",
                (drop_reason, at),
            ).rowcount
        store.set_meta("duplicates_dropped", read - distinct)
        conn.execute("DELETE FROM meta WHERE k='rescan_base'")
        conn.execute("DROP TABLE scan_keys")
    return ScanOutcome(read, distinct, int(new), missing, examples, skipped)
