"""A Python callable's output, kept as a shell item's is: what an item prints goes to its own logs
(``logs/<seq>.<attempt>.out`` and ``.err``, read by ``batchtui logs`` and the dashboard's
details), never to the terminal, where it would run through the dashboard or the progress lines.

- While a run's callables run, ``sys.stdout`` and ``sys.stderr`` are :class:`ItemOutput` streams:
  a write from a thread that is running an item goes to that item's log (created on its first
  byte, bounded by ``--log-limit`` as a shell item's); any other write (the engine's own lines,
  the dashboard's) goes on to the stream it replaced. ``print``, ``logging``'s stream handlers
  looked up after the start, ``warnings`` and tracebacks printed by the callable all write there.
- A process-pool worker also points its descriptors 1 and 2 at ``workers.log`` in the batch
  directory (:func:`redirect_descriptors`, beside a detached engine's ``engine.log``): what
  reaches them below Python (a C extension, a child process the callable starts, a print at
  import time) lands there, appended.
  A callable in the thread executor shares the engine's descriptors: output written to them
  directly (not through ``sys.stdout``) still reaches the terminal (stderr, under ``--json``:
  tui/cli/output.py ``json_stdout``). The process executor, the
  default for ``--call``, keeps it. One that closes descriptor 1 or 2 gets it back after its
  item (``end``); until then a file the engine opens may take the number.
- A chunked callable's output goes to the log of the first item of the chunk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import stat
import sys
import threading
from collections.abc import Container, Iterator
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    from .shell.item import Item
    from .shell.itemfiles import LogFile

__all__ = [
    "WORKER_LOG",
    "ItemOutput",
    "begin",
    "end",
    "install",
    "installed",
    "redirect_descriptors",
    "terminal_held",
    "uninstall",
]

#: Where a pool worker's descriptors 1 and 2 point, in the batch directory.
WORKER_LOG: Final = "workers.log"

_current = threading.local()  # .item: the Item this thread runs; .logs: its LogFiles by stream
_lock = threading.Lock()
_installs = 0  # runs that installed the streams (runs may overlap in one process)


class ItemOutput(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` while callables run (see the module's text)."""

    def __init__(self, stream: str, fallback: TextIO, limit: int) -> None:
        super().__init__()
        self.stream, self.fallback, self.limit = stream, fallback, limit

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fallback.fileno()

    @property
    def buffer(self) -> _ItemBytes:
        """The byte stream under it, as a real ``sys.stdout`` has (``sys.stdout.buffer.write(b)``)."""
        return _ItemBytes(self)

    def write(self, text: str) -> int:
        if getattr(_current, "item", None) is None:
            return self.fallback.write(text)
        self.add(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def add(self, data: bytes) -> None:
        """``data`` to the log of this thread's item (there is one)."""
        if not data:
            return
        logs: dict[str, LogFile] = _current.logs
        log = logs.get(self.stream)
        if log is None:
            from .shell.itemfiles import LogFile  # on an item's first print: a worker starts light

            item: Item = _current.item
            log = logs[self.stream] = LogFile(item.batch_dir, item.seq, item.attempt, self.stream, self.limit)  # type: ignore[arg-type]
        log.add(data)

    def flush(self) -> None:
        if getattr(_current, "item", None) is None:
            self.fallback.flush()


class _ItemBytes(io.RawIOBase):
    """``ItemOutput.buffer``: bytes written while an item runs go to its log as they are, else to
    the replaced stream's own buffer."""

    def __init__(self, text: ItemOutput) -> None:
        super().__init__()
        self.text = text

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if getattr(_current, "item", None) is None:
            self.text.fallback.flush()  # what was printed before these bytes stays before them
            return int(self.text.fallback.buffer.write(data))
        view = bytes(data)
        self.text.add(view)
        return len(view)

    def flush(self) -> None:
        if getattr(_current, "item", None) is None:
            self.text.fallback.buffer.flush()


def begin(item: Item) -> None:
    """This thread now runs ``item``: what it prints goes to that item's logs."""
    _current.item = item
    _current.logs = {}


def end() -> None:
    """The item of this thread has ended: its logs are cut to the limit and closed."""
    logs: dict[str, LogFile] | None = getattr(_current, "logs", None)
    _current.item = _current.logs = None
    if logs:
        for log in logs.values():
            log.close()


def put_back() -> None:
    """A chunk of items has ended (its worker calls this once for the chunk): a standard
    descriptor one of them closed is put back (:func:`_put_back_descriptors`).

    Once a chunk, not once an item: the check is a system call for each descriptor, and done
    after each item it took 0.42 s of a 1.52 s run phase of 100,000 quick calls on two threads
    (each call lets go of the GIL, which the other worker and the runner then take). A chunk of
    quick items lasts about 20 ms (:mod:`.dispatch`), so a closed descriptor comes back at most
    that much later; a slow item is a chunk of its own, and it is back right after it, as
    before. Meanwhile the other workers' items and the engine ran beside it either way."""
    if _saved:
        _put_back_descriptors()


_saved: dict[int, int] = {}  # 1, 2 -> a copy of each as the run began (close-on-exec, >= 10)
_told: set[int] = set()


def _save_descriptors() -> None:
    for fd in (1, 2):
        with contextlib.suppress(OSError):  # closed when the run began: nothing to keep
            _saved[fd] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)


