"""Linux inotify through ctypes: a watch on one file of a directory, woken by that file alone.

The engine's control watcher (.control.ControlWatcher) only needs to know that control.jsonl
changed. watchfiles watches the whole batch directory, and its Rust thread woke for every write
to items.db-wal and results.jsonl: 7,065 times in a run of 3,000 `true` commands, 2,104 in one
of 2,000 Python calls of 5 ms, each a thread switch on the cores the items run on. inotify can
be told which events to report: the directory's entries made, moved or removed (a name at a
time: a few a second, the live files' atomic writes), and the writes of the file itself.

:class:`FolderWatch` is what the watchers use: it waits until some of a folder's names change
(the control watcher: control.jsonl; the dashboard's: live_progress.json and manifest.json),
and another thread can stop its wait. :class:`Inotify` is the system's interface beneath it
(add a watch, read the events waiting). Elsewhere (macOS, the BSDs) the watchers
keep watchfiles.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import sys
import threading
from collections.abc import Collection
from typing import Final, NamedTuple

__all__ = ["Event", "FolderWatch", "Inotify", "available"]

IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC

#: struct inotify_event: int wd; uint32 mask, cookie, len; then len bytes of name (NUL padded).
_HEADER: Final = struct.Struct("iIII")

_libc: ctypes.CDLL | None = None


class Event(NamedTuple):
    wd: int
    mask: int
    name: str  # the entry's name for a directory's watch; "" for the watched file's own


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            for name in ("inotify_init1", "inotify_add_watch"):
                getattr(libc, name)
        except (OSError, AttributeError):
            return None
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        _libc = libc
    return _libc


def available() -> bool:
    """Whether this system has inotify (Linux, with a libc that exports it)."""
    return _load() is not None


def _check(result: int, what: str, path: str = "") -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}", *((path,) if path else ()))
    return result


class Inotify:
    """One inotify instance: a descriptor to poll, the watches added to it, their events.

    Raises OSError where the system refuses one (EMFILE: ``max_user_instances``, 128 by default;
    ENOSPC: ``max_user_watches``); the caller then does without.
    """

    def __init__(self) -> None:
        libc = _load()
        if libc is None:
            raise OSError("inotify is not available here")
        self._libc = libc
        self.fd = _check(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")

    def fileno(self) -> int:
        return self.fd

    def add(self, path: str | os.PathLike[str], mask: int) -> int:
        """Watch ``path`` for ``mask``'s events; the watch descriptor (the same one again for
        a path whose file is watched already)."""
        raw = os.fsencode(path)
        return _check(self._libc.inotify_add_watch(self.fd, raw, mask), "inotify_add_watch", os.fsdecode(raw))

    def read(self) -> list[Event]:
        """The events waiting (none: an empty list, never a wait)."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        events: list[Event] = []
        at, size = 0, _HEADER.size
        while at + size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, at)
            name = data[at + size : at + size + length].split(b"\0", 1)[0]
            events.append(Event(wd, mask, os.fsdecode(name)))
            at += size + length
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A name of the folder made, moved into place (an atomic rewrite), removed, or written and
#: closed. Not a name moved away: every atomic write of the live files does that.
_ENTRIES: Final = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_CLOSE_WRITE
#: The folder itself moved or removed: nothing more will come.
_GONE: Final = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
#: Every write of a file watched for its writes (one kept open by its writer says nothing else).
_WRITES: Final = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB


class FolderWatch:
    """Waits until some of ``names`` in ``folder`` change (:meth:`changes`), on one thread;
    :meth:`stop` ends the wait from any other.

    The names in ``writes`` are also watched for every write (a command appended to a
    control.jsonl its writer keeps open): a watch on the file, set again on the file that
    replaces it. Raises OSError when the system refuses an instance or a watch, or the folder
    is not there: the caller then polls.
    """

    def __init__(self, folder: str | os.PathLike[str], names: Collection[str], *, writes: Collection[str] = ()) -> None:
        self.folder = os.fspath(folder)
        self.names = frozenset(names)
        self._writes = frozenset(writes)
        self._watch = Inotify()
        self._lock = threading.Lock()  # never a write to the eventfd's number once it is closed
        self._wake = -1
        try:
            self._folder_wd = self._watch.add(self.folder, _ENTRIES | IN_ONLYDIR | IN_DONT_FOLLOW)
            self._files: dict[int, str] = {}  # watch descriptor -> the name it watches the writes of
            for name in self._writes:
                self._watch_file(name)
            self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except BaseException:
            self._watch.close()
            raise
        self._poller = select.poll()
        self._poller.register(self._watch.fileno(), select.POLLIN)
        self._poller.register(self._wake, select.POLLIN)
        self._stopped = threading.Event()

    def _watch_file(self, name: str) -> None:
        try:  # not followed: a link in its place is damage, its reader says so
            wd = self._watch.add(os.path.join(self.folder, name), _WRITES | IN_DONT_FOLLOW)
        except FileNotFoundError:
            return
        self._files[wd] = name

    def changes(self, timeout: float | None = None) -> set[str] | None:
        """The names that changed, once some did; an empty set after ``timeout`` seconds with
        none; None once stopped, or when the folder itself moved or went."""
        while not self._stopped.is_set():
            ready = self._poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
            if self._stopped.is_set():
                break
            if not ready:
                return set()
            changed: set[str] = set()
            for event in self._watch.read():
                if event.mask & IN_Q_OVERFLOW:  # events were lost: every name may have changed
                    for name in self._writes:
                        self._watch_file(name)
                    changed |= self.names
                elif event.wd == self._folder_wd:
                    if event.mask & _GONE:
                        return None
                    if event.name in self.names:
                        changed.add(event.name)
                        if event.name in self._writes and not event.mask & IN_CLOSE_WRITE:
                            self._watch_file(event.name)  # a new file in its place, or none
                elif event.wd in self._files:
                    if event.mask & IN_IGNORED:
                        del self._files[event.wd]  # its file went: the folder's event said so
                    else:
                        changed.add(self._files[event.wd])
            if changed:
                return changed
        return None

    def stop(self) -> None:
        """End :meth:`changes` (now, or at its next call), from any thread."""
        self._stopped.set()
        with self._lock:
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        """Release the descriptors (by the thread that waited, once it is done)."""
        with self._lock:
            if self._wake >= 0:
                os.close(self._wake)
                self._wake = -1
        self._watch.close()

    def __enter__(self) -> FolderWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
