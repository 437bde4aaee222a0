"""One summary of a batch for every view: ``ls``, ``show``, the browser and their ``--json``.

Each view used to work out on its own what state a batch is in, and they drifted apart (a
batch whose engine died, or whose engine could not write its manifest on a full disk, read
"running" in one view and "interrupted" in another). :func:`summarize` is the one answer:

- the batch's files say running, paused or stopping, and no engine holds the lock, or its
  holder's process is gone (a kill -9 leaves the lock to the engine's reaper, or to an item's
  process, for a moment): the engine is gone without writing its final state (killed,
  crashed, out of disk), so the batch is **interrupted** (resumable once the lock is free),
  and its counts are read from items.db: the manifest's totals are as old as its last write,
  the store is what was committed (so too when manifest.json is lost and its backup, a copy
  from before the last write, is read);
- an engine holds the lock and has written live_progress.json since it took the lock: its
  state and counts are the live ones (an engine that stopped writing is still shown, with its
  liveness ``stale``: see :mod:`.liveness`);
- an engine holds the lock of a batch still ``created``, and its enqueue is not done: it reads
  the batch's source into items.db (``run`` makes the batch, or ``resume`` reads the rest of an
  enqueue cut short), so the counts are the store's, so far, and ``reading_source`` says so
  (the state stays ``created``: nothing runs before the whole source is read; every view says
  what it does with :func:`reading_text`);
- otherwise the manifest's state and totals (they are rewritten on every state change and by
  every offline command).

Its duration and rate are the batch's, over all its runs (:mod:`.timing`), the same figures
report.json and the engine's live ``elapsed_s`` carry.

The model's field names are a script-facing format (``ls --json`` rows, ``show --json``'s
``summary``): add fields, never rename them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from .basemodel import Model
from .batchdir import BatchDir, now_iso
from .errors import UserError
from .files import DamagedFile
from .fmt import cut_percent
from .liveness import EngineStatus, Liveness, engine_status
from .models import ACTIVE_STATES, BatchState, Counts, LiveCounts, Manifest
from .reading import reading_note as note_when_run
from .reading import reading_words, written_since
from .timing import batch_timing

#: States a summary shows besides the :class:`BatchState` values.
INTERRUPTED = "interrupted"  # the files say an engine works on it; none does
DAMAGED = "damaged"  # no readable manifest (nor its backup)


class EngineSummary(Model):
    """The engine that holds the batch's lock, and whether it is still writing."""

    model_config = ConfigDict(frozen=True)

    pid: int
    host: str
    started_at: str
    liveness: Literal["alive", "stale"]
    silent_s: float | None = None  # seconds since its last write
    problem: str | None = None  # what is wrong when it is stale (one sentence)
    badge: str = ""  # "NOT RESPONDING 13s" when stale, else empty
    #: It reads its source and the source keeps it waiting (a pipe whose writer pauses): seconds
    #: since it stored anything (see :mod:`.liveness`); None otherwise.
    waiting_for_source_s: float | None = None


