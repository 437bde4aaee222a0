"""Atomic JSON files and the append-only results log.

Atomic write: write a temp file in the same directory, fsync it, rename over the target,
fsync the directory. A reader therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

M = TypeVar("M", bound=BaseModel)


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
    if backup and path.exists():
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
        """Append one complete line (``line`` must not contain a newline; one is added)."""
        data = line + b"\n"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.offset += len(data)
        self._dirty = True

    def sync(self, durable: bool = True) -> int:
        """Make appended lines durable; returns the offset that is now safe to commit."""
        if self._dirty and durable:
            os.fdatasync(self._fd)
        self._dirty = False
        return self.offset

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
