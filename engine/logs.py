"""Shell items' logs: ``logs/<seq>.<attempt>.out`` / ``.err`` in the batch directory, and
following them while they are written.

The worker writes each stream of each attempt as the output comes (:class:`~.shell.itemfiles.LogFile`),
creating the file on its first byte (a command that prints nothing leaves no file), and keeps it
bounded: when a file reaches twice the batch's ``log_limit`` bytes, its last ``log_limit`` bytes
replace it (a new file renamed over the old one), and so once more when the attempt ends, so a
finished attempt's file holds at most ``log_limit`` bytes, as ``--log-limit`` says. Every
attempt has its own files: a retry never overwrites an earlier attempt's output.

Readers use this module, never the file names: :func:`log_path` names one file,
:func:`attempt_logs` lists an item's attempts that have logs, and :func:`follow` yields the new
output as it is written, like ``tail -F``: it sees a file replaced by its cut copy (a new inode
at the path) and goes on where it was in the copy, and it moves on to the next attempt's files
when the item is retried. A follower too slow to keep up with a command writing faster than it
reads loses what the cuts dropped; the first chunk after such a loss says so (``gap``).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, Literal, NamedTuple

from .fmt import OUTPUT_ERRORS, decode_output

__all__ = [
    "DEFAULT_LOG_LIMIT",
    "STREAMS",
    "AttemptLog",
    "LogChunk",
    "Stream",
    "attempt_logs",
    "follow",
    "log_limit_of",
    "log_name",
    "log_path",
    "log_tail",
]

Stream = Literal["out", "err"]
STREAMS: Final[tuple[Stream, Stream]] = ("out", "err")
#: ``--log-limit``'s default (the config's ``log_limit``).
DEFAULT_LOG_LIMIT: Final = 1 << 20

#: How many bytes a follower reads from one file before it yields them.
_READ: Final = 1 << 16
#: How many attempts past the one followed are looked for (an attempt that printed nothing has
#: no file: the next one with output may be a few further on).
_LOOK_AHEAD: Final = 8
#: How much of a log's end the item detail shows (:func:`log_tail`).
TAIL_BYTES: Final = 16384
_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC


def log_name(seq: int, attempt: int, stream: Stream) -> str:
    """The file name of one stream of one attempt, in ``logs/``: ``<seq>.<attempt>.<stream>``."""
    return f"{seq}.{attempt}.{stream}"


def log_path(batch_dir: str | os.PathLike[str], seq: int, attempt: int, stream: Stream) -> Path:
    """Where one stream of one attempt of item ``seq`` is logged (the file may not exist: a
    stream that printed nothing has none)."""
    return Path(batch_dir) / "logs" / log_name(seq, attempt, stream)


class AttemptLog(NamedTuple):
    """The logs of one attempt of an item: each stream's path (None when it printed nothing)
    and size in bytes (0 then)."""

    attempt: int
    out: Path | None
    err: Path | None
    out_size: int = 0
    err_size: int = 0

    def path(self, stream: Stream) -> Path | None:
        return self.out if stream == "out" else self.err

    def size(self, stream: Stream) -> int:
        return self.out_size if stream == "out" else self.err_size


def _regular_size(path: Path) -> int | None:
    """The size of the regular file at ``path`` (a link is not followed), else None."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def attempt_logs(batch_dir: str | os.PathLike[str], seq: int, *, upto: int | None = None) -> list[AttemptLog]:
    """The attempts of item ``seq`` that have a log, in attempt order.

    ``upto`` (the item's attempt count as the store has it, when the caller knows it) looks at
    attempts 1 to ``upto`` file by file, and at the few after it (the store counts an attempt
    once it has ended: a running one is past it); without it the ``logs/`` folder is listed
    (one pass over it: a big batch's folder holds many files). Only regular files count (a
    link there is no log).
    """
    logs = Path(batch_dir) / "logs"
    attempts: set[int] = set()
    if upto is not None:
        attempts.update(range(1, max(0, upto) + 1))
        later = max(0, upto)
        while (more := _next_attempt(batch_dir, seq, later, STREAMS)) is not None:
            attempts.add(more)
            later = more
    else:
        prefix = f"{seq}."
        try:
            with os.scandir(logs) as entries:
                for entry in entries:
                    name = entry.name
                    if not name.startswith(prefix):
                        continue
                    middle, _, stream = name[len(prefix) :].partition(".")
                    if stream in STREAMS and middle.isdigit() and middle.isascii():
                        attempts.add(int(middle))
        except (FileNotFoundError, NotADirectoryError):
            return []
    found = []
    for attempt in sorted(attempts):
        out, err = log_path(batch_dir, seq, attempt, "out"), log_path(batch_dir, seq, attempt, "err")
        out_size, err_size = _regular_size(out), _regular_size(err)
        if out_size is None and err_size is None:
            continue
        found.append(
            AttemptLog(
                attempt,
                out if out_size is not None else None,
                err if err_size is not None else None,
                out_size or 0,
                err_size or 0,
            )
        )
    return found


