"""What the engine writes in a batch directory, and the check that keeps it from writing through a
symbolic link planted there (or into the wrong kind of entry): :func:`check_batch_dir`, run by
whoever takes a batch's lock (engine/batchdir.py's :class:`~.batchdir.BatchLock`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path
from typing import Final

from .errors import UserError
from .files import NOFOLLOW
from .fmt import shell_line

BATCH_FILES: Final = (
    "manifest.json",
    "manifest.json.bak",
    "items.db",
    "items.db-wal",
    "items.db-shm",
    "items.db-journal",
    "results.jsonl",
    "live_progress.json",
    "control.jsonl",
    "report.json",
    "lock",
    "engine.log",
    "events.jsonl",
    "workers.log",
    "inflight",
)
BATCH_DIRS: Final = ("logs", "out", "tmp")
#: The item store's files. Removed, the store is not made anew by the engine: ``recover`` sets
#: them aside, whatever they are, and rebuilds it from the source and results.jsonl.
STORE_FILES: Final = ("items.db", "items.db-wal", "items.db-shm", "items.db-journal")


class UnsafeBatchDir(UserError):
    """A batch directory is, or holds, a symbolic link (or a wrong kind of file) where the engine
    writes: it is refused rather than written through."""

    def __init__(self, path: Path, what: str, *, link: bool = True, name: str = "") -> None:
        if name in STORE_FILES:
            way = f"`{shell_line('batchtui', 'recover', path.name)}` sets the item store aside and rebuilds it"
            why = f"put the real file there, or {way}" if link else f"the item store is damaged: {way}"
        elif link:
            why = "the engine never writes through a link in a batch directory (remove it, or put the real file there)"
        else:
            why = "it is damaged (remove it: the engine makes it anew)"
        super().__init__(f"refusing to use batch {path.name}: {what}; {why}, then try again")


def check_batch_dir(path: Path, *, set_aside: Collection[str] = ()) -> None:
    """Refuse (:class:`UnsafeBatchDir`) a batch directory that is a symbolic link or whose files
    and folders the engine writes (:data:`BATCH_FILES`, :data:`BATCH_DIRS`) include a link or the
    wrong kind of entry. SQLite opens items.db and its -wal/-shm by path, following links: this
    check before an engine takes the batch is what keeps them inside it. ``set_aside``: names
    the caller moves away whatever they are, unopened (``recover``'s store files)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UserError(f"batch directory {path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeBatchDir(path, f"{path} is a symbolic link (to {os.readlink(path)})")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeBatchDir(path, f"{path} is not a directory")
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafeBatchDir(path, f"{path} cannot be opened as a directory ({exc.strerror})") from None
    try:
        for name in (*BATCH_FILES, *BATCH_DIRS):
            if name in set_aside:
                continue
            try:
                est = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(est.st_mode):
                target = os.readlink(name, dir_fd=dfd)
                raise UnsafeBatchDir(path, f"{name} is a symbolic link (to {target})", name=name)
            if name in BATCH_DIRS and not stat.S_ISDIR(est.st_mode):
                raise UnsafeBatchDir(path, f"{name} is not a directory", link=False)
            if name in BATCH_FILES and not stat.S_ISREG(est.st_mode):
                kind = "a folder" if stat.S_ISDIR(est.st_mode) else "a fifo, a device or a socket"
                raise UnsafeBatchDir(path, f"{name} is not a regular file ({kind})", link=False, name=name)
    finally:
        os.close(dfd)


__all__ = ["BATCH_DIRS", "BATCH_FILES", "STORE_FILES", "UnsafeBatchDir", "check_batch_dir"]
