"""Atomic JSON files and the append-only results log.

Atomic write: write a temp file in the same directory, fsync it, rename over the target,
fsync the directory. A reader therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from . import fdlimit
from .errors import BatchtuiError, UserError

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

M = TypeVar("M", bound=BaseModel)

#: errno values that mean "this file cannot grow or be written now", not "this item is bad".
NO_SPACE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
WRITE_ERRNOS: Final = NO_SPACE_ERRNOS | {errno.EIO, errno.EROFS}
_BATCH_ID: Final = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{8}$")
#: macOS's fsync hands the data to the drive, whose cache may still lose it in a power cut;
#: fcntl(F_FULLFSYNC) flushes that cache too (as SQLite's ``PRAGMA fullfsync``). Elsewhere fsync
#: already does.
_F_FULLFSYNC: Final[int | None] = getattr(fcntl, "F_FULLFSYNC", None)
#: Whether this system has F_FULLFSYNC (the store then asks SQLite for ``PRAGMA fullfsync``).
HAS_FULLFSYNC: Final = _F_FULLFSYNC is not None


def full_fsync(fd: int) -> None:
    """Make a file's (or a folder's) content durable: F_FULLFSYNC where the system has it, else
    fsync; a file system that refuses F_FULLFSYNC (a network share) gets fsync."""
    if _F_FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, _F_FULLFSYNC)
        except OSError:
            pass
        else:
            return
    os.fsync(fd)


def _pick_data_fsync() -> Callable[[int], None]:
    # fdatasync skips the file's times (one write less per group commit) where it exists and is
    # as durable as fsync; macOS has neither fdatasync nor an fsync that is enough.
    if _F_FULLFSYNC is None and sys.platform != "darwin" and hasattr(os, "fdatasync"):
        return os.fdatasync
    return full_fsync


#: Make a file's data durable (its size too, not its times): chosen once for this system.
data_fsync: Final = _pick_data_fsync()


class WriteFailed(UserError):
    """A batch file could not be written: the disk is full, a file size limit was reached, the
    file system is read-only or failing.

    Raised instead of the bare OSError (or SQLite error) so every caller shows one clear line.
    What was committed before stays intact: the batch is resumable once there is room again.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        batch = next((p.name for p in (path.parent, path.parent.parent) if _BATCH_ID.match(p.name)), None)
        how = f"`batchtui resume {batch}`" if batch else "resume the batch"
        super().__init__(f"cannot write {path}: {reason}. Nothing finished is lost: free some space, then {how}")


class OutOfDescriptors(WriteFailed):
    """A batch file could not be opened: no file descriptor is left (``ulimit -n``), used up by a
    callable on the thread executor, say (it shares the engine's). Halts the run like a full
    disk; the spare descriptors (.fdlimit) are let go first: the final files are still written."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        UserError.__init__(
            self,
            f"cannot open {path}: {reason}: this process has used up its file descriptors (ulimit -n); nothing"
            " finished is lost: find what keeps files open (a Python callable on the thread executor shares the"
            " engine's; --executor process runs it apart), then resume",
        )


class LinkRefused(WriteFailed):
    """A file or folder the engine writes in a batch directory is a symbolic link (or the batch
    directory itself was replaced by one): it is never followed, so nothing lands outside the
    batch. Halts a run like a full disk does; resuming refuses until the link is gone."""

    def __init__(self, path: Path) -> None:
        self.path, self.reason = path, "it, or the batch directory, is a symbolic link"
        UserError.__init__(
            self,
            f"refusing to write {path}: it, or its batch directory, is a symbolic link, and batch files "
            "are never written through one; remove the link, then resume",
        )


#: Opening a batch file never follows a symbolic link in its last component.
NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)


def write_failed(path: Path, exc: OSError) -> WriteFailed | OSError:
    """``exc`` as :class:`WriteFailed` when it means the disk cannot take the write (or
    :class:`OutOfDescriptors`, :class:`LinkRefused` when a link was not followed), else itself."""
    if exc.errno in WRITE_ERRNOS:
        return WriteFailed(path, exc.strerror or os.strerror(exc.errno or 0))
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        fdlimit.release_spare()  # room for the final files of the halt this causes
        return OutOfDescriptors(path, exc.strerror or os.strerror(exc.errno or 0))
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return LinkRefused(path)
    return exc


def open_dir(path: Path) -> int:
    """A descriptor of the directory ``path``, refused (:class:`LinkRefused`) when ``path`` is a
    symbolic link: files are then created relative to it, so a folder swapped for a link after
    this check is never written through."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise write_failed(path, exc) from None


def identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names now; None if nothing. Comparing it with the one
    taken when a file or folder was opened tells whether it was deleted, moved or replaced."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or create in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
    try:
        full_fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True, backup: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically.

    ``durable`` fsyncs the file and the directory (skip it for files that are rewritten 4 times a
    second and rebuilt on start, like live_progress.json: the rename alone keeps them whole).
    ``backup`` keeps the previous good copy as ``<name>.bak`` (by hard link, also atomic).
    """
    # Everything happens relative to the folder, opened without following a link, and no name
    # in it is opened through a link: a batch file never lands outside its batch directory.
    dfd = open_dir(path.parent)
    try:
        _atomic_write_at(dfd, path, data, durable=durable, backup=backup)
    finally:
        os.close(dfd)


def _atomic_write_at(dfd: int, path: Path, data: bytes, *, durable: bool, backup: bool) -> None:
    name = path.name
    # Per thread as well as per process: O_EXCL below must never meet another writer's file.
    tmp = f".{name}.{os.getpid()}.{threading.get_native_id()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)  # left by a crash (or planted): O_EXCL creates it anew
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=dfd)
        try:
            write_all(fd, data)
            if durable:
                full_fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # A half-written temp file only takes the space a full disk lacks: remove it.
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise write_failed(path, exc) from None
    if backup and _parses(path):
        # Never back up a damaged file over the good backup: the .bak must stay readable.
        bak = f"{name}.bak"
        bak_tmp = f".{name}.bak.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(bak_tmp, dir_fd=dfd)
        try:
            os.link(name, bak_tmp, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.replace(bak_tmp, bak, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(bak_tmp, dir_fd=dfd)
    try:
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces a link, never follows it
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise write_failed(path, exc) from None
    if durable:
        full_fsync(dfd)


def _parses(path: Path) -> bool:
    """Whether ``path`` exists and holds whole JSON (the only kind of file worth backing up)."""
    try:
        orjson.loads(read_small_file(path))
    except (OSError, orjson.JSONDecodeError, DamagedFile):
        return False
    return True


#: The most a JSON file of a batch (manifest, live progress, report, lock) may hold. The
#: biggest real ones are manifests with long histories: well under a megabyte.
SMALL_FILE_MAX: Final = 64 * 1024 * 1024


def read_small_file(path: Path, limit: int = SMALL_FILE_MAX) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes, or DamagedFile.

    What a batch's files should be, checked before reading: a fifo put in the place of
    manifest.json blocked every view (``ls``, the browser) for good, a link to /dev/zero made
    them read without end. A symbolic link (in the last component) is refused as well: batchtui
    never makes one there. FileNotFoundError when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DamagedFile(path, "a symbolic link, where batchtui writes a file") from None
        raise
    try:  # checked on the bare fd: os.fdopen raises IsADirectoryError on a folder (and leaks fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DamagedFile(path, "not a regular file (a fifo, a device or a folder)")
        if st.st_size > limit:
            raise DamagedFile(path, f"{st.st_size:,} bytes, more than such a file ever holds ({limit:,})")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew while read
        raise DamagedFile(path, f"more than {limit:,} bytes, more than such a file ever holds")
    return data


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_SERIALIZE_NUMPY if not pretty else orjson.OPT_INDENT_2
    return orjson.dumps(obj, option=option | orjson.OPT_NON_STR_KEYS)


def write_model(path: Path, model: BaseModel, *, durable: bool = True, backup: bool = False) -> None:
    """Write a pydantic model as pretty JSON, atomically, with a trailing newline."""
    data = orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
    atomic_write_bytes(path, data, durable=durable, backup=backup)


class DamagedFile(BatchtuiError):
    """A batch file exists but cannot be parsed (nor its backup, when it has one)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def describe(self) -> str:
        return f"{self.path} is damaged ({self.reason}) and has no good backup"


def read_model(
    path: Path, model: type[M], *, use_backup: bool = True, on_backup: Callable[[str], None] | None = None
) -> M:
    """Read a JSON file into ``model``; fall back to ``<name>.bak`` when the file is damaged.

    Raises FileNotFoundError when neither exists, DamagedFile when neither parses. A fall-back
    is never silent: it is logged as a warning (once per file and reason in a process: stderr
    for the CLI, engine.log for a background engine) and told to ``on_backup`` (the runner puts
    it in live_progress.json's warnings).
    """
    candidates = [path]
    if use_backup:
        candidates.append(path.with_name(path.name + ".bak"))
    first_error: DamagedFile | None = None
    found = False
    for candidate in candidates:
        try:
            raw = read_small_file(candidate)
        except FileNotFoundError:
            continue
        except DamagedFile as exc:
            found = True
            first_error = first_error or exc
            continue
        try:
            value = model.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            found = True
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, ValidationError) and exc.errors():
                err = exc.errors()[0]
                reason = f"{'.'.join(str(p) for p in err['loc']) or 'content'}: {err['msg']}"
            first_error = first_error or DamagedFile(candidate, reason)
            continue
        if candidate is not path:
            what = f"is damaged ({first_error.reason})" if first_error else "is missing"
            # One message per file however it was named (a relative and an absolute path to the
            # same manifest warned twice): said once per process.
            where = os.path.abspath(path)
            _warn_backup(f"{where} {what}: read {candidate.name}, its previous good copy", on_backup)
        return value
    if not found:
        raise FileNotFoundError(path)
    assert first_error is not None
    raise first_error


