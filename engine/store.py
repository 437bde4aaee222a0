"""``items.db``: the item store (SQLite in WAL mode).

One writer: the engine's runner thread owns the writable connection and commits in groups.
Views open their own read-only connections (:meth:`ItemStore.open_readonly`); WAL lets them
read while the engine writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

import orjson

from .errors import BatchtuiError, ErrorInfo
from .files import FILE_MODE, WriteFailed, fsync_dir
from .models import Counts, ErrorGroup

SCHEMA_VERSION: Final = 1
_STATUS_SET: Final = frozenset({"pending", "processing", "complete", "failed", "skipped"})

_SCHEMA: Final = """
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
#: UPDATE writes: one row per attempt as before, without binding a second row per item in
#: Python (the hot path of a run). Failed and interrupted attempts are logged by the engine.
#: Created on every read-write open, so stores made before it get it too.
_COMPLETE_TRIGGER: Final = """
CREATE TRIGGER IF NOT EXISTS attempt_of_complete AFTER UPDATE OF status ON items
WHEN NEW.status = 'complete'
BEGIN
    INSERT OR REPLACE INTO attempts(seq, attempt, status, started_at, finished_at, duration_s)
    VALUES (NEW.seq, NEW.attempts, 'complete', NEW.started_at, NEW.finished_at, NEW.duration_s);
END;
"""

#: The items that have a cost (few or none in most batches): the resume's sum and maximum of
#: the costs read this small index instead of the whole table. Created on every read-write
#: open too (a one-time build for stores made before it).
_COST_INDEX: Final = "CREATE INDEX IF NOT EXISTS items_cost ON items(cost) WHERE cost IS NOT NULL;"

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


class StoreError(BatchtuiError):
    """items.db cannot be opened or read (missing, corrupted, newer schema)."""

    hint = "the item store cannot be read; `batchtui show` still reads the manifest"


class StoreCorrupt(StoreError, sqlite3.DatabaseError):
    """SQLite found items.db damaged while reading or writing it.

    Also a ``sqlite3.DatabaseError``, so code that handles SQLite errors still handles it, and a
    :class:`StoreError`, so the CLI shows it as one clear line with the way out.
    """


def recover_hint(path: Path) -> str:
    """The way out for a damaged or missing store, for error messages."""
    return f"rebuild it from results.jsonl and the source with `batchtui recover {path.parent.name}`"


_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _json_bulk_supported() -> bool:
    """SQLite 3.38+: UPDATE ... FROM, the JSON functions and the ->> operator."""
    if sqlite3.sqlite_version_info < (3, 38, 0):
        return False
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("SELECT j.value ->> 0 FROM json_each('[[1]]') AS j").fetchall()
    except sqlite3.Error:
        return False
    return True


JSON_BULK: Final = _json_bulk_supported()
_PLACEHOLDER = re.compile(r"\?")
_SEQ: Final = itemgetter(-1)


