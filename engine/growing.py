"""A source that grows: ``resume --rescan`` reads a batch's sources again, ``add`` reads another
into it.

Both change a batch no engine runs, under its lock (the caller's: a resume's plan holds the
engine lock; ``add`` takes it): the engine is the store's one writer while it runs, and reading
a large source inside its loop would stall every commit, so a batch with a live engine is
refused (BatchLocked names who runs it). The rows are made by :func:`.enqueue._rows`, as at
creation, and go through the store's one enqueue (engine/store/enqueue.py), which keys and
counts them.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Final, NamedTuple, TextIO

import orjson

from .batchdir import BatchDir, BatchLock, now_iso
from .enqueue import _rows
from .errors import UserError
from .files import write_model
from .fmt import clean, count, shell_line
from .keyrule import with_batch_key
from .models import Manifest, Unreadable
from .sources import NoWriter, SourceSpec, SourceWait, named_pipes, waiting
from .store import ItemStore, ScanOutcome

#: Why ``resume --rescan --drop-missing`` skipped an item (its error_message).
MISSING_REASON: Final = "no longer in the source (resume --rescan --drop-missing)"


def batch_sources(manifest: Manifest) -> list[SourceSpec]:
    """Every source of a batch, in order: the one it was made from, then those added."""
    return [SourceSpec.model_validate(s) for s in (manifest.source, *manifest.added_sources)]


def batch_sources_json(manifest: Manifest) -> list[dict[str, Any]]:
    """The sources of :func:`batch_sources` as the manifest stores them."""
    return [manifest.source, *manifest.added_sources]


def _check_rereadable(specs: list[SourceSpec], what: str) -> None:
    """UserError unless every source can be read again: stdin cannot, nor a path gone since."""
    for n, spec in enumerate(specs):
        for entry in spec.entries:
            if entry.kind == "stdin":
                which = "was made from stdin (-)" if n == 0 else "had items added from stdin (-)"
                raise UserError(
                    f"{what}: the batch {which}, which cannot be read again;"
                    " add new items with `batchtui add BATCH SOURCE...` instead"
                )
            if not os.path.exists(entry.path):
                raise UserError(f"{what}: the batch's source {clean(entry.path)} is gone; put it back first")


def source_pipes(manifest: Manifest) -> list[str]:
    """The named pipes among the sources a rescan of the batch reads."""
    return named_pipes(e.path for spec in batch_sources(manifest) for e in spec.entries if e.kind != "stdin")


def pending_add(store: ItemStore) -> dict[str, Any] | None:
    """The note of an ``add`` that was cut short (killed, even -9), or None."""
    raw = store.get_meta("adding")
    return orjson.loads(raw) if raw else None


class _StdinCutShort(UserError):
    """An add from stdin was cut short: what it read stays, the rest cannot be read again.
    ``manifest``: as written, its source recorded."""

    def __init__(self, message: str, manifest: Manifest) -> None:
        super().__init__(message)
        self.manifest = manifest


def finish_cut_add(bdir: BatchDir, manifest: Manifest, store: ItemStore, durable: bool) -> tuple[Manifest, str]:
    """Finish the add that was cut short (the caller holds the lock and saw :func:`pending_add`),
    as the next ``add`` would: the rest of its source is read (keys are unique: nothing doubled)
    and recorded in the manifest. Returns the manifest as written and what to tell (a source
    that was stdin cannot be read again: the note is dropped, the items it added stay)."""
    note = pending_add(store)
    assert note is not None
    try:
        manifest = _continue_add(bdir, manifest, store, note, None, durable, again=True)
    except _StdinCutShort as exc:
        return exc.manifest, str(exc)
    except UserError as exc:
        return manifest, str(exc)
    added = store.max_seq() - int(note["seq_from"])
    dups = int(store.get_meta("duplicates_dropped", 0) or 0) - int(note["dup_from"])
    return (
        manifest,
        f"the add that was cut short is finished: {count(added, 'item', grouped=True)} added in all, {count(dups, 'duplicate', grouped=True)} dropped",
    )


def rescan_batch(bdir: BatchDir, *, drop_missing: bool = False, durable: bool = True) -> ScanOutcome:
    """Read every source of ``bdir`` again (the caller holds its lock): keys not in the batch
    become pending items after the others, in source order; the items whose key was not read
    are counted (and skipped when ``drop_missing``). Duplicates are those of this reading. An
    add that was cut short is part of the sources read (and so finished). UserError for a
    source that cannot be read again (stdin, a path gone)."""
    from .control import mark_changing, write_views

    manifest = mark_changing(bdir, bdir.read_manifest(), durable=durable)
    store = ItemStore.open(bdir.items_db, durable=durable)
    try:
        pending = pending_add(store)
        added = list(manifest.added_sources)
        if pending is not None and pending["spec"] not in added:
            added.append(pending["spec"])
        specs = batch_sources(manifest.model_copy(update={"added_sources": added}))
        at = now_iso()
        unreadable = Unreadable()
        # A named pipe with no writer within the wait is refused (NoWriter), nothing changed:
        # read as empty, every key it gave would be "missing" (and skipped by --drop-missing).
        wait = SourceWait(writer_within=waiting.REREAD_WAIT_S)
        rows = itertools.chain.from_iterable(_rows(spec, None, at, 0, unreadable, wait) for spec in specs)
        seq_from, dups, base = store.max_seq(), store.get_meta("duplicates_dropped"), store.get_meta("rescan_base")
        try:
            _check_rereadable(specs, "cannot rescan")
            outcome = store.rescan(rows, drop_reason=MISSING_REASON if drop_missing else None, at=at)
        except NoWriter as exc:
            take_back(store, seq_from, duplicates_dropped=dups, rescan_base=base)
            write_views(bdir, manifest, store, durable=durable)
            raise UserError(f"cannot rescan: {exc}; nothing changed (start its writer, then rescan)") from None
        except UserError:
            # A source that cannot be read whole now (a bad line, a key field gone): refused with
            # nothing changed, as `run` refuses it, not with the items read before the bad line
            # added (a plain resume then ran them). A kill keeps them: the next rescan counts them.
            take_back(store, seq_from, duplicates_dropped=dups, rescan_base=base)
            write_views(bdir, manifest, store, durable=durable)
            raise
        with store.transaction():
            store.set_meta("source_unreadable", unreadable.model_dump_json())
            store.set_meta("enqueue_done", 1)
            store.conn.execute("DELETE FROM meta WHERE k='adding'")
        write_views(
            bdir,
            manifest,
            store,
            durable=durable,
            added_sources=added,
            duplicates_dropped=outcome.duplicates,
            unreadable=unreadable,
        )
    finally:
        store.close()
    return outcome


class AddOutcome(NamedTuple):
    """What ``add`` did: ``read`` source rows, ``added`` new items, ``duplicates`` dropped (keys
    already in the batch or read twice), what the source could not read, and whether it first
    finished an add that was cut short."""

    read: int
    added: int
    duplicates: int
    unreadable: Unreadable
    finished_earlier: bool = False


def add_source(
    bdir: BatchDir, spec: SourceSpec, *, stdin: TextIO | None = None, durable: bool = True, lock_wait: float = 1.0
) -> AddOutcome:
    """Add the items of ``spec`` to ``bdir`` (no engine may run it: BatchLocked) with the key
    rules and the duplicate counting of its creation; the manifest records ``spec`` so that a
    later rescan reads it too. Crash-safe as the creation's enqueue: the add is noted in the
    store first, and the next ``add`` (or a rescan) finishes one that was cut short."""
    from .control import mark_changing, write_views

    lock = BatchLock(bdir.lock, engine=False)
    lock.acquire(wait=lock_wait)
    try:
        manifest = bdir.read_manifest()
        store = ItemStore.open(bdir.items_db, durable=durable)
        try:
            if not store.get_meta("enqueue_done"):
                raise UserError(
                    f"batch {bdir.batch_id} was cut short while its items were read:"
                    f" `{shell_line('batchtui', 'resume', bdir.batch_id)}` finishes that first"
                )
            manifest = mark_changing(bdir, manifest, durable=durable)
            try:
                return _add(bdir, manifest, store, spec, stdin, durable)
            except UserError:
                write_views(bdir, bdir.read_manifest(), store, durable=durable)  # as it was: no change under way
                raise
        finally:
            store.close()
    finally:
        lock.release()


def _add(
    bdir: BatchDir, manifest: Manifest, store: ItemStore, spec: SourceSpec, stdin: TextIO | None, durable: bool
) -> AddOutcome:
    """:func:`add_source` under the lock, the manifest marked as changing."""
    from .control import write_views

    earlier = pending_add(store)
    if earlier is not None:  # finished, and its counts written, whatever comes next
        try:
            manifest = _continue_add(bdir, manifest, store, earlier, None, durable, again=True)
        except UserError as exc:
            raise UserError(f"an add cut short earlier could not be finished: {exc}; give this add again") from None
        write_views(bdir, manifest, store, durable=durable, changing=manifest.changing)
    spec = with_batch_key(bdir.batch_id, batch_sources_json(manifest), spec)
    wanted = spec.model_dump(mode="json")
    # A pipe read again gives what its writer sends this time: stdin, a FIFO, /dev/stdin.
    again_new = any(e.kind == "stdin" for e in spec.entries) or named_pipes(e.path for e in spec.entries)
    if wanted in batch_sources_json(manifest) and not again_new:
        raise UserError(
            f"batch {bdir.batch_id} already reads these sources:"
            f" `{shell_line('batchtui', 'resume', bdir.batch_id, '--rescan')}` reads them again"
        )
    with store.transaction():
        note: dict[str, Any] = {
            "spec": spec.model_dump(mode="json"),
            "read_from": int(store.get_meta("enqueue_read", 0) or 0),
            "dup_from": int(store.get_meta("duplicates_dropped", 0) or 0),
            "seq_from": store.max_seq(),
        }
        if spec.needs:  # not part of the spec as stored: kept for an add cut short and read again
            note["needs"] = [list(need) for need in spec.needs]
        store.set_meta("adding", orjson.dumps(note).decode())
    unreadable = Unreadable()
    manifest = _continue_add(bdir, manifest, store, note, stdin, durable, unreadable)
    read = int(store.get_meta("enqueue_read", 0) or 0) - note["read_from"]
    dups = int(store.get_meta("duplicates_dropped", 0) or 0) - note["dup_from"]
    write_views(bdir, manifest, store, durable=durable)
    return AddOutcome(read, read - dups, dups, unreadable, earlier is not None)


def _continue_add(
    bdir: BatchDir,
    manifest: Manifest,
    store: ItemStore,
    note: dict[str, Any],
    stdin: TextIO | None,
    durable: bool,
    unreadable: Unreadable | None = None,
    *,
    again: bool = False,
) -> Manifest:
    """Enqueue the add ``note`` describes from where it stopped (the store's enqueue counts the
    rows read and the duplicates, chunk by chunk), then record its source in the manifest and
    forget the note. Returns the manifest as written.

    ``again``: the add was cut short and its source is read a second time. A named pipe there
    is opened for a new writer for :data:`~.sources.waiting.REREAD_WAIT_S` seconds at most (with
    none, the add ends with the items it has), and only what the batch holds is skipped."""
    spec = SourceSpec.model_validate(note["spec"])
    if note.get("needs"):
        spec = spec.model_copy(update={"needs": tuple((str(f), str(who)) for f, who in note["needs"])})
    done = int(store.get_meta("enqueue_read", 0) or 0) - int(note["read_from"])
    if (done or stdin is None) and any(e.kind == "stdin" for e in spec.entries):
        if done and note["spec"] not in manifest.added_sources:
            # Its items stay, so the manifest says where they came from: a rescan refuses the
            # batch as for any add from stdin (it took them for keys gone from the sources, and
            # --drop-missing skipped those not run yet).
            dups = int(store.get_meta("duplicates_dropped", 0) or 0)
            added = [*manifest.added_sources, note["spec"]]
            manifest = manifest.model_copy(update={"added_sources": added, "duplicates_dropped": dups})
            write_model(bdir.manifest, manifest, durable=durable, backup=True)
        with store.transaction():
            store.conn.execute("DELETE FROM meta WHERE k='adding'")
        raise _StdinCutShort(
            f"an earlier add to batch {bdir.batch_id} was cut short while reading stdin, which cannot be"
            f" read again: {done} of its items were added; add the rest again",
            manifest,
        )
    # A pipe or a FIFO that pauses has what was read so far committed once a tick (as a run's
    # enqueue does), not held until 20,000 rows came: a kill or Ctrl-C lost them (stdin cannot
    # be read again), and nothing showed in the batch meanwhile.
    wait = SourceWait(writer_within=waiting.REREAD_WAIT_S if again else None, go_on=again)
    stored = store.known_keys if again and done else None
    try:
        store.enqueue(_rows(spec, stdin, now_iso(), done, unreadable, wait, stored), waits=wait)
    except UserError as exc:
        # The source cannot be read whole (a bad line, a key field it lacks, gone since a kill):
        # the add is refused whole, as `run` refuses such a source, and its note goes with it.
        # Left in place, every later add, rescan and resume read it again and failed the same.
        _take_back_add(bdir, manifest, store, note, durable)
        raise UserError(f"{exc}; nothing was added to batch {bdir.batch_id}") from None
    added = list(manifest.added_sources)
    if not added or added[-1] != note["spec"]:  # else recorded by one killed before its note went
        added.append(note["spec"])
    manifest = manifest.model_copy(
        update={
            "added_sources": added,
            "duplicates_dropped": int(store.get_meta("duplicates_dropped", 0) or 0),
        }
    )
    write_model(bdir.manifest, manifest, durable=durable, backup=True)
    with store.transaction():
        store.conn.execute("DELETE FROM meta WHERE k='adding'")
    return manifest


def _take_back_add(bdir: BatchDir, manifest: Manifest, store: ItemStore, note: dict[str, Any], durable: bool) -> None:
    """Undo the add ``note`` describes: its items (all after ``seq_from``; pending, since a cut
    add is finished before anything runs) and its counts go, the manifest forgets its source."""
    if manifest.added_sources and manifest.added_sources[-1] == note["spec"]:  # a kill after it was recorded
        manifest = manifest.model_copy(update={"added_sources": manifest.added_sources[:-1]})
        write_model(bdir.manifest, manifest, durable=durable, backup=True)
    take_back(
        store,
        int(note["seq_from"]),
        enqueue_read=note["read_from"],
        duplicates_dropped=note["dup_from"],
        adding=None,
    )


def take_back(store: ItemStore, seq_from: int, **meta: Any) -> None:
    """Remove the items after ``seq_from``, which a reading that could not finish put in the store
    (none has run), and put the store's ``meta`` values back as they were (None: absent)."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM run_first WHERE seq > ?", (seq_from,))
        conn.execute("DELETE FROM items WHERE seq > ?", (seq_from,))
        for k, v in meta.items():
            if v is None:
                conn.execute("DELETE FROM meta WHERE k=?", (k,))
            else:
                store.set_meta(k, v)


def enqueue_added(store: ItemStore, manifest: Manifest) -> int:
    """Enqueue the sources ``add`` gave (a rebuild of items.db, after the batch's own source), as
    ``add`` did: the store's enqueue keys and counts them. A source that was stdin cannot be read
    again and is passed over (its complete items come back from results.jsonl). Returns the
    duplicates dropped in all."""
    for raw in manifest.added_sources:
        spec = SourceSpec.model_validate(raw)
        if any(e.kind == "stdin" for e in spec.entries):
            continue
        store.enqueue(_rows(spec, None, now_iso()))
    return int(store.get_meta("duplicates_dropped", 0) or 0)
