"""control.jsonl as a file: opened only when it is a regular file, and read by the engine.

Something else in its place (a folder, a fifo, a device, a link) is :class:`DamagedControl`:
a folder made the engine's loop and the steering verbs die with a traceback, a fifo blocked
their open for good, a link was followed out of the batch directory. The engine's
:class:`ControlReader` says the damage (and goes on running); the verbs refuse in one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

import orjson
from pydantic import ValidationError

from .files import FILE_MODE, NOFOLLOW, DamagedFile
from .fmt import kind_of
from .models import ControlCommand

if TYPE_CHECKING:
    from .batchdir import BatchDir

MAX_LINE: Final = 1 << 20


class DamagedControl(DamagedFile):
    """Something other than a regular file is in the place of control.jsonl (a folder, a fifo,
    a device, a link): no command can be sent through it, nor read by the engine."""

    def __init__(self, path: Path, reason: str, op: str | None = None) -> None:
        super().__init__(path, reason)
        self.op = op

    def describe(self) -> str:
        head = f"cannot send {self.op} to" if self.op else "commands cannot reach the engine of"
        return (
            f"{head} batch {self.path.parent.name}: {self.path} is damaged ({self.reason});"
            " remove it: the next command makes the file anew and an engine reads it from its start"
        )


def open_control(path: Path, flags: int, op: str | None = None) -> int:
    """A descriptor on control.jsonl, checked to be a regular file (never a link followed, nor a
    fifo that blocks the open or the read for good); :class:`DamagedControl` otherwise."""
    try:
        fd = os.open(path, flags | NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        reasons = {
            errno.ELOOP: "a symbolic link in its place, where batchtui writes a regular file",
            errno.EISDIR: "a folder in its place, not a regular file",
            errno.ENXIO: "a fifo in its place, not a regular file",  # opened to write, no reader
        }
        if exc.errno in reasons:
            raise DamagedControl(path, reasons[exc.errno], op) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DamagedControl(path, f"{kind_of(mode, 'not a regular file')} in its place, not a regular file", op)
    return fd


def control_problem(batch: BatchDir) -> str | None:
    """Why no command can go through ``batch``'s control.jsonl (something other than a regular
    file is in its place), or None: for the views to say it."""
    try:
        mode = os.stat(batch.control, follow_symlinks=False).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    what = "a symbolic link" if stat.S_ISLNK(mode) else kind_of(mode, "not a regular file")
    return DamagedControl(batch.control, f"{what} in its place, not a regular file").describe()


class ControlReader:
    """The engine's reader of control.jsonl: returns commands appended since the last read.

    The position is an offset *in one file*: the reader also keeps the file's identity
    (``st_dev``, ``st_ino``) and the last bytes it consumed. When control.jsonl is deleted and
    made anew (the next ``append_command`` creates it), replaced, or truncated (to below the
    offset, or rewritten in place), the new content is read from its start, so the command
    that recreated the file is never lost. An inode number can be reused at once by a new
    file, so identity alone is not enough: the consumed tail must still be where it was.
    """

    TAIL: Final = 64

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        self.path = path
        self.offset = 0
        self.bad_lines = 0
        self.restarts = 0  # how often the file was found replaced or truncated
        self._ident: tuple[int, int] | None = None
        self._seen: tuple[int, int, int, int] | None = None  # dev, ino, size, mtime at the last read
        self._tail = b""  # the bytes just before ``_tail_at``: what was consumed last
        self._tail_at = -1
        self._tail_sum: tuple[int, int] | None = None  # (length, crc32) of a tail handed to seek()
        #: Why control.jsonl cannot be read (a folder in its place...), None when it can.
        self.damaged: str | None = None
        try:
            with self._open() as fh:
                st = os.fstat(fh.fileno())
                self._ident = (st.st_dev, st.st_ino)
                if not from_start:
                    # Commands written while no engine ran were applied to the store directly.
                    self.offset = st.st_size
                    self._remember_tail(fh)
        except FileNotFoundError:
            pass
        except DamagedControl as exc:
            self._damaged(exc)

    def _open(self) -> BinaryIO:
        return os.fdopen(open_control(self.path, os.O_RDONLY), "rb")

    def _damaged(self, exc: DamagedControl) -> None:
        """Note the damage, and what is in the file's place: :meth:`changed` is False until that
        changes (a folder is not read again at every loop turn)."""
        self.damaged = exc.reason
        with contextlib.suppress(OSError):
            st = os.stat(self.path, follow_symlinks=False)
            self._seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def identity(self) -> str | None:
        """The file the offset refers to, as a token (None before the file existed) for an
        engine to store beside the offset and hand to :meth:`seek` on resume:
        ``dev:ino:length:crc32`` of the bytes consumed last. The checksum tells a new file that
        got the freed inode number (common on ext4) from the one that was read."""
        if self._ident is None:
            return None
        token = f"{self._ident[0]}:{self._ident[1]}"
        if self._tail_at == self.offset:
            if self._tail:
                token += f":{len(self._tail)}:{zlib.crc32(self._tail):08x}"
            elif self._tail_sum is not None:  # handed over by seek(), nothing read since
                token += f":{self._tail_sum[0]}:{self._tail_sum[1]:08x}"
        return token

    def seek(self, offset: int, identity: str | None = None) -> None:
        """Continue from ``offset``, where a previous reader of the same file stopped.

        With ``identity`` (see :attr:`identity`), a different file restarts at 0. Without it,
        an offset that is past the end or not at a line boundary of today's file restarts at 0
        too: that offset belonged to a file that was replaced meanwhile.
        """
        self.offset = max(0, offset)
        self._seen = None
        self._tail, self._tail_at, self._tail_sum = b"", -1, None
        if identity is not None:
            self._ident, self._tail_sum = _parse_identity(identity)
            if self._tail_sum is not None:
                self._tail_at = self.offset

    def changed(self) -> bool:
        """Whether control.jsonl may hold something unread: a cheap ``stat``, for the loop."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return self.damaged is not None  # the damage removed: said at the next read
        seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if self.damaged is not None:
            return seen != self._seen
        return seen != self._seen or st.st_size != self.offset

    def read_new(self) -> list[ControlCommand]:
        """The commands appended since the last read. Something other than a regular file in
        the place of control.jsonl (a folder, a fifo, a link) is not read: :attr:`damaged`
        says why until a regular file (or none) is there again."""
        try:
            with self._open() as fh:
                self.damaged = None
                st = os.fstat(fh.fileno())
                if not self._continues(fh, st):
                    self.offset = 0  # a new file (or rewritten): everything in it is unread
                    self.restarts += 1
                self._ident = (st.st_dev, st.st_ino)
                self._seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                size = st.st_size
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
        except FileNotFoundError:
            self.damaged = None
            return []  # deleted: the identity is kept, so the file made next is read from 0
        except DamagedControl as exc:
            self._damaged(exc)
            return []
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_LINE:  # a runaway partial line: drop it
                self.offset += len(data)
                self._set_tail(data)
                self.bad_lines += 1
            return []
        self.offset += end + 1
        self._set_tail(data[: end + 1])
        out: list[ControlCommand] = []
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                out.append(ControlCommand.model_validate(orjson.loads(raw)))
            except (orjson.JSONDecodeError, ValidationError):
                self.bad_lines += 1
        return out

    def _continues(self, fh: BinaryIO, st: os.stat_result) -> bool:
        """Whether the open file is the one ``offset`` points into, unchanged up to it."""
        if self.offset == 0:
            return True
        if self._ident is not None and (st.st_dev, st.st_ino) != self._ident:
            return False  # deleted and made anew, or replaced by a rename
        if st.st_size < self.offset:
            return False  # truncated
        if self._tail_at == self.offset and self._tail:
            start = self.offset - len(self._tail)
            return os.pread(fh.fileno(), len(self._tail), start) == self._tail
        if self._tail_at == self.offset and self._tail_sum is not None:
            length, crc = self._tail_sum
            return length <= self.offset and zlib.crc32(os.pread(fh.fileno(), length, self.offset - length)) == crc
        # An offset handed over by seek(): it must end a line of this file.
        return os.pread(fh.fileno(), 1, self.offset - 1) == b"\n"

    def _set_tail(self, consumed: bytes) -> None:
        self._tail_sum = None
        if len(consumed) >= self.TAIL:
            self._tail = consumed[-self.TAIL :]
        else:
            self._tail = (self._tail if self._tail_at == self.offset - len(consumed) else b"") + consumed
            self._tail = self._tail[-self.TAIL :]
        self._tail_at = self.offset

    def _remember_tail(self, fh: BinaryIO) -> None:
        self._tail_sum = None
        start = max(0, self.offset - self.TAIL)
        self._tail = os.pread(fh.fileno(), self.offset - start, start)
        self._tail_at = self.offset


def _parse_identity(text: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """``dev:ino[:length:crc32]`` -> ((dev, ino), (length, crc32)); None for what is missing."""
    parts = text.split(":")
    try:
        ident = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return None, None
    try:
        return ident, (int(parts[2]), int(parts[3], 16))
    except (IndexError, ValueError):
        return ident, None