_warned: set[str] = set()


def _warn_backup(message: str, on_backup: Callable[[str], None] | None) -> None:
    if message not in _warned:
        _warned.add(message)
        import logging  # here: a command that reads its files whole never loads it

        logging.getLogger("batchtui.engine").warning("warning: %s", message)
    if on_backup is not None:
        on_backup(message)


class ResultsLog:
    """``results.jsonl``: one line per completed item, appended, never rewritten.

    Every line is written with one ``write`` and ends with ``\\n``. On open, a torn last line
    (a crash in the middle of a write) is cut off, so the file is always valid JSONL.
    ``sync()`` is called before the database commit that marks those items complete; the
    committed byte offset is stored in that same transaction, so on resume the lines past it
    are known to be completions the database has not recorded yet (they are adopted, not redone).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise write_failed(path, exc) from None
        self.torn_bytes = self._cut_torn_tail()
        self.offset = os.lseek(self._fd, 0, os.SEEK_END)
        self._dirty = False
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)
        self.watch = True  # whether damage() looks (off once a damage could not be repaired)

    def _cut_torn_tail(self) -> int:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        # Scan back for the last newline; everything after it is a torn line.
        pos = size
        chunk = 65536
        while pos > 0:
            start = max(0, pos - chunk)
            data = os.pread(self._fd, pos - start, start)
            idx = data.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                if keep < size:
                    os.ftruncate(self._fd, keep)
                    full_fsync(self._fd)
                return size - keep
            pos = start
        os.ftruncate(self._fd, 0)
        full_fsync(self._fd)
        return size

    def append(self, line: bytes) -> None:
        """Append one complete line (``line`` must not contain a newline; one is added).

        All or nothing: when the write fails part way (disk full, file size limit), the part
        that made it is cut off again, so the log never holds a torn line followed by whole
        ones, and :class:`WriteFailed` is raised.
        """
        data = line + b"\n"
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            if len(view) != len(data):
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.offset)
            raise write_failed(self.path, exc) from None
        self.offset += len(data)
        self._dirty = True

    def sync(self, durable: bool = True) -> int:
        """Make appended lines durable; returns the offset that is now safe to commit."""
        if self._dirty and durable:
            try:
                data_fsync(self._fd)
            except OSError as exc:
                raise write_failed(self.path, exc) from None
        self._dirty = False
        return self.offset

    def datasync(self) -> None:
        """Make every line appended so far durable. Safe from another thread (the run's
        committer) while this one appends: it never touches the offset or the dirty flag."""
        try:
            data_fsync(self._fd)
        except OSError as exc:
            raise write_failed(self.path, exc) from None

    def fileno(self) -> int:
        return self._fd

    def damage(self) -> str | None:
        """What happened to the file behind this engine's back, or None when it is exactly what
        was written to it: the same file (device and inode) at the path, its size the offset.

        The engine is the file's only writer, so any difference means lines were lost from it
        (cut, deleted, replaced) or someone else wrote to it. One ``stat``: cheap enough for
        every group commit."""
        if not self.watch:
            return None
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return "was deleted"
        if (st.st_dev, st.st_ino) != self._identity:
            return "was replaced by another file"
        if st.st_size < self.offset:
            return f"was cut from {self.offset} to {st.st_size} bytes"
        if st.st_size > self.offset:
            return f"grew by {st.st_size - self.offset} bytes that this engine did not write"
        return None

    def reopen(self) -> None:
        """Open the file at the path again (it was replaced by a rewritten copy): appends go to
        it from its end, and :meth:`damage` compares against it."""
        old = self._fd
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise write_failed(self.path, exc) from None
        os.close(old)
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)
        self.offset = st.st_size
        self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_jsonl(path: Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any] | None, bytes]]:
    """Yield (end_offset, parsed object or None if invalid, raw line) for lines from ``start``.

    Streams the file; a last line without a newline is not yielded (it is torn).
    """
    with path.open("rb") as fh:
        fh.seek(start)
        offset = start
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            offset += len(raw)
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield offset, None, raw
                continue
            yield offset, obj if isinstance(obj, dict) else None, raw