def _put_back_descriptors() -> None:
    """A callable that closed descriptor 1 or 2 of the engine's process (``os.close(1)``) gets
    it back as it was when the run began, after its item. Left closed, the engine's progress
    lines and summary failed, and the next file the engine opened took the free number, where
    a write meant for the terminal would land. Only a number that is free is filled (F_DUPFD
    gives the lowest free one from it): a file that took it since is never replaced."""
    for fd, saved in tuple(_saved.items()):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            got = fcntl.fcntl(saved, fcntl.F_DUPFD, fd)
        except OSError:
            continue
        if got != fd:
            os.close(got)  # taken between the check and now: leave it
            continue
        if fd not in _told:
            import logging

            _told.add(fd)
            name = "stdout" if fd == 1 else "stderr"
            logging.getLogger("batchtui.engine").warning(
                "an item's callable closed descriptor %d (%s) of the engine's process: put back", fd, name
            )


def installed() -> bool:
    return isinstance(sys.stdout, ItemOutput) and isinstance(sys.stderr, ItemOutput)


def install(limit: int) -> None:
    """Put :class:`ItemOutput` streams in place of ``sys.stdout`` and ``sys.stderr``, for a run
    whose items are callables; pair each call with :func:`uninstall`."""
    global _installs
    with _lock:
        _installs += 1
        if _installs == 1:
            _save_descriptors()
        if _installs == 1 and sys.stdout is not None and sys.stderr is not None:
            out = sys.stdout = ItemOutput("out", sys.stdout, limit)
            err = sys.stderr = ItemOutput("err", sys.stderr, limit)
            # What stood there, and the process's own streams below it (the dashboard's app
            # puts its own in place of those while it runs).
            streams = {id(out.fallback): out, id(err.fallback): err}
            for real, ours in ((sys.__stdout__, out), (sys.__stderr__, err)):
                if real is not None:
                    streams.setdefault(id(real), ours)
            _retarget_handlers(streams)


def uninstall() -> None:
    """A run ended: the last one puts the streams back, unless something replaced them since,
    and the logging handlers it pointed at them their own."""
    global _installs
    with _lock:
        _installs -= 1
        if _installs:
            return
        for saved in _saved.values():
            os.close(saved)
        _saved.clear()
        for name in ("stdout", "stderr"):
            stream: Any = getattr(sys, name)
            if isinstance(stream, ItemOutput):
                setattr(sys, name, stream.fallback)
        for handler, stream in _retargeted:
            if isinstance(handler.stream, ItemOutput):
                handler.setStream(stream)
        _retargeted.clear()


_retargeted: list[tuple[Any, Any]] = []  # (a logging handler, the stream it had)


def _retarget_handlers(streams: dict[int, ItemOutput]) -> None:
    """``logging`` stream handlers made before the swap (``logging.basicConfig()`` when the
    callable's module was imported, which the preflight does in the engine's process) write to
    the stream that replaced theirs: ``streams`` maps the id of an old stream to its new one.
    Such a handler's lines from outside an item go where the new stream's others go: in the
    dashboard's process, to the app's capture, never under its screen."""
    for handler in _stream_handlers(streams):
        _retargeted.append((handler, handler.stream))
        handler.setStream(streams[id(handler.stream)])


def _stream_handlers(streams: Container[int]) -> Iterator[Any]:
    """Every ``logging.StreamHandler`` of every logger whose stream's id is in ``streams``."""
    import logging

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in streams:
                yield handler


class _SysStream(io.TextIOBase):
    """Whatever ``sys.stdout`` (or ``sys.stderr``) is when a line is written, as ``logging``'s
    last-resort handler looks it up: the dashboard's capture while it runs, the terminal after."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_ = name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        stream = getattr(sys, self.name_)
        return int(stream.write(text)) if stream is not None else len(text)

    def flush(self) -> None:
        stream = getattr(sys, self.name_)
        if stream is not None:
            stream.flush()


@contextlib.contextmanager
def terminal_held() -> Iterator[None]:
    """While the dashboard owns the terminal: ``logging`` handlers that write to the process's
    own stdout or stderr (a ``--call`` module's ``basicConfig()``, run by the preflight's
    import) write to whatever ``sys.stdout`` / ``sys.stderr`` is then, which the app captures,
    never under its screen; given back after."""
    held: list[tuple[Any, Any]] = []
    real = {id(sys.__stdout__): "stdout", id(sys.__stderr__): "stderr"}
    for handler in _stream_handlers(real):
        held.append((handler, handler.stream))
        handler.setStream(_SysStream(real[id(handler.stream)]))
    try:
        yield
    finally:
        for handler, stream in held:
            if isinstance(handler.stream, _SysStream):
                handler.setStream(stream)


def redirect_descriptors(batch_dir: str) -> None:
    """Point descriptors 1 and 2 of this process (a pool worker) at the batch's ``workers.log``,
    appended to, mode 0600; neither the batch directory nor a link planted there is followed."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    # O_NONBLOCK: a fifo planted there must not hang the worker until a reader comes.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK | nofollow
    folder = os.open(batch_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow | os.O_CLOEXEC)
    try:
        target = os.open(WORKER_LOG, flags, 0o600, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        if not stat.S_ISREG(os.fstat(target).st_mode):
            raise OSError(errno.EINVAL, f"{WORKER_LOG} is not a regular file")
        os.set_blocking(target, True)
        for fd in (1, 2):
            os.dup2(target, fd)  # inheritable: a child process of the callable writes there too
    finally:
        os.close(target)