def log_tail(path: Path, limit: int = TAIL_BYTES) -> str | None:
    """The end of a log file (its last ``limit`` bytes, from the first whole line, as text);
    None when there is none, or it is no regular file (a link or a fifo put there since the
    logs were listed: never followed, never waited on)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen: it raises on a folder
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - limit))
        data = fh.read()
    text = decode_output(data)
    if size > limit:
        text = "…" + text.split("\n", 1)[-1]
    return text


def log_limit_of(batch_dir: str | os.PathLike[str]) -> int:
    """The batch's ``log_limit`` (from its manifest; the default when it cannot be read)."""
    from .batchdir import BatchDir  # only a follower needs the manifest

    try:
        value = BatchDir(Path(batch_dir)).read_manifest().config.get("log_limit", DEFAULT_LOG_LIMIT)
    except Exception:  # a missing or damaged manifest: the logs are still worth following
        return DEFAULT_LOG_LIMIT
    return value if isinstance(value, int) and value >= 0 else DEFAULT_LOG_LIMIT


class LogChunk(NamedTuple):
    """New output of one stream of one attempt: its bytes as written and as text (UTF-8, an
    undecodable byte replaced; a character split between two reads comes whole in the second).
    ``gap``: output written before this chunk was lost to a cut before it could be read."""

    stream: Stream
    attempt: int
    data: bytes
    text: str
    gap: bool = False


class _Tracker:
    """Where a follower is in one log file: its descriptor, inode and offset."""

    def __init__(self, path: Path, stream: Stream, attempt: int, limit: int) -> None:
        self.path, self.stream, self.attempt, self.limit = path, stream, attempt, limit
        self.fd: int | None = None
        self.ino = 0
        self.offset = 0
        self.gap = False
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors=OUTPUT_ERRORS)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _open(self) -> tuple[int, int] | None:
        """The file at the path opened (descriptor, inode), or None: missing, a link, not a file."""
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EACCES):
                return None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st.st_ino

    def flush(self) -> Iterator[LogChunk]:
        """The end of a character cut short at the end of the output, as a replacement."""
        tail = self.decoder.decode(b"", True)
        self.decoder.reset()
        if tail:
            yield LogChunk(self.stream, self.attempt, b"", tail)

    def _chunk(self, data: bytes, final: bool = False) -> LogChunk:
        chunk = LogChunk(self.stream, self.attempt, data, self.decoder.decode(data, final), self.gap)
        self.gap = False
        return chunk

    def _drain(self) -> Iterator[LogChunk]:
        assert self.fd is not None
        while True:
            data = os.pread(self.fd, _READ, self.offset)
            if not data:
                return
            self.offset += len(data)
            yield self._chunk(data)

    def read(self) -> Iterator[LogChunk]:
        """Everything written since the last read, following the file to its cut copy."""
        if self.fd is None:
            opened = self._open()
            if opened is None:
                return
            self.fd, self.ino = opened
            self.offset = 0
        yield from self._drain()
        try:
            now = os.lstat(self.path)
        except FileNotFoundError:
            return  # removed (the batch is being cleaned up): what was read is all there is
        if now.st_ino == self.ino:
            return
        # Cut: the writer wrote everything to the old file before renaming its last bytes over
        # it, so the old file, read to its end, joins the copy where the copy began.
        yield from self._drain()
        opened = self._open()
        if opened is None:
            return
        fd, ino = opened
        start = self.offset - self.limit
        skip = 0
        if self.limit > 0 and start >= 0:
            probe = min(self.limit, 4096)
            if os.pread(fd, probe, 0) == os.pread(self.fd, probe, start):
                skip = self.limit  # the copy of what was just read: go on after it
        if skip == 0:
            self.gap = True  # more than one cut since the last read: what they dropped is lost
            yield from self.flush()
        os.close(self.fd)
        self.fd, self.ino, self.offset = fd, ino, skip
        yield from self._drain()