@dataclass(frozen=True, slots=True)
class Bulk:
    """One statement applied to many rows.

    ``executemany`` binds each row in Python and steps it in C, letting go of the GIL and taking
    it back for every row: next to busy Python threads (the workers) each row then waits for
    its turn at the GIL, up to 5 ms. Where SQLite can, the rows go in as one JSON array to one
    statement over ``json_each``: a single step in C for the whole group, without the GIL.
    Rows are the ``executemany`` parameter tuples (JSON scalars: None, int, float, str).

    ``sql`` is ``INSERT ... VALUES (?, ...)`` or ``UPDATE items SET ... WHERE seq=?`` with
    the seq last; an UPDATE keeps the last row of a seq given twice, as executemany would.

    ``shared`` (UPDATE only) names the parameters most rows share with many others (the same
    attempt, the same finish time of a chunk): rows are grouped by those values, which are
    bound once per group, and only the rest go through the JSON array. SQLite before 3.45
    parses an element's JSON again at every ``->>``, so fewer and shorter fields per element
    halve the statement's time (a group commit of completions: 1.2 -> 0.6 s per 100k items).
    """

    sql: str
    json_sql: str | None
    shared: tuple[int, ...] = ()
    grouped_sql: str | None = None

    @classmethod
    def of(cls, sql: str, shared: tuple[int, ...] = ()) -> Bulk:
        counter = iter(range(1000))

        def param(_m: re.Match[str]) -> str:
            return f"j.value ->> {next(counter)}"

        if sql.startswith("INSERT") and " VALUES (" in sql:
            if shared:
                raise ValueError("shared parameters are for UPDATE statements")
            head, _, values = sql.partition(" VALUES ")
            return cls(sql, f"{head} SELECT {_PLACEHOLDER.sub(param, values.strip()[1:-1])} FROM json_each(?) AS j")
        if sql.startswith("UPDATE items SET ") and sql.endswith(" WHERE seq=?"):
            body = sql.removesuffix(" WHERE seq=?")
            json_sql = (
                f"{_PLACEHOLDER.sub(param, body)} FROM json_each(?) AS j WHERE items.seq = j.value ->> {next(counter)}"
            )
            grouped_sql = None
            if shared:
                n = body.count("?")
                if not all(0 <= i < n for i in shared) or len(set(shared)) != len(shared):
                    raise ValueError(f"shared parameters {shared} out of range for {n}")
                index = iter(range(1, 1000))
                bound = {i: f"?{k}" for k, i in enumerate(shared, start=2)}
                pos = iter(range(n + 1))

                def grouped(_m: re.Match[str]) -> str:
                    i = next(pos)
                    return bound[i] if i in bound else f"j.value ->> {next(index)}"

                # Element 0 is the seq; the unshared parameters follow in their order.
                grouped_sql = (
                    f"{_PLACEHOLDER.sub(grouped, body)} FROM json_each(?1) AS j WHERE items.seq = j.value ->> 0"
                )
            return cls(sql, json_sql, tuple(shared), grouped_sql)
        if shared:
            raise ValueError("shared parameters are for UPDATE statements")
        return cls(sql, None)

    def run(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.json_sql is None or not JSON_BULK:
            conn.executemany(self.sql, rows)
            return
        for step in self.plan(rows):
            if step.blob is None:
                conn.executemany(self.sql, step.rows)
            else:
                sql = self.grouped_sql if step.grouped else self.json_sql
                assert sql is not None
                conn.execute(sql, (step.blob, *step.values))

    def plan(self, rows: Sequence[tuple[Any, ...]]) -> list[BulkStep]:
        """The statements that carry out ``rows`` (needs :attr:`json_sql` and JSON_BULK)."""
        if self.sql.startswith("UPDATE"):
            # The last row of a seq given twice, in the place of its first (as a dict keeps it).
            rows = list(dict(zip(map(_SEQ, rows), rows, strict=True)).values())
        if self.grouped_sql is not None and len(rows) > 1:
            # Rows come in runs that share their values (a chunk's completions): groupby and
            # itemgetter walk them in C, and Python's loop turns once per run, not per row.
            shared = self.shared
            key = itemgetter(*shared) if len(shared) > 1 else lambda row: (row[shared[0]],)
            rest = [i for i in range(len(rows[0]) - 1) if i not in shared]
            elem = itemgetter(-1, *rest) if rest else lambda row: (row[-1],)
            groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
            for values, run in groupby(rows, key):
                group = groups.get(values)
                if group is None:
                    groups[values] = list(map(elem, run))
                else:
                    group.extend(map(elem, run))
            if len(groups) * 8 <= len(rows):  # else the full rows in one statement
                steps: list[BulkStep] = []
                for values, elems in groups.items():
                    blob = _json_array(elems)
                    fallback = [self._row(values, e) for e in elems] if blob is None else ()
                    steps.append(BulkStep(True, blob, values, fallback))
                return steps
        return [BulkStep(False, _json_array(rows), (), rows)]

    def trigger_body(self, grouped: bool) -> str:
        """The statement as a trigger's, on an inserted row: NEW.blob for the JSON array, NEW.p1,
        NEW.p2... for the shared values (see :class:`~batchtui.engine.committer.OneStatement`)."""
        sql = self.grouped_sql if grouped else self.json_sql
        if sql is None:
            raise ValueError(f"no {'grouped' if grouped else 'JSON'} form: {self.sql}")
        if not grouped:
            return sql.replace("json_each(?)", "json_each(NEW.blob)")
        return re.sub(r"\?(\d+)", lambda m: "NEW.blob" if m.group(1) == "1" else f"NEW.p{int(m.group(1)) - 1}", sql)

    def _row(self, values: tuple[Any, ...], elem: tuple[Any, ...]) -> tuple[Any, ...]:
        """The executemany parameters of a grouped element: shared values back in their places."""
        n = len(values) + len(elem) - 1
        row: list[Any] = [None] * n
        for i, v in zip(self.shared, values, strict=True):
            row[i] = v
        for i, v in zip((i for i in range(n) if i not in self.shared), elem[1:], strict=True):
            row[i] = v
        return (*row, elem[0])


@dataclass(frozen=True, slots=True)
class BulkStep:
    """One statement of a :class:`Bulk`: its JSON array (None when the rows cannot go as JSON:
    then ``rows`` go to executemany), the shared values it binds, and whether it is grouped."""

    grouped: bool
    blob: bytes | None
    values: tuple[Any, ...]
    rows: Sequence[tuple[Any, ...]]


def _json_array(elems: Sequence[tuple[Any, ...]]) -> bytes | None:
    """``elems`` as one JSON array; None when they cannot go as JSON."""
    try:
        blob = orjson.dumps(elems)
    except TypeError:  # not a JSON scalar somewhere (or a lone surrogate): bind each row
        return None
    # SQLite's JSON functions cut a string at an escaped NUL: bind those rows as they are.
    if b"\\u0000" in blob:
        return None
    return blob


def _translate(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    """A SQLite error that means "damaged file" or "cannot write" as our own clear error."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _CORRUPT_CODES:
        return StoreCorrupt(f"{path} is damaged ({exc}); {recover_hint(path)}")
    if primary == sqlite3.SQLITE_FULL:
        return WriteFailed(path, f"the disk is full ({exc})")
    if primary == sqlite3.SQLITE_IOERR:
        return WriteFailed(path, f"{exc} (the disk may be full, past a file size limit, or failing)")
    return exc


class _Cursor(sqlite3.Cursor):
    """A cursor whose errors come out translated (see :func:`_translate`)."""

    def _path(self) -> Path:
        return getattr(self.connection, "db_path", Path("items.db"))

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            super().execute(sql, parameters)
            return self
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self._path()) from None

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _Cursor:
        try:
            super().executemany(sql, seq_of_parameters)
            return self
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self._path()) from None

    def executescript(self, sql_script: str, /) -> _Cursor:
        try:
            super().executescript(sql_script)
            return self
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self._path()) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self._path()) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self._path()) from None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        try:
            return super().fetchmany(self.arraysize if size is None else size)
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self._path()) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self._path()) from None


class _Connection(sqlite3.Connection):
    """A connection whose shortcut methods use :class:`_Cursor`, so a damaged page or a full
    disk found anywhere (a view's query, a group commit) raises :class:`StoreCorrupt` or
    :class:`~batchtui.engine.files.WriteFailed` instead of a bare ``sqlite3`` error."""

    db_path: Path

    def _cursor(self) -> _Cursor:
        cur = self.cursor(_Cursor)
        assert isinstance(cur, _Cursor)
        return cur

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        return self._cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        return self._cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> _Cursor:
        return self._cursor().executescript(sql_script)


def _connect(target: str | Path, path: Path, **kwargs: Any) -> _Connection:
    conn = sqlite3.connect(target, factory=_Connection, **kwargs)
    assert isinstance(conn, _Connection)
    conn.db_path = path
    return conn


@dataclass(frozen=True, slots=True)
class AttemptRow:
    seq: int
    attempt: int
    status: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: ErrorInfo | None


@dataclass(slots=True)
class ItemRow:
    """A full item row, for views (show, export, the TUI detail screen)."""

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


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    # The \udcXX escapes of a file name that is not UTF-8 (enqueue._data_json), which orjson
    # refuses: for a view, the name with those bytes shown as \xNN, as in the item's key.
    import json

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


def _row(values: Sequence[Any]) -> ItemRow:
    v = list(values)
    v[2] = _loads(v[2])
    v[14] = _loads(v[14])
    return ItemRow(*v)


class ItemStore:
    """The items table and its companions. Not thread-safe: one owner thread per instance."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly

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
        os.close(fd)
        try:
            store = cls._open_rw(tmp, durable=durable)
            try:
                store.conn.executescript(_SCHEMA + _COST_INDEX + _COMPLETE_TRIGGER)
                store.set_meta("schema_version", SCHEMA_VERSION)
            finally:
                store.close()
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
            raise StoreError(f"{path} does not exist; {recover_hint(path)}")
        store = cls._open_rw(path, durable=durable)
        try:
            store._check()
            store.conn.execute(_COMPLETE_TRIGGER)
            store.conn.execute(_COST_INDEX)
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
        old_umask = os.umask(0o077)  # -wal and -shm files get 0600 too
        conn: _Connection | None = None
        try:
            conn = _connect(path, path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA cache_size=-16000")
            conn.execute("PRAGMA busy_timeout=5000")
        except (StoreError, sqlite3.DatabaseError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{path}: {exc}; {recover_hint(path)}") from None
        finally:
            os.umask(old_umask)
        return cls(conn, path, readonly=False)

    @classmethod
    def open_readonly(cls, path: Path) -> ItemStore:
        """A read-only connection for views; never blocks or disturbs the engine."""
        if not path.exists():
            raise StoreError(f"{path} does not exist; {recover_hint(path)}")
        old_umask = os.umask(0o077)  # a reader may create the -shm file: 0600 like the rest
        conn: _Connection | None = None
        try:
            conn = _connect(f"file:{path}?mode=ro", path, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=2000")
            conn.execute("PRAGMA query_only=1")
        except (StoreError, sqlite3.DatabaseError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{path}: {exc}; {recover_hint(path)}") from None
        finally:
            os.umask(old_umask)
        store = cls(conn, path, readonly=True)
        try:
            store._check()
        except BaseException:
            store.close()
            raise
        return store

    def _check(self) -> None:
        try:
            row = self.conn.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone()
        except StoreCorrupt:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a readable batchtui store: {exc}; {recover_hint(self.path)}"
            ) from None
        if row is None:
            raise StoreError(f"{self.path} has no schema version (not a batchtui store); {recover_hint(self.path)}")
        if int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer batchtui (schema {row[0]})")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back when its body or its COMMIT fails (a full disk
        fails the COMMIT), so the connection is usable again and nothing half-done is kept."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                with contextlib.suppress(Exception):
                    self.conn.execute("ROLLBACK")
            raise

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", (key, value))

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, rows: Iterable[tuple[Any, ...] | LineBlock], *, chunk: int = 20000) -> tuple[int, int]:
        """Insert rows in input order; duplicate keys are dropped. Resumable.

        A row is (key, data_json, kind, status, error_type, error_category, error_message,
        error_detail, error_group, finished_at): status is 'pending', or 'failed' with the error
        fields for a record that could not be read. A :class:`LineBlock` stands for its rows.

        seq is assigned by SQLite as max(seq)+1 (a sentinel row -1 makes the first seq 0), so
        dropped duplicates leave no gaps and the insert runs in SQLite's C loop. Each chunk's
        transaction also records how many source rows were consumed (``enqueue_read``) and the
        duplicates so far, so an enqueue cut short by a crash continues where it stopped: the
        caller skips the first ``enqueue_read`` rows of the source.
        The caller's next commit makes the enqueued rows durable (see below).
        Returns (inserted, duplicates) of this call.
        """
        conn = self.conn
        inserted = dropped = 0
        read = int(self.get_meta("enqueue_read", 0) or 0)
        dup_total = int(self.get_meta("duplicates_dropped", 0) or 0)
        insert_invalid = Bulk.of(
            "INSERT OR IGNORE INTO items(key, data, kind, status, error_type, error_category, error_message,"
            " error_detail, error_group, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        insert_pending = Bulk.of("INSERT OR IGNORE INTO items(key, data, kind) VALUES (?, ?, ?)")

        def insert(batch: list[tuple[Any, ...] | LineBlock]) -> None:
            """In input order: runs of pending rows (3 columns, the rest default), line blocks,
            the rare unreadable records with their error fields on their own."""
            run: list[tuple[Any, ...]] = []
            for row in batch:
                if isinstance(row, LineBlock):
                    insert_pending.run(conn, run)
                    run = []
                    keys, lines = row.keys, row.lines
                    elems = (
                        lines if keys is lines else [k if k == v else [k, v] for k, v in zip(keys, lines, strict=True)]
                    )
                    conn.execute(_INSERT_LINE_BLOCK, (orjson.dumps(elems), row.kind))
                    continue
                if row[3] == "pending":
                    run.append(row[:3])
                    continue
                insert_pending.run(conn, run)
                run = []
                insert_invalid.run(conn, [row])
            insert_pending.run(conn, run)

        def flush(batch: list[tuple[Any, ...] | LineBlock]) -> None:
            nonlocal inserted, dropped, read, dup_total
            n = sum(len(row) if isinstance(row, LineBlock) else 1 for row in batch)
            with self.transaction():
                sentinel = conn.execute("SELECT 1 FROM items LIMIT 1").fetchone() is None
                if sentinel:
                    conn.execute("INSERT INTO items(seq, key, data) VALUES (-1, '', 'null')")
                before = conn.total_changes
                insert(batch)
                added = conn.total_changes - before
                if sentinel:
                    conn.execute("DELETE FROM items WHERE seq = -1")
                read += n
                dup_total += n - added
                self.set_meta("enqueue_read", read)
                self.set_meta("duplicates_dropped", dup_total)
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
        thread.start()
        try:
            batch: list[tuple[Any, ...] | LineBlock] = []
            size = 0
            for row in rows:
                batch.append(row)
                size += len(row) if isinstance(row, LineBlock) else 1
                if size >= chunk:
                    if failure:
                        break
                    chunks.put(batch)
                    batch = []
                    size = 0
            if batch and not failure:
                chunks.put(batch)
        finally:
            chunks.put(None)
            thread.join()
            if full:
                conn.execute("PRAGMA synchronous=FULL")
        if failure:
            raise failure[0]
        return inserted, dropped

    # -- the runner's reads ----------------------------------------------------------------

    def counts(self) -> Counts:
        c = Counts()
        for status, n in self.conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status"):
            setattr(c, status, n)
        c.total = c.pending + c.processing + c.complete + c.failed + c.skipped
        return c

    def next_pending(self, after_seq: int, limit: int) -> list[tuple[int, str, str, str, int]]:
        """Pending items after ``after_seq`` in seq order: (seq, key, data as JSON, kind, attempts)."""
        rows: list[tuple[int, str, str, str, int]] = self.conn.execute(
            "SELECT seq, key, data, kind, attempts FROM items WHERE status='pending' AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return rows

    def max_seq(self) -> int:
        """The highest seq stored (-1 when there is none)."""
        top = self.conn.execute("SELECT max(seq) FROM items").fetchone()[0]
        return -1 if top is None else int(top)

    def requeue_processing(self) -> int:
        """Crash recovery: items left 'processing' go back to 'pending', attempts kept."""
        with self.transaction():
            cur = self.conn.execute("UPDATE items SET status='pending' WHERE status='processing'")
        return cur.rowcount

    def cost_totals(self) -> tuple[float, float]:
        """(the sum, the largest) of the items' costs, from the partial index of the items with
        one (two scans of the whole table before: 0.4 s of a 1M-item resume)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(cost), 0), COALESCE(MAX(cost), 0) FROM items WHERE cost IS NOT NULL"
        ).fetchone()
        return float(row[0]), float(row[1])

    def statuses(self, seqs: Iterable[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        seq_list = list(seqs)
        for i in range(0, len(seq_list), 500):
            part = seq_list[i : i + 500]
            marks = ",".join("?" * len(part))
            for seq, status in self.conn.execute(f"SELECT seq, status FROM items WHERE seq IN ({marks})", part):
                out[seq] = status
        return out

    # -- views -----------------------------------------------------------------------------

    def get(self, seq: int) -> ItemRow | None:
        row = self.conn.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE seq=?", (seq,)).fetchone()
        return _row(row) if row else None

    def attempts(self, seq: int) -> list[AttemptRow]:
        out = []
        for r in self.conn.execute(
            "SELECT seq, attempt, status, started_at, finished_at, duration_s, error_type, error_category,"
            " error_message, error_detail FROM attempts WHERE seq=? ORDER BY attempt",
            (seq,),
        ):
            err = ErrorInfo(r[6], r[7], r[8] or "", r[9] or "") if r[6] else None
            out.append(AttemptRow(r[0], r[1], r[2], r[3], r[4], r[5], err))
        return out

    def _where(self, status: str | None, error_type: str | None, text: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if status:
            # A literal (from the fixed set, never user text) lets SQLite use the partial index
            # of failed items; a bound parameter would not (12 ms against 130 ms on 1M rows).
            if status not in _STATUS_SET:
                raise ValueError(f"unknown status {status!r}")
            clauses.append(f"status = '{status}'")
        if error_type:
            clauses.append("error_type = ?")
            args.append(error_type)
        if text:
            clauses.append("(key LIKE ? ESCAPE '\\' OR error_message LIKE ? ESCAPE '\\')")
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def count_where(self, status: str | None = None, error_type: str | None = None, text: str | None = None) -> int:
        where, args = self._where(status, error_type, text)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM items{where}", args).fetchone()[0])

    def page(
        self,
        offset: int,
        limit: int,
        *,
        status: str | None = None,
        error_type: str | None = None,
        text: str | None = None,
    ) -> list[ItemRow]:
        """Rows ``offset .. offset+limit`` of the filtered view, in seq order."""
        where, args = self._where(status, error_type, text)
        if not where:
            # Unfiltered: seq is dense, so a range scan beats OFFSET on a 1M-row table.
            sql = f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE seq >= ? ORDER BY seq LIMIT ?"
            return [_row(r) for r in self.conn.execute(sql, (offset, limit)).fetchall()]
        sql = f"SELECT {', '.join(ITEM_COLUMNS)} FROM items{where} ORDER BY seq LIMIT ? OFFSET ?"
        return [_row(r) for r in self.conn.execute(sql, [*args, limit, offset]).fetchall()]

    def iter_rows(self, status: str | None = None, error_type: str | None = None) -> Iterator[ItemRow]:
        """Stream every row (export); pages by seq so memory stays flat."""
        where, args = self._where(status, error_type, None)
        joiner = " AND " if where else " WHERE "
        last = -1
        while True:
            rows = self.conn.execute(
                f"SELECT {', '.join(ITEM_COLUMNS)} FROM items{where}{joiner}seq > ? ORDER BY seq LIMIT 2000",
                [*args, last],
            ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _row(r)
            last = rows[-1][0]

    def error_groups(self, limit: int = 20) -> list[ErrorGroup]:
        """Failed items grouped by error type and normalized message, biggest first."""
        rows = self.conn.execute(
            "SELECT error_type, MAX(error_category), error_group, COUNT(*), MIN(seq) FROM items"
            " WHERE status='failed' GROUP BY error_type, error_group ORDER BY COUNT(*) DESC, MIN(seq) LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for etype, cat, group, n, example in rows:
            msg = self.conn.execute("SELECT error_message FROM items WHERE seq=?", (example,)).fetchone()
            out.append(
                ErrorGroup(
                    error_type=etype or "unknown",
                    category=cat or "item",
                    message=group or "",
                    count=n,
                    example_seq=example,
                    example_message=(msg[0] if msg else "") or "",
                )
            )
        return out

    def errors_by(self, column: str) -> dict[str, int]:
        if column not in ("error_type", "error_category"):
            raise ValueError(column)
        return {
            (k or "unknown"): n
            for k, n in self.conn.execute(
                f"SELECT {column}, COUNT(*) FROM items WHERE status='failed' GROUP BY {column} ORDER BY 2 DESC"
            )
        }

    def durations(self) -> list[float]:
        """Durations of the complete items, sorted (Python's sort beats SQLite's sorter here)."""
        rows = self.conn.execute(
            "SELECT duration_s FROM items WHERE status='complete' AND duration_s IS NOT NULL"
        ).fetchall()  # one call: the rows of a 1M-item batch do not each pass through Python's __next__
        out = [r[0] for r in rows]
        out.sort()
        return out

    # -- changes outside a run (CLI with no engine running, under the lock) ------------------

    def retry_failed(self, *, error_type: str | None = None, seqs: Sequence[int] | None = None) -> list[int]:
        """failed -> pending; history (attempts rows) kept. Returns the seqs changed."""
        where = "status='failed'"
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
