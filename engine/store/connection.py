"""Connections to ``items.db`` and the translation of SQLite's errors into ours.

Every connection the store opens is a :class:`StoreConnection`: a damaged page or a full disk
found anywhere (a view's query, a group commit) raises :class:`StoreCorrupt` or
:class:`~batchtui.engine.files.WriteFailed`, with the way out, instead of a bare ``sqlite3``
error. Opening never touches the process's umask (other threads run meanwhile): SQLite makes
the ``-wal`` and ``-shm`` files with the mode of the database file, which is 0600.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from ..errors import BatchtuiError
from ..files import HAS_FULLFSYNC, WriteFailed
from ..fmt import shell_line
from ..grouping import group_id


class StoreError(BatchtuiError):
    """items.db cannot be opened or read (missing, corrupted, newer schema)."""

    hint = "the item store cannot be read; `batchtui show` says what the manifest holds"


class StoreCorrupt(StoreError, sqlite3.DatabaseError):
    """SQLite found items.db damaged while reading or writing it.

    Also a ``sqlite3.DatabaseError``, so code that handles SQLite errors still handles it, and a
    :class:`StoreError`, so the CLI shows it as one clear line with the way out.
    """


class StoreLinked(StoreError):
    """items.db (or its -wal, -shm) is a symbolic link: never opened, since SQLite follows it
    and writes its -wal and -shm next to the target, outside the batch. Not known damaged."""

    hint = ""  # none below: the message names the two ways out


class StoreBusy(StoreError):
    """Another process held items.db locked longer than a reader waits: an engine opening it
    (while it sets up its WAL), stopped there by Ctrl-Z or SIGSTOP, say. Nothing is damaged."""

    hint = "another process holds items.db (an engine stopped with Ctrl-Z or SIGSTOP?): try again once it goes on"

    @classmethod
    def of(cls, path: Path, exc: BaseException) -> StoreBusy:
        """The error for ``path``, given SQLite's ``exc`` (one that :func:`busy` says is a lock)."""
        return cls(f"{path} is locked by another process ({exc})")


def busy(exc: BaseException) -> bool:
    """Whether a SQLite error says the database is locked by another connection."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def recover_hint(path: Path) -> str:
    """The way out for a damaged or missing store, for error messages."""
    return f"rebuild it from results.jsonl and the source with `{shell_line('batchtui', 'recover', path.parent.name)}`"


def missing(path: Path) -> StoreError:
    """The error for an ``items.db`` that is not there. With its batch folder gone too (moved or
    deleted under a dashboard that still shows it), ``recover`` has nothing to rebuild from: the
    error says the folder is gone, not how to rebuild the store alone."""
    if not path.parent.is_dir():
        return StoreError(f"the batch folder {path.parent} is gone (moved or deleted)")
    return StoreError(f"{path} does not exist; {recover_hint(path)}")


_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def translate(exc: sqlite3.DatabaseError, path: Path, *, reader: bool = False) -> Exception:
    """A SQLite error that means "damaged file" or "cannot write" as our own clear error.
    ``reader``: a read-only connection's (export, a view), whose failure to write is no batch
    left to resume: reading a WAL store writes its shared-memory index (items.db-shm)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _CORRUPT_CODES:
        return StoreCorrupt(f"{path} is damaged ({exc}); {recover_hint(path)}")
    if reader and primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return StoreError(
            f"cannot read {path}: {exc} (reading it writes its index items.db-shm: a full disk, a file"
            " size limit such as ulimit -f, or a failing disk?); the batch is not changed"
        )
    if primary == sqlite3.SQLITE_FULL:
        return WriteFailed(path, f"the disk is full ({exc})")
    if primary == sqlite3.SQLITE_IOERR:
        return WriteFailed(path, f"{exc} (the disk may be full, past a file size limit, or failing)")
    if primary == sqlite3.SQLITE_READONLY:
        return StoreReadOnly(f"{path} cannot be changed: {exc} (a read-only or immutable file?)")
    return exc