def _next_attempt(batch_dir: str | os.PathLike[str], seq: int, after: int, streams: Sequence[Stream]) -> int | None:
    """The first attempt after ``after`` with a log of one of ``streams``."""
    for attempt in range(after + 1, after + 1 + _LOOK_AHEAD):
        for stream in streams:
            if _regular_size(log_path(batch_dir, seq, attempt, stream)) is not None:
                return attempt
    return None


def follow(
    batch_dir: str | os.PathLike[str],
    seq: int,
    *,
    attempt: int | None = None,
    streams: Sequence[Stream] = STREAMS,
    is_done: Callable[[], bool],
    interval: float = 0.1,
    limit: int | None = None,
) -> Iterator[LogChunk]:
    """The output of item ``seq`` as it is written, like ``tail -F``: first what its files hold
    now, then each new piece (looked for every ``interval`` seconds).

    ``attempt=None`` follows the latest attempt that has a log, then each later one as the
    item is retried (an attempt's files are read to their end before the next one's); a given
    ``attempt`` is followed alone, until a later attempt has begun or the item is done.
    ``is_done()`` says the item has finished (complete, failed or skipped: its output is all
    written); the iterator then reads what is left and ends. A caller that wants to stop
    earlier (a closed screen) makes ``is_done()`` return True. Chunks of ``streams`` come in the
    order they are read (stdout and stderr interleaved to within ``interval``). Blocking: run it
    in a thread when the caller has a loop to keep going. ``limit`` is the batch's
    ``log_limit`` (read from its manifest when not given): where a cut copy of a file begins.
    """
    if limit is None:
        limit = log_limit_of(batch_dir)
    if attempt is None:
        found = attempt_logs(batch_dir, seq)
        current = found[-1].attempt if found else 1
    else:
        current = attempt

    def trackers_of(n: int) -> list[_Tracker]:
        return [_Tracker(log_path(batch_dir, seq, n, s), s, n, limit) for s in streams]

    trackers = trackers_of(current)
    try:
        while True:
            # Asked before reading: when it is done, every byte was written before this read.
            done = is_done()
            for tracker in trackers:
                yield from tracker.read()
            later = _next_attempt(batch_dir, seq, current, streams)
            if later is not None:
                if attempt is not None:
                    return  # the attempt asked for is over
                for tracker in trackers:
                    yield from tracker.read()  # the last of this attempt, then the next one
                    yield from tracker.flush()
                    tracker.close()
                current, trackers = later, trackers_of(later)
                continue
            if done:
                for tracker in trackers:
                    yield from tracker.flush()
                return
            time.sleep(interval)
    finally:
        for tracker in trackers:
            with contextlib.suppress(OSError):
                tracker.close()