class BatchSummary(Model):
    """What every view shows of one batch (see the module docstring for how it is decided)."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    path: str
    name: str = ""
    #: As shown: a BatchState value, "interrupted" or "damaged".
    state: str
    #: The state manifest.json says (None when it is unreadable).
    manifest_state: BatchState | None = None
    halt_reason: str | None = None
    engine: EngineSummary | None = None
    totals: LiveCounts = Field(default_factory=LiveCounts)
    percent: float = 0.0
    #: Where ``totals`` come from: the live engine, items.db (an interrupted batch), the manifest.
    counts_from: Literal["live", "store", "manifest"] = "manifest"
    duplicates_dropped: int = 0
    #: An ``add`` was cut short (killed): the rest of its source is not in the batch until the
    #: next ``resume`` (or ``add``, or rescan) reads it.
    add_cut_short: bool = False
    #: The batch's creation was cut short (its ``run`` killed while it read the source): the
    #: items read so far are in the batch (``totals``), the rest until the next ``resume``.
    enqueue_cut_short: bool = False
    #: An engine reads the batch's source into items.db (state ``created``): ``totals`` are the
    #: items stored so far, and none runs before the source is read to its end.
    reading_source: bool = False
    #: The batch's active time: the sum of its runs (engine/timing.py), as of ``updated_at``.
    duration_s: float = 0.0
    #: The current run's time when an engine runs it (``run_running``), else the last run's.
    run_s: float | None = None
    run_running: bool = False
    runs: int = 0
    #: Processed items (complete + failed) over ``duration_s``.
    items_per_s: float = 0.0
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    updated_at: str | None = None
    source: dict[str, Any] = {}
    processor: dict[str, Any] = {}
    #: The processor in one line: the shell template, the callable, or the processor's kind.
    command: str = ""
    #: Where the items come from, in one line: the source paths with their kind.
    source_text: str = ""
    #: No engine holds it and it has work left (or is not finished).
    resumable: bool = False
    #: manifest.json was missing or damaged and manifest.json.bak was read instead.
    manifest_from_backup: bool = False
    #: Why the batch is damaged (state "damaged" only).
    error: str | None = None

    @property
    def stale(self) -> bool:
        """An engine holds the batch but has stopped writing (NOT RESPONDING)."""
        return self.engine is not None and self.engine.liveness == Liveness.STALE.value

    @property
    def counts(self) -> LiveCounts:
        return self.totals


def summarize(batch: BatchDir | Path, *, now: float | None = None) -> BatchSummary:
    """The summary of one batch directory (never raises for a damaged or vanished batch).

    ``now`` is the wall clock for the engine's liveness (a frozen clock in tests).
    """
    bdir = batch if isinstance(batch, BatchDir) else BatchDir(batch)
    backup_read: list[str] = []  # told when manifest.json is damaged or lost and its .bak is read
    try:
        manifest = bdir.read_manifest(on_backup=backup_read.append)
    except (FileNotFoundError, DamagedFile, UserError) as exc:
        reason = f"no manifest in {bdir.path}" if isinstance(exc, FileNotFoundError) else str(exc)
        return BatchSummary(batch_id=bdir.batch_id, path=str(bdir.path), state=DAMAGED, error=reason)
    from_backup = bool(backup_read)
    live = bdir.read_live()
    status = engine_status(bdir, live=live, now=now)
    holder = status.holder
    # Its engine is dead (kill -9) and what it left still holds the lock for a moment (its
    # reaper killing the items' processes, an item that outlives it): nothing runs the batch.
    dead = status.liveness == Liveness.STALE and status.process == "gone"
    counts = LiveCounts(**manifest.totals.model_dump())
    counts_from: Literal["live", "store", "manifest"] = "manifest"
    cut_add = cut_enqueue = reading = False
    state = manifest.state.value
    halt_reason = manifest.halt_reason
    updated = manifest.ended_at or manifest.started_at or manifest.created_at
    created = manifest.state == BatchState.CREATED
    if holder is not None and not dead and live is not None and written_since(live, holder):
        counts, counts_from = live.counts, "live"
        state = live.state.value
        halt_reason = live.halt_reason or halt_reason
        updated = live.updated_at
    elif (holder is None or dead) and (manifest.state in ACTIVE_STATES or created or from_backup or manifest.changing):
        # The manifest is older than items.db: its engine died before it wrote its end, this is
        # the backup (a copy from before the last write, e.g. "created" of a batch that ran), a
        # change made without an engine (skip, retry, add) was killed before its totals, or the
        # batch's creation was killed while it read the source (its totals are written after).
        stored, cut = _store_counts(bdir)
        cut_add, cut_enqueue = cut == "add", cut == "enqueue"
        if stored is not None:
            counts, counts_from = stored, "store"
            if state == BatchState.FINISHED.value and (stored.pending or cut_add):
                state = BatchState.STOPPED.value  # work again: resumable, as write_views says it
        ran = created and stored is not None and stored.finished > 0
        if manifest.state in ACTIVE_STATES or ran or cut_enqueue:
            state = INTERRUPTED
            if live is not None:
                updated = live.updated_at  # the dead engine's last sign of life
    elif created and live is None:
        # An engine (or a resume) is still reading the source: what it stored so far.
        stored, cut = _store_counts(bdir)
        if stored is not None:
            counts, counts_from = stored, "store"
        reading = holder is not None and cut == "enqueue"
    finished = state == BatchState.FINISHED.value
    timing = batch_timing(
        manifest.history,
        counts,
        live=live,
        running_pid=holder.pid if holder is not None and not dead else None,
        now=now_iso() if now is None else datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
    )
    return BatchSummary(
        batch_id=bdir.batch_id,
        path=str(bdir.path),
        name=manifest.name,
        state=state,
        manifest_state=manifest.state,
        halt_reason=halt_reason,
        engine=_engine(status, reading),
        totals=counts,
        percent=cut_percent(counts.percent, 1),
        counts_from=counts_from,
        duplicates_dropped=manifest.duplicates_dropped,
        add_cut_short=cut_add,
        enqueue_cut_short=cut_enqueue,
        reading_source=reading,
        duration_s=timing.active_s,
        run_s=timing.run_s,
        run_running=timing.running,
        runs=timing.runs,
        items_per_s=timing.items_per_s,
        created_at=manifest.created_at,
        started_at=manifest.started_at,
        ended_at=manifest.ended_at,
        updated_at=updated,
        source=manifest.source,
        processor=manifest.processor,
        command=describe_processor(manifest),
        source_text=describe_source(manifest),
        resumable=holder is None and (not finished or bool(counts.pending or counts.processing)),
        manifest_from_backup=from_backup,
    )


def describe_processor(manifest: Manifest) -> str:
    """The processor of a batch in one line (raw: a view escapes it for its terminal)."""
    proc = manifest.processor
    return str(proc.get("command") or proc.get("call") or proc.get("kind") or "")


def describe_source(manifest: Manifest) -> str:
    """The source of a batch in one line, its full paths kept (a view cuts it in the middle):
    ``/data/urls.txt (lines)``, ``dir /data/docs (*.pdf)``, ``stdin``, ``2 sources: /a, /b``.
    Raw: a view escapes it for its terminal."""
    entries = manifest.source.get("entries") or []
    parts = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        kind, path = str(entry.get("kind", "")), str(entry.get("path", ""))
        if kind == "stdin":
            parts.append("stdin")
        elif kind == "dir":
            glob = manifest.source.get("glob")
            parts.append(f"dir {path}" + (f" ({glob})" if glob else ""))
        else:
            parts.append(path if kind == "files" else f"{path} ({kind})")
    if len(parts) > 1:
        return f"{len(parts)} sources: " + ", ".join(parts)
    return parts[0] if parts else ""


def reading_text(summary: BatchSummary) -> str:
    """What the engine of a batch that reads its source does, for every view: ``reading its
    source: 1,234,567 items so far`` or ``waiting for its source (nothing new for 12s): 100 items
    so far`` (:func:`.reading.reading_words`); empty for any other batch."""
    if not summary.reading_source:
        return ""
    waited = summary.engine.waiting_for_source_s if summary.engine is not None else None
    return reading_words(summary.totals.total, waited)


def reading_note(summary: BatchSummary) -> str:
    """The sentence after :func:`reading_text` that says when the items run."""
    return note_when_run(summary.engine.waiting_for_source_s if summary.engine is not None else None)


def _engine(status: EngineStatus, reading: bool) -> EngineSummary | None:
    holder = status.holder
    if holder is None:
        return None
    return EngineSummary(
        pid=holder.pid,
        host=holder.host,
        started_at=holder.started_at,
        liveness="stale" if status.liveness == Liveness.STALE else "alive",
        silent_s=None if status.silent_s is None else round(status.silent_s, 1),
        problem=status.explain() or None,
        badge=status.badge(),
        waiting_for_source_s=None if status.waiting_s is None or not reading else round(status.waiting_s, 1),
    )


def stored_counts(bdir: BatchDir) -> LiveCounts | None:
    """items.db's counts (None when it cannot be read): what a dead engine committed, which its
    last live_progress.json may not show yet (it is written after the commit)."""
    return _store_counts(bdir)[0]


def _store_counts(bdir: BatchDir) -> tuple[LiveCounts | None, Literal["add", "enqueue"] | None]:
    """items.db's counts, or None when it cannot be read (the manifest's then stand), and what
    was cut short: the batch's own enqueue (``run`` killed while it read the source) or an
    ``add`` (the rest of its source is not in the batch yet), or None."""
    import sqlite3

    from .store import ItemStore, StoreError  # only for an interrupted batch: ls stays light

    try:
        store = ItemStore.open_readonly(bdir.items_db)
    except (StoreError, OSError):
        return None, None
    try:
        counts: Counts = store.counts()
        cut: Literal["add", "enqueue"] | None = None
        if not store.get_meta("enqueue_done"):
            cut = "enqueue"
        elif store.get_meta("adding"):
            cut = "add"
    except (StoreError, OSError, sqlite3.Error):
        return None, None
    finally:
        store.close()
    return LiveCounts(**counts.model_dump()), cut


def reads_stdin(*sources: dict[str, Any] | None) -> bool:
    """Whether any of these sources (a manifest's ``source``, its ``added_sources``) reads stdin,
    which no resume or rescan can read again."""
    return any(
        isinstance(e, dict) and e.get("kind") == "stdin"
        for source in sources
        if isinstance(source, dict)
        for e in (source.get("entries") or ())
    )


__all__ = [
    "DAMAGED",
    "INTERRUPTED",
    "BatchSummary",
    "EngineSummary",
    "describe_processor",
    "describe_source",
    "reading_note",
    "reading_text",
    "reads_stdin",
    "summarize",
]