class _Cursor(sqlite3.Cursor):
    """A cursor whose errors come out translated (see :func:`translate`)."""

    def _translate(self, exc: sqlite3.DatabaseError) -> Exception:
        path = getattr(self.connection, "db_path", Path("items.db"))
        return translate(exc, path, reader=getattr(self.connection, "reader", False))

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            super().execute(sql, parameters)
            return self
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _Cursor:
        try:
            super().executemany(sql, seq_of_parameters)
            return self
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def executescript(self, sql_script: str, /) -> _Cursor:
        try:
            super().executescript(sql_script)
            return self
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        try:
            return super().fetchmany(self.arraysize if size is None else size)
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None


class StoreConnection(sqlite3.Connection):
    """A connection whose shortcut methods use a translating cursor (see the module docstring)."""

    db_path: Path
    reader: bool = False  # opened read-only (connect_readonly)

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


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``conn`` (autocommit mode): BEGIN IMMEDIATE, then COMMIT, or
    ROLLBACK when the body or the COMMIT fails (a full disk fails the COMMIT), so the connection
    is usable again and nothing half-done is kept."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
        raise


@functools.lru_cache(maxsize=4096)
def _group_id(error_type: str | None, group: str | None) -> str | None:
    """SQL ``batchtui_group_id(error_type, error_group)``: the group's id (grouping.group_id), so
    a filter on a group id is SQL like any other; cached, since a group's rows share the pair."""
    if group is None:
        return None
    return group_id(error_type or "unknown", group)


def _connect(target: str | Path, path: Path, **kwargs: Any) -> StoreConnection:
    _check_regular(path)
    conn = sqlite3.connect(target, factory=StoreConnection, **kwargs)
    assert isinstance(conn, StoreConnection)
    conn.db_path = path
    conn.create_function("batchtui_group_id", 2, _group_id, deterministic=True)
    return conn


def _check_regular(path: Path) -> None:
    """SQLite opens what it is given: a fifo in the place of items.db (or of its -wal, -shm)
    blocked the reader for good (``show``, ``export``). Each that exists must be a file, and not
    a symbolic link: SQLite follows one, and makes its ``-wal`` and ``-shm`` next to the link's
    target, outside the batch (a view wrote them there and served another folder's store)."""
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = os.lstat(name).st_mode
        except OSError:
            continue  # none yet, or unreadable: SQLite says what it finds
        if stat.S_ISLNK(mode):
            raise StoreLinked(
                f"{name} is a symbolic link (to {os.readlink(name)}): a batch's store is read and written only in"
                " its own folder (put the file itself there, or rebuild the store with"
                f" `{shell_line('batchtui', 'recover', path.parent.name)}`)"
            )
        if not stat.S_ISREG(mode):
            raise StoreError(f"{name} is not a regular file (a fifo, a device or a folder); {recover_hint(path)}")


def _opened(
    path: Path, target: str | Path, pragmas: tuple[str, ...], *, reader: bool = False, **kwargs: Any
) -> StoreConnection:
    """A connection to ``path`` with ``pragmas`` run; any failure is a :class:`StoreError`."""
    conn: StoreConnection | None = None
    try:
        conn = _connect(target, path, isolation_level=None, check_same_thread=False, **kwargs)
        conn.reader = reader
        for pragma in pragmas:
            conn.execute(pragma)
    except (StoreError, sqlite3.DatabaseError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StoreError):
            raise
        if busy(exc):
            raise StoreBusy.of(path, exc) from None
        raise StoreError(f"{path}: {exc}; {recover_hint(path)}") from None
    return conn


