"""The engine's handle on ``items.db``: :class:`ItemStore`.

One writer: the engine's runner thread owns the writable connection and commits in groups
(the committer thread has a second one, see :meth:`ItemStore.second_writer`). Views read with
their own read-only connections (:class:`~.queries.ItemQueries`); WAL lets them read while
the engine writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from ..files import FILE_MODE, fsync_dir, full_fsync, identity
from ..models import MAX_SEQ, Counts, ErrorGroup
from . import queries, selected
from .connection import connect_readonly, connect_rw, connect_unlinked, missing, write_transaction
from .enqueue import LineBlock, ScanOutcome, Waits, enqueue, rescan
from .queries import AttemptRow, ItemFilter, ItemRow, Selection, selection_condition
from .schema import check_version, create_schema, has_slowest_index, migrate
from .selection import RETRIABLE

#: Engine deaths an item must have been running at before one fails it (with --max-attempts
#: reached too): see :meth:`ItemStore.charge_dead_runs`.
DEATHS_TO_FAIL: Final = 2


class ItemStore:
    """The items table and its companions. Not thread-safe: one owner thread per instance."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self._identity = identity(path)

    def damage(self) -> str | None:
        """What happened to the store's file behind its back, or None while the path still
        names the file this store opened (device and inode). A deleted or replaced items.db
        keeps working through the open connections, on a file nobody will open again: the
        engine must not go on as if its commits were kept. One ``stat``."""
        if self._identity is None:
            return None
        now = identity(self.path)
        if now is None:
            return "was deleted"
        return None if now == self._identity else "was replaced by another file"

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, *, durable: bool = True) -> ItemStore:
        """A new, empty store at ``path`` (which must not exist).

        The schema is built under a temporary name and linked into place, so ``items.db`` is
        never seen without its tables, even after a crash in the middle of creating it.
        """
        if path.exists():
            raise FileExistsError(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            try:
                # open()'s mode passes through the umask: set it exactly. SQLite gives the -wal
                # and -shm files it makes this file's mode, so the process's umask is never touched.
                os.fchmod(fd, FILE_MODE)
                # Built without a single sync (nobody opens the temporary name), then made
                # durable whole by one fsync before it is linked into place: the same guarantee
                # as SQLite's syncs of each step, at the price of one.
                conn = connect_unlinked(tmp)
                try:
                    create_schema(conn)
                    conn.execute("PRAGMA journal_mode=WAL")  # in the file's header: every open is WAL
                finally:
                    conn.close()
                if durable:
                    full_fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers a store
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                if path.exists():  # a file system without hard links: check, then rename
                    raise FileExistsError(path) from None
                os.rename(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if durable:
            fsync_dir(path.parent)
        return cls._open_rw(path, durable=durable)

    @classmethod
    def open(cls, path: Path, *, durable: bool = True) -> ItemStore:
        if not path.exists():
            raise missing(path)
        store = cls._open_rw(path, durable=durable)
        try:
            check_version(store.conn, path)
            migrate(store.conn)
        except BaseException:
            store.close()
            raise
        return store

    def second_writer(self, *, durable: bool = True) -> ItemStore:
        """Another read-write connection to this store, for a thread that commits while this
        one reads (WAL: each sees the last commit). The caller keeps the writes serialized."""
        return self._open_rw(self.path, durable=durable)

    @classmethod
    def _open_rw(cls, path: Path, *, durable: bool) -> ItemStore:
        return cls(connect_rw(path, durable=durable), path, readonly=False)

    @classmethod
    def open_readonly(cls, path: Path) -> ItemStore:
        """A read-only connection for the engine's own readers (views use
        :class:`~.queries.ItemQueries`); never blocks or disturbs the engine."""
        if not path.exists():
            raise missing(path)
        store = cls(connect_readonly(path), path, readonly=True)
        try:
            check_version(store.conn, path)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (:func:`.connection.write_transaction`)."""
        with write_transaction(self.conn) as conn:
            yield conn

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", (key, value))

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(
        self, rows: Iterable[tuple[Any, ...] | LineBlock], *, chunk: int = 20000, waits: Waits | None = None
    ) -> tuple[int, int]:
        """Insert rows in input order; duplicate keys are dropped. Resumable. Returns
        (inserted, duplicates) of this call (see :func:`~.enqueue.enqueue`; ``waits``: what
        tells while the source keeps it waiting, when it commits what it read so far)."""
        return enqueue(self, rows, chunk=chunk, waits=waits)

    def rescan(
        self, rows: Iterable[tuple[Any, ...] | LineBlock], *, drop_reason: str | None = None, at: str | None = None
    ) -> ScanOutcome:
        """Read a whole source again: new keys become new items, the keys not read are counted
        (and skipped with ``drop_reason``); see :func:`~.enqueue.rescan`."""
        return rescan(self, rows, drop_reason=drop_reason, at=at)

    # -- the runner's reads ----------------------------------------------------------------

    def counts(self) -> Counts:
        return queries.status_counts(self.conn)

    def next_pending(self, after_seq: int, limit: int) -> list[tuple[int, str, str, str, int]]:
        """Pending items after ``after_seq`` in seq order: (seq, key, data as JSON, kind, attempts)."""
        rows: list[tuple[int, str, str, str, int]] = self.conn.execute(
            "SELECT seq, key, data, kind, attempts FROM items WHERE status='pending' AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return rows

    def next_first(self, after_ord: int | None, limit: int) -> list[tuple[int, int, str, str, str, int]]:
        """Prioritized pending items after place ``after_ord`` (None: from the front), front
        first: (ord, seq, key, data as JSON, kind, attempts)."""
        rows: list[tuple[int, int, str, str, str, int]] = self.conn.execute(
            "SELECT f.ord, i.seq, i.key, i.data, i.kind, i.attempts FROM run_first AS f JOIN items AS i"
            " ON i.seq = f.seq WHERE f.ord > ? AND i.status='pending' ORDER BY f.ord LIMIT ?",
            (-MAX_SEQ - 1 if after_ord is None else after_ord, limit),
        ).fetchall()
        return rows

    def has_first(self) -> bool:
        """Whether any pending item is prioritized (an empty table: one lookup, nothing read)."""
        return (
            self.conn.execute(
                "SELECT 1 FROM run_first AS f JOIN items AS i ON i.seq = f.seq WHERE i.status='pending' LIMIT 1"
            ).fetchone()
            is not None
        )

    def max_seq(self) -> int:
        """The highest seq stored (-1 when there is none)."""
        top = self.conn.execute("SELECT max(seq) FROM items").fetchone()[0]
        return -1 if top is None else int(top)

    def known_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` that items.db holds."""
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            found.update(k for (k,) in self.conn.execute(f"SELECT key FROM items WHERE key IN ({marks})", part))
        return found

    def charge_dead_runs(
        self,
        runs: Sequence[tuple[int, int, str | None]],
        error: tuple[str, str, str, str],
        group: str,
        max_attempts: int,
        at: str,
    ) -> list[tuple[int, int, int, bool]]:
        """Attempts ``(seq, attempt, started_at)`` a dead engine began (engine/inflight.py): each
        is counted and logged with ``error`` (type, category, message, detail; ``group`` its
        normalized message), and its item goes back to pending with that error, unless this is
        proof enough that the item kills the engine: it ran alone (the only attempt in ``runs``),
        it has been running at :data:`DEATHS_TO_FAIL` deaths (one may be an operator's kill -9),
        and the attempt is ``max_attempts``. Then it fails. An item that has ended since, or
        counts that attempt already, is left as it is. Returns ``(seq, attempt, deaths, failed)``
        of the attempts counted (``deaths``: how many it has been running at, this one in)."""
        charged: list[tuple[int, int, int, bool]] = []
        alone = len(runs) == 1
        with self.transaction():
            for seq, attempt, started_at in runs:
                row = self.conn.execute("SELECT status, attempts FROM items WHERE seq=?", (seq,)).fetchone()
                if row is None or row[0] not in ("pending", "processing") or row[1] >= attempt:
                    continue
                before = self.conn.execute(
                    "SELECT COUNT(*) FROM attempts WHERE seq=? AND error_type=? AND error_message=?",
                    (seq, error[0], error[2]),
                ).fetchone()[0]
                deaths = int(before) + 1
                failed = alone and attempt >= max_attempts and deaths >= DEATHS_TO_FAIL
                self.conn.execute(
                    "INSERT OR REPLACE INTO attempts(seq, attempt, status, started_at, finished_at, duration_s,"
                    " error_type, error_category, error_message, error_detail) VALUES (?,?,'failed',?,NULL,NULL,?,?,?,?)",
                    (seq, attempt, started_at, *error),
                )
                self.conn.execute(
                    "UPDATE items SET status=?, attempts=?, error_type=?, error_category=?, error_message=?,"
                    " error_detail=?, error_group=?, started_at=?, finished_at=?, duration_s=NULL WHERE seq=?",
                    (
                        "failed" if failed else "pending",
                        attempt,
                        *error,
                        group,
                        started_at,
                        at if failed else None,
                        seq,
                    ),
                )
                charged.append((seq, attempt, deaths, failed))
        return charged

    def requeue_processing(self) -> int:
        """Crash recovery: items left 'processing' go back to 'pending', attempts kept."""
        with self.transaction():
            cur = self.conn.execute("UPDATE items SET status='pending' WHERE status='processing'")
        return cur.rowcount

    def cost_totals(self) -> tuple[float, float]:
        """(the sum, the largest) of the items' costs, from the partial index of the items with
        one: a resume of a large batch reads those rows only, not the whole table twice."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(cost), 0), COALESCE(MAX(cost), 0) FROM items WHERE cost IS NOT NULL"
        ).fetchone()
        return float(row[0]), float(row[1])

    def has_slowest_index(self) -> bool:
        """Whether the store has the index slowest-first views read (:data:`~.schema.SLOWEST_INDEX`:
        the committer builds it when a view asks, engine/operations.py)."""
        return has_slowest_index(self.conn)

    def statuses(self, seqs: Iterable[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        seq_list = list(seqs)
        for i in range(0, len(seq_list), 500):
            part = seq_list[i : i + 500]
            marks = ",".join("?" * len(part))
            for seq, status in self.conn.execute(f"SELECT seq, status FROM items WHERE seq IN ({marks})", part):
                out[seq] = status
        return out

    def durations(self) -> list[float]:
        """Durations of the complete items, sorted (Python's sort beats SQLite's sorter here)."""
        rows = self.conn.execute(
            "SELECT duration_s FROM items WHERE status='complete' AND duration_s IS NOT NULL"
        ).fetchall()  # one call: the rows of a 1M-item batch do not each pass through Python's __next__
        out = [r[0] for r in rows]
        out.sort()
        return out

    # -- reports (the same queries the views run, see queries.py) --------------------------

    def get(self, seq: int) -> ItemRow | None:
        return queries.get_row(self.conn, seq)

    def attempts(self, seq: int) -> list[AttemptRow]:
        return queries.attempts(self.conn, seq)

    def iter_rows(self, status: str | None = None, error_type: str | None = None) -> Iterator[ItemRow]:
        """Stream every row (export); pages by seq so memory stays flat."""
        return queries.iter_rows(self.conn, ItemFilter(status=status, error_type=error_type))

    def error_groups(self, limit: int | None = 20) -> list[ErrorGroup]:
        """Failed items grouped by error type and normalized message, biggest first."""
        return queries.error_groups(self.conn, limit)

    def selected_among(self, sel: Selection, seqs: Iterable[int]) -> set[int]:
        """Which of ``seqs`` (items in flight, retries waiting) the selection holds."""
        return selected.selected_among(self.conn, sel, seqs)

    def unretriable(self, sel: Selection | None = None) -> int:
        """The items of ``sel`` (None: every item) a retry leaves failed (selection.RETRIABLE)."""
        return selected.unretriable(self.conn, sel)

    def unretriable_types(self, sel: Selection | None = None) -> dict[str, int]:
        """:meth:`unretriable` by error type, for saying why."""
        return selected.unretriable_types(self.conn, sel)

    def errors_by(self, column: str) -> dict[str, int]:
        return queries.errors_by(self.conn, column)

    # -- changes outside a run (CLI with no engine running, under the lock) ------------------

    def retry_failed(self, *, error_type: str | None = None, seqs: Sequence[int] | None = None) -> list[int]:
        """failed -> pending (not one no retry can make succeed: RETRIABLE); history (attempts rows)
        kept. Returns the seqs changed."""
        where = f"status='failed' AND {RETRIABLE}"
        args: list[Any] = []
        if error_type:
            where += " AND error_type=?"
            args.append(error_type)
        if seqs is not None:
            changed: list[int] = []
            for i in range(0, len(seqs), 500):
                part = list(seqs[i : i + 500])
                marks = ",".join("?" * len(part))
                changed += [
                    r[0]
                    for r in self.conn.execute(
                        f"SELECT seq FROM items WHERE {where} AND seq IN ({marks})", [*args, *part]
                    )
                ]
        else:
            changed = [r[0] for r in self.conn.execute(f"SELECT seq FROM items WHERE {where}", args).fetchall()]
        with self.transaction():
            self.conn.executemany(
                "UPDATE items SET status='pending', error_type=NULL, error_category=NULL, error_message=NULL,"
                " error_detail=NULL, error_group=NULL, finished_at=NULL WHERE seq=? AND status='failed'",
                [(s,) for s in changed],
            )
            # A place in the run-first queue from before it failed is not kept (as _retry_where).
            self.conn.executemany("DELETE FROM run_first WHERE seq=?", [(s,) for s in changed])
        return changed

    def skip(self, seqs: Sequence[int], *, reason: str = "skipped by operator", at: str | None = None) -> list[int]:
        """pending/processing -> skipped (processing only when no engine runs). Returns seqs changed."""
        changed: list[int] = []
        with self.transaction():
            for seq in seqs:
                cur = self.conn.execute(
                    "UPDATE items SET status='skipped', error_message=?, finished_at=?"
                    " WHERE seq=? AND status IN ('pending', 'processing', 'failed')",
                    (reason, at, seq),
                )
                if cur.rowcount:
                    changed.append(seq)
        return changed

    # -- changes to a selection (the running engine and offline alike) ---------------------
    #
    # Each is a few set-based statements over the selection's one condition (queries.
    # selection_condition) in one transaction: 300k items change without a seq in Python.
    # Each returns how many items of each old status changed, so the engine keeps its counts.

    def _by_status(self, statuses: tuple[str, ...], cond: str, args: list[Any]) -> dict[str, int]:
        marks = ", ".join(f"'{s}'" for s in statuses)  # a fixed set, never user text
        rows = self.conn.execute(
            f"SELECT status, COUNT(*) FROM items WHERE status IN ({marks}) AND {cond} GROUP BY status", args
        )
        return {str(status): int(n) for status, n in rows}

    def _retry_where(self, statuses: tuple[str, ...], cond: str, args: list[Any]) -> dict[str, int]:
        """(inside a transaction) Items of ``statuses`` meeting ``cond`` back to pending, their
        error cleared (the attempts rows keep the history), any old place in run_first dropped.
        An item no retry can make succeed never goes back (RETRIABLE)."""
        cond = f"{cond} AND {RETRIABLE}"
        changed = self._by_status(statuses, cond, args)
        if changed:
            marks = ", ".join(f"'{s}'" for s in statuses)
            where = f"status IN ({marks}) AND {cond}"
            self.conn.execute(f"DELETE FROM run_first WHERE seq IN (SELECT seq FROM items WHERE {where})", args)
            self.conn.execute(
                "UPDATE items SET status='pending', error_type=NULL, error_category=NULL, error_message=NULL,"
                f" error_detail=NULL, error_group=NULL, finished_at=NULL WHERE {where}",
                args,
            )
        return changed

    def retry_selected(self, sel: Selection, exclude: Iterable[int] = ()) -> dict[str, int]:
        """The failed and skipped items of ``sel`` back to pending, but not those of ``exclude``:
        {old status: count}."""
        cond, args = _excluding(*selection_condition(sel), exclude)
        with self.transaction():
            return self._retry_where(("failed", "skipped"), cond, args)

    def skip_selected(
        self,
        sel: Selection,
        *,
        statuses: tuple[str, ...] = ("pending", "processing", "failed"),
        exclude: Iterable[int] = (),
        reason: str = "skipped by operator",
        at: str | None = None,
    ) -> dict[str, int]:
        """The items of ``sel`` in ``statuses`` (not yet complete), but not those of ``exclude``
        (a running engine's items in flight, which it kills itself), skipped: {old status: count}."""
        cond, args = _excluding(*selection_condition(sel), exclude)
        marks = ", ".join(f"'{s}'" for s in statuses)
        with self.transaction():
            changed = self._by_status(statuses, cond, args)
            if changed:
                self.conn.execute(
                    f"UPDATE items SET status='skipped', error_message=?, finished_at=? WHERE status IN ({marks}) AND {cond}",
                    [reason, at, *args],
                )
        return changed

    def prioritize(self, sel: Selection, exclude: Iterable[int] = ()) -> tuple[dict[str, int], int]:
        """Move the items of ``sel`` to the front of the queue, in seq order, in front of any
        prioritized before; failed ones are put back to pending first. Returns (the retried by
        old status, the number of pending items now at the front). Not those of ``exclude``."""
        cond, args = _excluding(*selection_condition(sel), exclude)
        with self.transaction():
            retried = self._retry_where(("failed",), cond, args)
            # Dead places (items no longer pending) go, so the table stays as small as the queue.
            self.conn.execute(
                "DELETE FROM run_first WHERE seq NOT IN (SELECT f.seq FROM run_first AS f JOIN items AS i"
                " ON i.seq = f.seq WHERE i.status='pending')"
            )
            n = int(
                self.conn.execute(f"SELECT COUNT(*) FROM items WHERE status='pending' AND {cond}", args).fetchone()[0]
            )
            if n:
                front = int(self.conn.execute("SELECT COALESCE(MIN(ord), 0) FROM run_first").fetchone()[0])
                # INSERT OR REPLACE: an item prioritized before moves to its new place.
                self.conn.execute(
                    "INSERT OR REPLACE INTO run_first(ord, seq) SELECT ? + ROW_NUMBER() OVER (ORDER BY seq), seq"
                    f" FROM items WHERE status='pending' AND {cond}",
                    [front - n - 1, *args],
                )
        return retried, n


def _excluding(cond: str, args: list[Any], exclude: Iterable[int]) -> tuple[str, list[Any]]:
    """``cond`` (with its ``args``) narrowed to the items not in ``exclude``."""
    left_out = sorted(set(exclude))
    if not left_out:
        return cond, args
    return f"{cond} AND seq NOT IN (SELECT value FROM json_each(?))", [*args, orjson.dumps(left_out).decode()]
