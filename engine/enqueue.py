"""Creating a batch: the batch directory, its manifest, and the enqueue of every source item.

The enqueue streams the source into items.db (deduplicated by key, resumable after a crash);
see :meth:`batchtui.engine.store.ItemStore.enqueue`.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from .batchdir import BatchDir, now_iso
from .config import BatchConfig
from .errors import InvalidRecord, UserError, classify, normalize_message
from .files import ResultsLog, WriteFailed, write_model
from .models import Manifest
from .processors import ProcessorSpec
from .sources import SourceSpec, iter_items
from .store import ItemStore

# -- creating a batch ------------------------------------------------------------------------


def _rows(spec: SourceSpec, stdin: TextIO | None, at: str, counter: list[int]) -> Iterator[tuple[Any, ...]]:
    kinds = frozenset(e.kind for e in spec.entries)
    for item in iter_items(spec, stdin):
        counter[0] += 1
        data = orjson.dumps(item.data).decode()
        kind = _kind_of(item.data, kinds)
        if item.invalid is None:
            yield (item.key, data, kind, "pending", None, None, None, None, None, None)
        else:
            info = classify(InvalidRecord(item.invalid))
            yield (
                item.key,
                data,
                kind,
                "failed",
                info.error_type,
                info.category,
                info.message,
                f"{item.origin}: {item.invalid}" if item.origin else item.invalid,
                normalize_message(info.message),
                at,
            )


def _kind_of(data: Any, kinds: frozenset[str]) -> str:
    if isinstance(data, dict):
        return "record"
    if kinds <= {"dir", "files"}:
        return "file"
    if kinds.isdisjoint({"dir", "files"}):
        return "line"
    return "file" if os.path.isabs(str(data)) and os.path.exists(str(data)) else "line"


def enqueue_source(
    store: ItemStore,
    source: SourceSpec,
    *,
    stdin: TextIO | None = None,
    on_enqueue: Callable[[int], None] | None = None,
) -> int:
    """Enqueue every item of the source (or the rest of it, after an interrupted enqueue).

    Returns the total number of duplicates dropped.
    """
    already = int(store.get_meta("enqueue_read", 0) or 0)
    if already and any(e.kind == "stdin" for e in source.entries):
        raise UserError("this batch was interrupted while reading stdin, which cannot be read again; start a new batch")
    counter = [0]
    rows: Iterator[tuple[Any, ...]] = _rows(source, stdin, now_iso(), counter)
    if already:
        rows = itertools.islice(rows, already, None)
    if on_enqueue is not None:
        rows = _report_every(rows, counter, on_enqueue)
    store.enqueue(rows)
    with store.transaction():
        store.set_meta("enqueue_done", 1)
    return int(store.get_meta("duplicates_dropped", 0) or 0)


def create_batch(
    config: BatchConfig,
    source: SourceSpec,
    processor: ProcessorSpec,
    *,
    stdin: TextIO | None = None,
    on_enqueue: Callable[[int], None] | None = None,
) -> BatchDir:
    """Create the batch directory and enqueue every item (streamed, deduplicated by key).

    A user error in the source (a bad encoding, a missing header) removes the half-made batch;
    a crash leaves it resumable (the enqueue continues on resume).
    """
    bdir = BatchDir.create(Path(config.output_dir).resolve())
    try:
        created = now_iso()
        name = config.name or _default_name(source)
        manifest = Manifest(
            batch_id=bdir.batch_id,
            name=name,
            created_at=created,
            source=source.model_dump(mode="json"),
            processor=processor.model_dump(mode="json"),
            config=config.model_dump(mode="json"),
        )
        write_model(bdir.manifest, manifest, durable=config.fsync)
        store = ItemStore.create(bdir.items_db, durable=config.fsync)
        try:
            with store.transaction():
                store.set_meta("results_offset", 0)
                store.set_meta("commit_seq", 0)
                store.set_meta("control_offset", 0)
            dropped = enqueue_source(store, source, stdin=stdin, on_enqueue=on_enqueue)
            counts = store.counts()
        finally:
            store.close()
        manifest = manifest.model_copy(update={"totals": counts, "duplicates_dropped": dropped})
        write_model(bdir.manifest, manifest, durable=config.fsync, backup=True)
        ResultsLog(bdir.results).close()
    except WriteFailed as exc:
        shutil.rmtree(bdir.path, ignore_errors=True)
        raise UserError(
            f"cannot create the batch: cannot write {exc.path.name}: {exc.reason}."
            " The half-made batch was removed: free some space, then run again"
        ) from None
    except (UserError, KeyboardInterrupt):
        shutil.rmtree(bdir.path, ignore_errors=True)
        raise
    return bdir


def _report_every(
    rows: Iterator[tuple[Any, ...]], counter: list[int], cb: Callable[[int], None]
) -> Iterator[tuple[Any, ...]]:
    next_at = 100_000
    for row in rows:
        yield row
        if counter[0] >= next_at:
            cb(counter[0])
            next_at += 100_000


def _default_name(source: SourceSpec) -> str:
    from .sources import describe

    return describe(source)[:80]
