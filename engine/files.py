"""Atomic JSON files and the append-only results log.

Atomic write: write a temp file in the same directory, fsync it, rename over the target,
fsync the directory. A reader therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from .errors import UserError

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

M = TypeVar("M", bound=BaseModel)

#: errno values that mean "this file cannot grow or be written now", not "this item is bad".
NO_SPACE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
WRITE_ERRNOS: Final = NO_SPACE_ERRNOS | {errno.EIO, errno.EROFS}
_BATCH_ID: Final = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{8}$")


class WriteFailed(UserError):
    """A batch file could not be written: the disk is full, a file size limit was reached, the
    file system is read-only or failing.

    Raised instead of the bare OSError (or SQLite error) so every caller shows one clear line.
    What was committed before stays intact: the batch is resumable once there is room again.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        batch = next((p.name for p in (path.parent, path.parent.parent) if _BATCH_ID.match(p.name)), None)
        how = f"`batchtui resume {batch}`" if batch else "resume the batch"
        super().__init__(f"cannot write {path}: {reason}. Nothing finished is lost: free some space, then {how}")


def write_failed(path: Path, exc: OSError) -> WriteFailed | OSError:
    """``exc`` as :class:`WriteFailed` when it means the disk cannot take the write, else itself."""
    if exc.errno in WRITE_ERRNOS:
        return WriteFailed(path, exc.strerror or os.strerror(exc.errno or 0))
    return exc


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or create in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True, backup: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically.

    ``durable`` fsyncs the file and the directory (skip it for files that are rewritten 4 times a
    second and rebuilt on start, like live_progress.json: the rename alone keeps them whole).
    ``backup`` keeps the previous good copy as ``<name>.bak`` (by hard link, also atomic).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # A half-written temp file only takes the space a full disk lacks: remove it.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_failed(path, exc) from None
    if backup and _parses(path):
        # Never back up a damaged file over the good backup: the .bak must stay readable.
        bak = path.with_name(path.name + ".bak")
        bak_tmp = path.with_name(f".{path.name}.bak.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(bak_tmp)
        try:
            os.link(path, bak_tmp)
            os.replace(bak_tmp, bak)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(bak_tmp)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def _parses(path: Path) -> bool:
    """Whether ``path`` exists and holds whole JSON (the only kind of file worth backing up)."""
    try:
        orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return True


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_SERIALIZE_NUMPY if not pretty else orjson.OPT_INDENT_2
    return orjson.dumps(obj, option=option | orjson.OPT_NON_STR_KEYS)


def write_model(path: Path, model: BaseModel, *, durable: bool = True, backup: bool = False) -> None:
    """Write a pydantic model as pretty JSON, atomically, with a trailing newline."""
    data = orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
    atomic_write_bytes(path, data, durable=durable, backup=backup)


class DamagedFile(Exception):
    """A batch file exists but cannot be parsed."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_model(path: Path, model: type[M], *, use_backup: bool = True) -> M:
    """Read a JSON file into ``model``; fall back to ``<name>.bak`` when the file is damaged.

    Raises FileNotFoundError when neither exists, DamagedFile when neither parses.
    """
    candidates = [path]
    if use_backup:
        candidates.append(path.with_name(path.name + ".bak"))
    first_error: DamagedFile | None = None
    found = False
    for candidate in candidates:
        try:
            raw = candidate.read_bytes()
        except FileNotFoundError:
            continue
        found = True
        try:
            return model.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            first_error = first_error or DamagedFile(candidate, reason)
    if not found:
        raise FileNotFoundError(path)
    assert first_error is not None
    raise first_error


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
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self.torn_bytes = self._cut_torn_tail()
        self.offset = os.lseek(self._fd, 0, os.SEEK_END)
        self._dirty = False

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
                    os.fsync(self._fd)
                return size - keep
            pos = start
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
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
                os.fdatasync(self._fd)
            except OSError as exc:
                raise write_failed(self.path, exc) from None
        self._dirty = False
        return self.offset

    def datasync(self) -> None:
        """Make every line appended so far durable. Safe from another thread (the run's
        committer) while this one appends: it never touches the offset or the dirty flag."""
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise write_failed(self.path, exc) from None

    def truncate_to(self, offset: int) -> None:
        """Cut the log back to a committed offset (used only by ``recover`` tooling)."""
        os.ftruncate(self._fd, offset)
        self.offset = offset

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