def connect_rw(path: Path, *, durable: bool) -> StoreConnection:
    """A read-write connection in WAL mode (autocommit: the store begins its own transactions).

    ``path`` must exist with its final mode (0600): SQLite gives the ``-wal`` and ``-shm``
    files it creates the database file's mode, whatever the umask.
    """
    return _opened(
        path,
        path,
        (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={'FULL' if durable else 'OFF'}",
            "PRAGMA temp_store=MEMORY",
            "PRAGMA cache_size=-16000",
            "PRAGMA busy_timeout=5000",
            # F_FULLFSYNC for SQLite's syncs too where it exists (macOS), as files.full_fsync.
            *(["PRAGMA fullfsync=ON"] if durable and HAS_FULLFSYNC else []),
        ),
    )


def connect_unlinked(path: Path) -> StoreConnection:
    """A connection that builds a new store in a file nobody else can see yet (its temporary
    name): no rollback journal on disk and no syncs, since a crash before the file is linked
    into place leaves only a temporary file that is never opened again. The file is made
    durable once, whole, by its creator (:meth:`~.items.ItemStore.create`), before the link."""
    return _opened(path, path, ("PRAGMA journal_mode=MEMORY", "PRAGMA synchronous=OFF"))


def sqlite_uri(path: Path, *params: str) -> str:
    """``path`` as a SQLite URI with ``params`` (``mode=ro``): the path percent-encoded, so a
    ``?``, ``#`` or ``%`` in a folder's name stays part of the path. Put in raw, a ``#`` ended
    the path there and took the ``?mode=ro`` with it: a view opened (and created) ``/tmp/a``
    read-write for a batch under ``/tmp/a#b``."""
    return path.absolute().as_uri() + ("?" + "&".join(params) if params else "")


class StoreUnreachable(StoreError):
    """items.db cannot be read from here, though nothing says it is damaged: no permission, or a
    folder this process cannot write while SQLite needs to put its ``-shm`` index there."""

    hint = "no damage is known, and `batchtui recover` would not help; `show` says what the manifest holds"


class StoreReadOnly(StoreUnreachable):
    """items.db can be read but not written (a read-only or immutable file): a command that
    changes the batch cannot, the views still read it. Nothing is damaged."""

    hint = "`show`, `export`, `errors` and `logs` still read it; make items.db writable to change the batch"


def connect_readonly(path: Path) -> StoreConnection:
    """A read-only connection for views; never blocks or disturbs the engine (a ``-shm`` file a
    reader creates gets the database file's mode, as for a writer).

    A store in a folder this process cannot write (an archive on read-only media, a copy without
    write permission) is read too. SQLite's WAL mode needs a ``-shm`` file next to the store, and
    cannot make one there. Where none exists, no connection has the store open (SQLite makes one
    whenever a connection opens in WAL mode), so no engine runs it. With no ``-wal`` file either,
    or an empty one, every committed page is in the store file itself, and it is read as it is
    (``immutable=1``). A ``-wal`` with pages in it and no ``-shm`` (a copy of a batch whose
    engine was killed) cannot be read there: :class:`StoreUnreachable` says so, and how to read it.
    """
    pragmas = ("PRAGMA busy_timeout=2000", "PRAGMA query_only=1")
    if not os.access(path, os.R_OK) and path.exists():
        raise StoreUnreachable(f"{path} cannot be read: permission denied")
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    if not os.access(path.parent, os.W_OK) and not shm.exists():
        try:
            wal_pages = os.stat(wal).st_size > 0
        except FileNotFoundError:
            wal_pages = False
        except OSError:
            wal_pages = True  # unknown: never read the store file alone when pages may be missing
        if wal_pages:
            raise StoreUnreachable(
                f"{path} cannot be read in its folder: the folder cannot be written here, and {wal.name} holds "
                f"committed pages that SQLite can only read with a {shm.name} file next to it; "
                "copy the batch folder somewhere writable and read the copy"
            )
        return _opened(path, sqlite_uri(path, "mode=ro", "immutable=1"), pragmas, reader=True, uri=True)
    return _opened(path, sqlite_uri(path, "mode=ro"), pragmas, reader=True, uri=True)
