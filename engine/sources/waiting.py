"""A source that keeps its reader waiting: a pipe, a FIFO, a terminal.

A regular file is read as fast as the disk gives it, and every view sees the enqueue's commits
to the store as its engine's signs of life (engine/liveness.py). A pipe gives what its writer
sends, when it sends it: ``(seq 100; sleep 20; seq 100) | batchtui run -`` blocked the engine in
a read for 20 s with nothing to commit, and every view said it had stopped responding. So such
a source is read through :class:`WaitingReader`, which waits for its data with a timeout and
says every :data:`TICK_S` seconds that it still waits (:meth:`SourceWait.waited`): the enqueue
commits the items it holds then (a view counts them), and the engine touches its lock file
(a view reads that as "waiting for its source": see :mod:`..liveness`). The reading thread
itself says it, so an engine frozen (SIGSTOP) or hung elsewhere says nothing and reads as not
responding.

The lines of such a source are read as they come (:func:`pipe_blocks`), not 256 KiB at a time:
a text file object's ``read(n)`` waits for ``n`` characters or the end, and held the 100 lines
sent before the pause. A regular file (also one given as stdin, ``< file``) is read as before.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Generic, TextIO, TypeVar

from ..errors import UserError
from ..fmt import clean
from ..interrupts import held_signals
from .text import MARK_ERRORS, codec, open_text, stream_error

#: How often a waiting reader says it still waits: well within liveness's 5 s.
TICK_S: Final = 1.0

#: How long a named pipe read again (a resume of a reading cut short, a rescan) waits for a
#: writer to open it: the one that fed it is gone with the reader it fed (a kill ends its
#: writes with EPIPE), and one that never comes must not keep a resume waiting for ever.
REREAD_WAIT_S: Final = 30.0

#: At most this many bytes a read (what has come may be less).
_READ_BYTES: Final = 256 * 1024

T = TypeVar("T")


class NoWriter(UserError):
    """A named pipe read again (a resume, a rescan, an add finished) that no writer opened within
    :attr:`SourceWait.writer_within` seconds."""

    def __init__(self, path: str, within: float) -> None:
        super().__init__(f"no writer opened the named pipe {clean(path)} within {within:g} s")
        self.path = path


class SourceWait:
    """Told while a source keeps its reader waiting (every :data:`TICK_S` seconds of a wait).
    The enqueue and the engine :meth:`listen`; the readers of the sources call :meth:`waited`.

    ``writer_within``: for a source read *again* (a resume of a reading cut short, a rescan),
    how long the open of a named pipe waits for its writer; None (a first reading) waits as long
    as it takes, as ``cat`` does. A writer that never comes then is :class:`NoWriter`: raised
    by the open, or, with ``go_on``, noted in :attr:`no_writer` and the pipe read as empty (the
    other sources are read on)."""

    def __init__(
        self,
        first: Callable[[], None] | None = None,
        *,
        tick: float = TICK_S,
        writer_within: float | None = None,
        go_on: bool = False,
    ) -> None:
        self.tick = tick
        self.writer_within = writer_within
        self.go_on = go_on
        self.no_writer: list[str] = []
        self._listeners: list[Callable[[], None]] = [first] if first is not None else []

    def listen(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` on every tick of a wait, after the listeners before it."""
        self._listeners.append(fn)

    def waited(self) -> None:
        for fn in self._listeners:
            fn()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` (a call that may block), ticking while it has not returned (see
        :class:`_InThread`)."""
        opening = _InThread(fn)
        while not opening.done.wait(self.tick):
            self.waited()
        return opening.result()

    def open_pipe(self, path: str) -> int:
        """A descriptor reading the named pipe ``path``, opened once its writer opens it too;
        :class:`NoWriter` when ``writer_within`` is set and no writer came by then."""
        if self.writer_within is None or not named_pipes([path]):  # a device opens at once
            return self.call(lambda: os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        deadline = time.monotonic() + self.writer_within
        opening = _InThread(lambda: os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        done = opening.done
        timed_out = False
        while not done.wait(max(0.0, min(self.tick, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                timed_out = True
                break
            self.waited()
        while timed_out and not done.is_set():
            # Time is up: the open still waits. A writer's open that gives up at once ends it
            # (no thread left blocked on the pipe); ENXIO until that open has begun to wait.
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            done.wait(0.05)
        fd = opening.result()
        if timed_out:
            os.close(fd)  # opened by the end of the wait (ours, or a writer's as it ended)
            raise NoWriter(path, self.writer_within)
        return fd


class _InThread(Generic[T]):
    """``fn()``, a call that may block (opening a FIFO waits for its writer), run in a daemon
    thread of its own; ``done`` is set once it has returned or raised. If the caller is
    interrupted (a Ctrl-C), the thread is left to its call, which the process's exit ends."""

    __slots__ = ("_failed", "_got", "done")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.done = threading.Event()
        self._got: list[T] = []
        self._failed: list[BaseException] = []

        def run() -> None:
            try:
                self._got.append(fn())
            except BaseException as exc:
                self._failed.append(exc)
            finally:
                self.done.set()

        with held_signals():  # a Ctrl-C inside start() broke its lock (engine/interrupts.py)
            threading.Thread(target=run, name="batchtui-source-open", daemon=True).start()

    def result(self) -> T:
        """What ``fn`` returned, once ``done``; what it raised is raised here."""
        if self._failed:
            raise self._failed[0]
        return self._got[0]


def may_wait(fd: int) -> bool:
    """Whether reading ``fd`` may wait on a writer: anything but a regular file (a pipe, a FIFO,
    a terminal, a socket). False when it cannot be told."""
    try:
        return not stat.S_ISREG(os.fstat(fd).st_mode)
    except (OSError, ValueError):
        return False


class WaitingReader(io.RawIOBase):
    """The bytes of ``fd``, each read (the buffered reader above calls :meth:`readinto`) waiting
    for data in ticks of ``wait.tick`` seconds and telling ``wait`` after each (see the module
    doc). ``fd`` is closed with this reader only when ``closefd`` (stdin's is not)."""

    def __init__(self, fd: int, wait: SourceWait, *, closefd: bool = True) -> None:
        super().__init__()
        self._fd = fd
        self._wait = wait
        self._closefd = closefd
        self._poll: select.poll | None = None
        if hasattr(select, "poll") and sys.platform != "darwin":  # macOS: poll fails on devices
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN | select.POLLPRI)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def _ready(self) -> bool:
        if self._poll is not None:
            return bool(self._poll.poll(int(self._wait.tick * 1000)))
        return bool(select.select([self._fd], [], [], self._wait.tick)[0])

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._ready():
            self._wait.waited()
        return os.readv(self._fd, [buffer])

    def close(self) -> None:
        if not self.closed and self._closefd:
            os.close(self._fd)
        super().close()


#: A pipe's CSV head: after its first line, what more comes with gaps no longer than this.
HEAD_GAP_S: Final = 0.25


class _Prefixed(io.RawIOBase):
    """The bytes ``prefix``, then the rest of ``rest`` (left open when this closes)."""

    def __init__(self, prefix: bytes, rest: io.BufferedReader) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def arrived_head(f: TextIO, limit: int, *, newline: str | None, gap: float = HEAD_GAP_S) -> tuple[str, TextIO] | None:
    """For ``f`` read through a :class:`WaitingReader` (a pipe) and not read yet: the text that
    has come so far, at least its first whole line (waited for as long as it takes), then what
    comes with gaps no longer than ``gap`` seconds, at most ``limit`` bytes; and a text stream
    that reads ``f`` from its start again (those bytes first, decoded as ``f`` decodes them, with
    ``f``'s ``newline``).
    None for any other stream (a regular file's head is read as it always was).

    A CSV from a pipe sniffs its dialect on this: read to ``limit`` bytes, a writer that sends a
    line a second kept its first record back for 64 KiB (about 18 hours of one-line records)."""
    binary = getattr(f, "buffer", None)
    raw = getattr(binary, "raw", None)
    if not isinstance(binary, io.BufferedReader) or not isinstance(raw, WaitingReader):
        return None
    got = bytearray()
    while len(got) < limit:
        want = limit - len(got)
        data = binary.read1(want)  # waits (telling the waits) for what comes first
        if not data:
            break  # the writer closed it
        got += data
        # Less than asked: nothing is left in the buffer, so what more there is is in the pipe.
        if b"\n" in got and len(data) < want and not select.select([raw.fileno()], [], [], gap)[0]:
            break
    # Not final: a character cut at the end waits for its rest (the stream below decodes it).
    head = codecs.getincrementaldecoder(f.encoding)(errors=f.errors or "strict").decode(bytes(got))
    again = io.TextIOWrapper(
        io.BufferedReader(_Prefixed(bytes(got), binary), buffer_size=_READ_BYTES),
        encoding=f.encoding,
        errors=f.errors,
        newline=newline,
    )
    return head, again


def waiting_binary(fd: int, wait: SourceWait, *, closefd: bool = True) -> io.BufferedReader:
    """``fd`` as a buffered binary file read through :class:`WaitingReader`."""
    return io.BufferedReader(WaitingReader(fd, wait, closefd=closefd), buffer_size=_READ_BYTES)


def waiting_text(
    fd: int, wait: SourceWait, encoding: str, newline: str | None = None, *, closefd: bool = True
) -> io.TextIOWrapper:
    """``fd`` as text (``encoding`` as :func:`.text.codec` gives it, undecodable bytes marked),
    read through :class:`WaitingReader`: a line is there as soon as it has come."""
    return io.TextIOWrapper(
        waiting_binary(fd, wait, closefd=closefd), encoding=encoding, errors=MARK_ERRORS, newline=newline
    )


@contextlib.contextmanager
def open_source_text(
    path: str, encoding: str, newline: str | None = None, wait: SourceWait | None = None
) -> Iterator[TextIO]:
    """:func:`.text.open_text`, but a source that is no regular file (a FIFO, ``/dev/fd/N``, a
    device) is read through :class:`WaitingReader` when ``wait`` is given; a FIFO is also opened
    ticking (the open waits for its writer)."""
    if wait is None or _regular(path):
        with open_text(path, encoding, newline) as f:
            yield f
        return
    name = codec(encoding)
    try:
        fd = wait.open_pipe(path)
    except OSError as exc:
        raise UserError(f"cannot read {clean(path)}: {exc.strerror or exc}") from None
    with waiting_text(fd, wait, name, newline) as f:
        try:
            yield f
        except UnicodeError as exc:
            raise stream_error(clean(path), encoding, exc) from None


def _regular(path: str) -> bool:
    """A regular file, or a path that cannot be looked at (:func:`.text.open_text` says why)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def named_pipes(paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` that are named pipes now (a FIFO: what a second reading cannot read
    as the first did)."""
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(os.stat(path).st_mode):
                found.append(path)
    return found


def pipe_blocks(binary: io.BufferedReader, encoding: str) -> Iterator[list[str]]:
    """The lines of a pipe (without their newline), a block of what has come at a time, decoded
    and split as a text file opened with universal newlines splits them (``encoding``: a name
    :func:`.text.codec` accepts). A line not ended yet waits for the rest."""
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(codec(encoding))(errors=MARK_ERRORS), True)
    tail = ""
    while True:
        data = binary.read1(_READ_BYTES)
        chunk = decoder.decode(data, final=not data)
        if chunk:
            lines = (tail + chunk).split("\n") if tail else chunk.split("\n")
            tail = lines.pop()
            if lines:
                yield lines
        if not data:
            break
    if tail:
        yield [tail]


__all__ = [
    "REREAD_WAIT_S",
    "TICK_S",
    "NoWriter",
    "SourceWait",
    "WaitingReader",
    "arrived_head",
    "may_wait",
    "named_pipes",
    "open_source_text",
    "pipe_blocks",
    "waiting_binary",
    "waiting_text",
]
