"""Watching a batch directory: live_progress.json and manifest.json, parsed off the UI thread.

On Linux, inotify (engine/inotify.py) watches the *directory* for those two names alone
(watching the file itself misses atomic renames, which replace its inode): the engine's many
writes to items.db and results.jsonl wake nothing. Elsewhere watchfiles watches the directory
with a filename filter and a short debounce. A slow poll backs both up where neither can run.
The thread only reads and parses, then posts messages: the UI never blocks on disk.

A file is read again only when its stamp (inode, size, modification time) moved. A stamp taken
within :data:`RACY_S` of the file's modification time is not trusted, as git's racy index
entries: a file system keeps times to a tick (4 ms on ext4, 1-2 s on some), and a replacement in
the same tick may reuse the freed inode and have the same size. Such a file is compared by its
bytes until its time is older than that, so the last state an engine writes is never missed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from textual.message import Message

from batchtui.engine import inotify, tasklimit
from batchtui.engine.control import quiet_watchfiles
from batchtui.engine.files import DamagedFile, read_model, read_small_file
from batchtui.engine.models import LiveProgress, Manifest

from .messages import FileDamaged, LiveUpdated, ManifestUpdated

WATCHED: Final = ("manifest.json", "live_progress.json")  # manifest first: a fixed, sensible order
POLL_S: Final = 1.0
#: A stamp taken less than this after the file's modification time may hide a change (above).
RACY_S: Final = 2.0


class BatchWatcher:
    """Posts LiveUpdated / ManifestUpdated for one batch directory until stopped."""

    def __init__(self, batch: Path, post: Callable[[Message], object], *, use_inotify: bool = True) -> None:
        self.batch = batch
        self.post = post
        self.use_inotify = use_inotify
        self._stop = threading.Event()
        # name -> (its stamp, the bytes read under it while the stamp could not be trusted)
        self._stamps: dict[str, tuple[tuple[int, int, int], bytes | None]] = {}
        self._damaged: dict[str, str] = {}  # name -> why it cannot be parsed, told once
        self._thread = threading.Thread(target=self._run, name="batchtui-watch", daemon=True)
        # One read at a time: the watch thread and the dashboard's tick both read. Unserialized,
        # a read of the old file could post after a read of the new one and replace its message
        # (LiveUpdated.can_replace), while the new stamp stayed: the dashboard said "running"
        # for good after the engine had finished. Their posts may still reach the queue out of
        # order (the thread's goes through the event loop): messages carry their read's order.
        self._reading = threading.Lock()
        self._inotify: inotify.FolderWatch | None = None

    def start(self) -> None:
        self.read_all(force=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, and wait (briefly) for the thread to leave watchfiles' Rust loop: an
        interpreter that exits while a thread is inside it can abort ("FATAL: exception not
        rethrown", watchfiles 0.21) instead of exiting."""
        self._stop.set()
        watch = self._inotify
        if watch is not None:
            watch.stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def read_all(self, *, force: bool = False) -> None:
        for name in WATCHED:
            self._read(name, force=force)

    def _read(self, name: str, *, force: bool = False) -> None:
        with self._reading:
            self._read_locked(name, force=force)

    def _read_locked(self, name: str, *, force: bool) -> None:
        path = self.batch / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        racy = time.time_ns() - st.st_mtime_ns < RACY_S * 1e9
        seen = self._stamps.get(name)
        raw: bytes | None = None
        if not force and seen is not None and seen[0] == stamp:
            if seen[1] is None and not racy:
                return
            try:
                raw = read_small_file(path)
            except (FileNotFoundError, DamagedFile, OSError):
                return  # mid-replace: read again next time
            if raw == seen[1]:
                if not racy:
                    self._stamps[name] = (stamp, None)  # settled: the stamp alone from now on
                return
        try:
            kept = (raw if raw is not None else read_small_file(path)) if racy else None
        except (FileNotFoundError, DamagedFile, OSError):
            self._stamps.pop(name, None)  # mid-replace or damaged: read again next time
            return
        self._stamps[name] = (stamp, kept)
        try:
            if name == "live_progress.json":
                self.post(LiveUpdated(self.batch, read_model(path, LiveProgress, use_backup=False)))
            else:
                self.post(ManifestUpdated(self.batch, read_model(path, Manifest)))
            self._damaged.pop(name, None)
        except DamagedFile as exc:  # whole but unparsable (files are replaced whole): say so once
            self._stamps.pop(name, None)  # read again next time: it may be written whole again
            if self._damaged.get(name) != exc.reason:
                self._damaged[name] = exc.reason
                self.post(FileDamaged(self.batch, name, exc.reason))
        except (FileNotFoundError, OSError):
            self._stamps.pop(name, None)  # mid-replace: read again next time

    def _run(self) -> None:
        if self.use_inotify and inotify.available():
            self._watch_inotify()
        else:
            self._watch_watchfiles()
        while not self._stop.wait(POLL_S / 4):
            self.read_all()

    def _watch_inotify(self) -> None:
        """Until stopped (or the folder moves or goes: the poll takes over). Each second with
        no change it reads both again (their stamps first), as the poll would."""
        try:
            watch = inotify.FolderWatch(self.batch, WATCHED)
        except OSError:  # no inotify instance or watch left, the folder gone: poll
            return
        with watch:
            self._inotify = watch
            if self._stop.is_set():
                return  # stop() came before the watch was there to stop
            while (changed := watch.changes(POLL_S)) is not None:
                for name in WATCHED:
                    if not changed or name in changed:
                        self._read(name)

    def _watch_watchfiles(self) -> None:
        left = tasklimit.room()
        # Near a pids limit, watchfiles could abort the process (engine/tasklimit.py): poll.
        if self.use_inotify and (left is None or left >= tasklimit.WATCHER_MARGIN):
            try:
                from watchfiles import watch

                quiet_watchfiles()

                def interesting(_change: object, path: str) -> bool:
                    return os.path.basename(path) in WATCHED

                for changes in watch(
                    self.batch,
                    watch_filter=interesting,
                    debounce=50,
                    step=50,  # each step takes the GIL (stop_event): 20 a second, not 50
                    stop_event=self._stop,
                    recursive=False,
                    rust_timeout=int(POLL_S * 1000),
                    yield_on_timeout=True,
                    raise_interrupt=False,
                ):
                    names = {os.path.basename(p) for _c, p in changes} if changes else set(WATCHED)
                    for name in WATCHED:
                        if name in names:
                            self._read(name)
            except Exception:  # no inotify, directory gone...: fall back to polling
                pass
