"""A batch whose source is still being read, for a view that asks every second (the dashboard).

``run`` makes a batch and reads its source into items.db before anything runs; ``resume`` reads
the rest of an enqueue cut short first. Meanwhile the batch's state stays ``created``, the
engine writes no live_progress.json, and its signs of life are the store's commits and, while
its source keeps it waiting, touches of its lock file (:mod:`.liveness`). :func:`.summary.summarize`
says so to ``ls``, ``show`` and the browser, with the store's counts; :func:`source_reading`
is the same answer at the cost of one lookup (no counts by status: nothing has run, every
item stored is pending), for a dashboard that asks every second of a 20M-line read.

Its words are every view's: :func:`reading_words` (``reading its source: 1,234 items so
far``), :func:`reading_note` (when the items run).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final, NamedTuple

from .batchdir import BatchDir, parse_iso
from .fmt import fmt_duration
from .liveness import EngineStatus, Liveness
from .models import LiveProgress, LockInfo

#: The store's meta key: until when (epoch seconds) a resume waits for a named pipe's writer.
WRITER_UNTIL: Final = "pipe_writer_until"


class SourceReading(NamedTuple):
    """What the batch's enqueue has done: ``items`` stored so far; whether an engine reads on
    (``engine``: False when it was cut short and nothing reads it: its engine died, and the
    next ``resume`` reads the rest); ``waiting_s``: the source keeps that engine waiting
    (seconds since it stored anything), None while it reads."""

    items: int
    engine: bool
    waiting_s: float | None = None
    #: A resume waits for a writer of a named pipe until then (epoch seconds; see
    #: :func:`.enqueue.read_rest`), or None.
    writer_until: float | None = None

    def text(self) -> str:
        """``reading its source: 1,234 items so far`` (see :func:`reading_words`)."""
        return reading_words(self.items, self.waiting_s)

    def note(self) -> str:
        """When its items run (see :func:`reading_note`); while a resume waits for a pipe's
        writer, how much longer it waits before it runs the items it holds."""
        if self.writer_until is not None and self.waiting_s is not None:
            left = max(0.0, self.writer_until - time.time())
            return f"a named pipe read again: its items run in {fmt_duration(left)} unless a writer opens it"
        return reading_note(self.waiting_s)


def source_reading(batch: BatchDir | Path, status: EngineStatus, live: LiveProgress | None) -> SourceReading | None:
    """How far the enqueue of ``batch`` (its manifest says ``created``) has come, or None when
    it is done (or the store cannot be read). ``status`` is its engine's (:func:`.liveness.engine_status`),
    ``live`` its live_progress.json: an engine that has written one since it took the lock runs
    the batch, its enqueue is done. An engine that holds the lock but is dead (killed -9, a
    process it left holds the lock a moment) reads nothing any more: ``engine`` is False."""
    bdir = batch if isinstance(batch, BatchDir) else BatchDir(batch)
    holder = status.holder
    if holder is not None and live is not None and written_since(live, holder):
        return None
    so_far = _enqueue_so_far(bdir)
    if so_far is None:
        return None
    stored, until = so_far
    dead = status.liveness == Liveness.STALE and status.process == "gone"
    reading = status.held and not dead
    return SourceReading(stored, reading, status.waiting_s if reading else None, until if reading else None)


def reading_words(items: int, waiting_s: float | None) -> str:
    """What an engine that reads its source does, for every view: ``reading its source:
    1,234,567 items so far`` or ``waiting for its source (nothing new for 12s): 100 items so
    far``."""
    doing = (
        "reading its source"
        if waiting_s is None
        else f"waiting for its source (nothing new for {fmt_duration(waiting_s)})"
    )
    return f"{doing}: {items:,} item{'' if items == 1 else 's'} so far"


def reading_note(waiting_s: float | None) -> str:
    """The sentence after :func:`reading_words` that says when the items run."""
    if waiting_s is not None:
        return "its items run once the source ends (its writer closes it)"
    return "its items run once the whole source is read"


def written_since(live: LiveProgress, holder: LockInfo) -> bool:
    """Whether live_progress.json was written by the engine that holds the lock now (not left
    by the one before it: a resumed engine has not written its first progress yet)."""
    try:
        started = parse_iso(holder.started_at) if holder.started_at else 0.0
        return parse_iso(live.updated_at) >= started
    except ValueError:
        return True


def _enqueue_so_far(bdir: BatchDir) -> tuple[int, float | None] | None:
    """The items the enqueue has stored, while it is not done, and until when a resume waits
    for a named pipe's writer (or None); None once it is done (or unreadable).
    Nothing runs before it is done, so every item is pending and seq is dense from 0: the
    highest seq says how many (one index lookup, where a count scans 20M rows)."""
    import sqlite3

    from .store import ItemStore, StoreError  # only for a batch still created: ls stays light
    from .store.queries import size

    try:
        store = ItemStore.open_readonly(bdir.items_db)
    except (StoreError, OSError):
        return None
    try:
        if store.get_meta("enqueue_done"):
            return None
        until = store.get_meta(WRITER_UNTIL)
        return size(store.conn), float(until) if until else None
    except (StoreError, OSError, sqlite3.Error):
        return None
    finally:
        store.close()


__all__ = ["WRITER_UNTIL", "SourceReading", "reading_note", "reading_words", "source_reading", "written_since"]
