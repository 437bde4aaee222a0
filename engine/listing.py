"""Every batch a view lists: the summaries of the batches of a scope, and the registered ones
whose directory is gone (state ``gone``), newest first. ``ls`` and the browser show this list.

The browser lists again every 2 seconds, and a registry grows with every batch ever run: read
whole each time, 300 batches kept an idle browser at ~10% of a core, most of it reading the
manifests of batches nothing had touched. :class:`BatchLister` reads a batch again only when
one of the files its summary is made of changed, or an engine holds it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .batchdir import BatchDir, engine_alive
from .batches import BatchScope, iter_batches
from .registry import gone_batches
from .summary import BatchSummary, summarize

#: The state of a registered batch whose directory was moved or deleted.
GONE: Final = "gone"

#: The files a batch's summary is made of (see :func:`.summary.summarize`): the manifest or its
#: backup, the live progress, the lock's content, and items.db for an interrupted batch's counts.
_READ: Final = ("manifest.json", "manifest.json.bak", "live_progress.json", "lock", "items.db", "items.db-wal")

_LOCK: Final = _READ.index("lock")

#: One file's identity and version: inode, size and modification time (None: no such file).
#: Every file of a batch is replaced whole (a new inode) or grows; items.db changes size or time.
_Stamp = tuple[int, int, int] | None


def _stamps(path: Path) -> tuple[_Stamp, ...]:
    stamps: list[_Stamp] = []
    folder = os.fspath(path)
    for name in _READ:
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            stamps.append(None)
        else:
            # An empty write-ahead log holds nothing: the first reader of a batch makes one.
            empty_log = name.endswith("-wal") and st.st_size == 0
            stamps.append(None if empty_log else (st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


@dataclass
class BatchLister:
    """:func:`list_batches` for a view that lists again and again.

    A batch's summary is kept with the stamps of the files it was made of, and used again while
    they are unchanged and no engine holds the batch, neither then nor now (an engine's
    liveness moves with the clock; a lock taken since is seen at once, before the engine has
    written anything). Anything else is read again, as :func:`summarize` always does."""

    where: Path | BatchScope
    _kept: dict[str, tuple[tuple[_Stamp, ...], BatchSummary]] = field(default_factory=dict)
    #: Batches read again by the last :meth:`list` (a test counts them).
    read: int = 0

    def list(self, *, now: float | None = None) -> list[BatchSummary]:
        kept: dict[str, tuple[tuple[_Stamp, ...], BatchSummary]] = {}
        rows: list[BatchSummary] = []
        self.read = 0
        for batch in iter_batches(self.where):
            key = str(batch.path)
            stamps = _stamps(batch.path)
            before = self._kept.get(key)
            if before is not None and before[0] == stamps and before[1].engine is None and not _held(batch, stamps):
                summary = before[1]
            else:
                summary = summarize(batch, now=now)
                self.read += 1
            kept[key] = (stamps, summary)
            rows.append(summary)
        self._kept = kept  # batches no longer listed are forgotten
        return _with_gone(rows, self.where)


def _held(batch: BatchDir, stamps: tuple[_Stamp, ...]) -> bool:
    """Whether a process holds the batch's lock now. With no lock file, none can: an engine
    makes it before it takes the lock, and that is a change of the stamps."""
    return stamps[_LOCK] is not None and engine_alive(batch.path) is not None


def list_batches(where: Path | BatchScope, *, now: float | None = None) -> list[BatchSummary]:
    """The batches of ``where`` (see :class:`BatchScope`), newest first, with the registered
    batches whose directory is gone as rows of state :data:`GONE` (``batchtui cleanup`` forgets
    them)."""
    return _with_gone([summarize(b, now=now) for b in iter_batches(where)], where)


def _with_gone(rows: list[BatchSummary], where: Path | BatchScope) -> list[BatchSummary]:
    rows += [
        BatchSummary(
            batch_id=e.batch_id,
            path=e.path,
            name=e.name,
            state=GONE,
            created_at=e.created_at or None,
            error=f"{e.path} is gone (moved or deleted)",
        )
        for e in gone_batches(where)
    ]
    # By creation second, newest first; a stable sort keeps iter_batches' order within a second
    # (batches made in the same second, by their creation time).
    rows.sort(key=lambda r: r.batch_id[:15], reverse=True)
    return rows


__all__ = ["GONE", "BatchLister", "list_batches"]
