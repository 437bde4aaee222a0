"""Creating a batch: the batch directory, its manifest, and the enqueue of every source item.

The enqueue streams the source into items.db (deduplicated by key, resumable after a crash);
see :meth:`batchtui.engine.store.ItemStore.enqueue`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from .batchdir import BatchDir, BatchLock, now_iso
from .config import BatchConfig
from .errors import InvalidRecord, UserError, classify
from .files import ResultsLog, WriteFailed, write_model
from .fmt import clean, shell_line
from .grouping import normalize_message
from .models import Manifest, Unreadable
from .processors import ProcessorSpec
from .reading import WRITER_UNTIL
from .registry import forget, register
from .sources import SourceItem, SourceSpec, SourceWait, iter_blocks, line_keys, named_pipes
from .store import ItemStore, LineBlock

# -- creating a batch ------------------------------------------------------------------------

# What orjson escapes in a string (the rest it writes as is, in UTF-8), and the lone surrogates
# it refuses.
_JSON_ESCAPED: Final = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')


def _rows(
    spec: SourceSpec,
    stdin: TextIO | None,
    at: str,
    skip: int = 0,
    unreadable: Unreadable | None = None,
    wait: SourceWait | None = None,
    stored: Callable[[list[str]], set[str]] | None = None,
) -> Iterator[tuple[Any, ...] | LineBlock]:
    """The store rows of every source item after the first ``skip`` (those an interrupted enqueue
    already stored), in source order. The source is still read from its start, so an error in
    it is raised whether or not it lies in the part skipped (and ``unreadable`` counts what it
    could not read in all of it).

    ``stored`` (the keys of a list the batch holds): the part skipped is only what the batch
    holds. The first key it lacks ends the skipping, and that row and all after it are read as
    new (their known keys dropped as duplicates): a named pipe read again gives what its new
    writer sends, which may go on from where the last one stopped rather than start over."""
    kinds = frozenset(e.kind for e in spec.entries)
    # The kind of every line when no entry makes files; else it is worked out per line.
    line_kind = "line" if kinds.isdisjoint({"dir", "files"}) else None
    dumps = orjson.dumps
    for block in iter_blocks(spec, stdin, unreadable, wait):
        if isinstance(block, tuple | SourceItem):  # a record read, or an item
            if skip:
                key = block[0] if isinstance(block, tuple) else block.key
                if stored is None or key in stored([key]):
                    skip -= 1
                    continue
                skip = 0
            if isinstance(block, tuple):
                yield (block[0], dumps(block[1]).decode(), "record", "pending", None, None, None, None, None, None)
            else:
                yield _item_row(block, kinds, at)
            continue
        if skip:
            n = min(skip, len(block))
            if stored is not None:
                keys = line_keys(block[:n])
                held = stored(keys)
                new = next((i for i, k in enumerate(keys) if k not in held), n)
                skip = new if new < n else skip  # a key it lacks: skipping ends there
                n = new
            skip -= n
            block = block[n:]
            if not block:
                continue
        yield from _line_rows(block, line_kind, kinds)


def _line_rows(lines: list[str], kind: str | None, kinds: frozenset[str]) -> list[tuple[Any, ...]] | list[LineBlock]:
    """The rows of a block of stripped lines: what :func:`_item_row` makes of their items (as
    one :class:`LineBlock` when the store can take them so)."""
    keys = line_keys(lines)
    joined = "".join(lines)
    if (joined.isprintable() and '"' not in joined and "\\" not in joined) or _JSON_ESCAPED.search(joined) is None:
        # Nothing JSON escapes (no control character, so no newline either): a line's JSON is
        # the line in quotes, made for the whole block at once (by SQLite for a LineBlock).
        if kind is not None:
            return [LineBlock(keys, lines, kind)]
        data = ('"' + '"\n"'.join(lines) + '"').split("\n")
    else:
        dumps = orjson.dumps
        data = [dumps(line).decode() for line in lines]
    kind_of = itertools.repeat(kind) if kind is not None else [_kind_of(line, kinds) for line in lines]
    none = itertools.repeat(None)
    return list(zip(keys, data, kind_of, itertools.repeat("pending"), none, none, none, none, none, none))


def _data_json(data: Any) -> str:
    """An item's data as the JSON text items.db holds. A file name that is not UTF-8 (a str with
    surrogate escapes) is not UTF-8 JSON: its undecodable bytes are written as ``\\udcXX``
    escapes then, which ``shell.item.load_data`` reads back into the same str."""
    try:
        return orjson.dumps(data).decode()
    except TypeError:  # orjson.JSONEncodeError: lone surrogates
        return json.dumps(data, ensure_ascii=True)


def _item_row(item: SourceItem, kinds: frozenset[str], at: str) -> tuple[Any, ...]:
    data = _data_json(item.data)
    kind = _kind_of(item.data, kinds)
    if item.invalid is None:
        return (item.key, data, kind, "pending", None, None, None, None, None, None)
    info = classify(InvalidRecord(item.invalid))
    return (
        item.key,
        data,
        kind,
        "failed",
        info.error_type,
        info.category,
        info.message,
        f"{item.origin}: {item.invalid}" if item.origin else item.invalid,
        normalize_message(info.message, item.key),
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
    on_wait: Callable[[], None] | None = None,
    writer_within: float | None = None,
    on_no_writer: Callable[[list[str]], None] | None = None,
) -> int:
    """Enqueue every item of the source (or the rest of it, after an interrupted enqueue).

    While a source that is no regular file (a pipe, a FIFO) keeps the reading waiting, about
    once a second ``on_wait`` is called (the engine touches its lock file, its sign of life
    while it waits) and the items read so far are committed (engine/sources/waiting.py).

    ``writer_within`` (the rest of an interrupted enqueue): a named pipe whose writer does not
    open it within that many seconds is passed over (``on_no_writer`` is told which); the part
    skipped of a source read again is only what the batch holds (:func:`_rows`).

    Returns the total number of duplicates dropped.
    """
    already = int(store.get_meta("enqueue_read", 0) or 0)
    if already and any(e.kind == "stdin" for e in source.entries):
        raise UserError("this batch was interrupted while reading stdin, which cannot be read again; start a new batch")
    unreadable = Unreadable()
    wait = SourceWait(on_wait, writer_within=writer_within, go_on=writer_within is not None)
    stored = store.known_keys if writer_within is not None and already else None
    rows = _rows(source, stdin, now_iso(), already, unreadable, wait, stored)
    if on_enqueue is not None:
        rows = _report_every(rows, already, on_enqueue)
    store.enqueue(rows, waits=wait)
    with store.transaction():
        store.set_meta("source_unreadable", unreadable.model_dump_json())
        store.set_meta("enqueue_done", 1)
    if wait.no_writer and on_no_writer is not None:
        on_no_writer(wait.no_writer)
    return int(store.get_meta("duplicates_dropped", 0) or 0)


def pipe_note(pipes: list[str], *, rescan: bool = False) -> str:
    """What a reading again does with the named pipes ``pipes``: the rest of a reading cut
    short (:func:`read_rest`), or a rescan, which takes what the writer sends as the whole source."""
    from .sources import waiting

    one = len(pipes) == 1
    what = (
        "it must send the whole source again: a key it does not send counts as missing"
        if rescan
        else "the lines the batch holds are skipped: it may send the whole source again or only the rest"
    )
    return (
        f"{', '.join(clean(p) for p in pipes)} {'is a named pipe' if one else 'are named pipes'}, which"
        f" {'gives' if one else 'give'} {'its' if one else 'their'} lines once: waiting up to"
        f" {waiting.REREAD_WAIT_S:g} s for a writer to open {'it' if one else 'each'} again ({what})"
    )


def read_rest(
    store: ItemStore, source: SourceSpec, *, batch_id: str, on_wait: Callable[[], None], say: Callable[[str], None]
) -> int:
    """The rest of an enqueue an engine's death cut short, read by the next engine before
    anything runs, and what it does said to ``say``. Returns the duplicates dropped in all.

    The items stored are kept. A file is read again from its start, past what the batch holds.
    A named pipe gave its lines once, to the engine that died: its writer is gone with it (a
    kill ends its writes with EPIPE). It is opened again for a new writer, which may send the
    whole source again or only the rest (the lines the batch holds are skipped, never doubled),
    but for :data:`~.sources.waiting.REREAD_WAIT_S` seconds at most: with no writer by then the
    pipe is not read, the batch goes on with what it holds, and says so."""
    from .sources import waiting  # its wait read now: a test shortens it

    held = store.max_seq() + 1
    pipes = named_pipes(e.path for e in source.entries)
    if not pipes:
        say("the previous engine died while enqueuing: reading the rest of the source")
        return enqueue_source(store, source, on_wait=on_wait)
    within = waiting.REREAD_WAIT_S
    names = ", ".join(clean(p) for p in pipes)
    say(f"the previous engine died while enqueuing: the {held:,} items it read are kept; {pipe_note(pipes)}")
    missed: list[str] = []
    with store.transaction():  # the views say how long it waits (.reading.SourceReading.note)
        store.set_meta(WRITER_UNTIL, repr(time.time() + within))
    try:
        dropped = enqueue_source(store, source, on_wait=on_wait, writer_within=within, on_no_writer=missed.extend)
    finally:
        with store.transaction():
            store.conn.execute("DELETE FROM meta WHERE k=?", (WRITER_UNTIL,))
    added = store.max_seq() + 1 - held
    if missed:
        say(
            f"no writer opened {', '.join(clean(p) for p in missed)} within {within:g} s: not read again;"
            f" the batch goes on with the {held + added:,} items it holds"
            f" (`{shell_line('batchtui', 'resume', batch_id, '--rescan')}` reads the pipe again, once a writer"
            " sends to it)"
        )
    else:
        say(f"read {names} again: {added:,} new items")
    return dropped


def source_unreadable(store: ItemStore) -> Unreadable:
    """What the source could not read when it was enqueued (an empty count before that, or for a
    batch made before this was counted)."""
    raw = store.get_meta("source_unreadable")
    if not raw:
        return Unreadable()
    try:
        return Unreadable.model_validate_json(raw)
    except ValueError:
        return Unreadable()


def create_batch(
    config: BatchConfig,
    source: SourceSpec,
    processor: ProcessorSpec,
    *,
    stdin: TextIO | None = None,
    on_enqueue: Callable[[int], None] | None = None,
    keep_lock: Callable[[BatchLock], None] | None = None,
    detach: bool = False,
) -> BatchDir:
    """Create the batch directory and enqueue every item (streamed, deduplicated by key).

    The batch's lock is held from the moment its folder exists: no ``resume`` takes it over and
    no ``cleanup`` removes it while its sources are read. ``keep_lock`` is given the held lock
    (the run's engine holds it on; ``detach``: a background engine it is handed to, as the
    lock file says); else it is let go at the end. A user error in the source (a
    bad encoding, a missing header) removes the half-made batch; a crash leaves it resumable
    (the enqueue continues on resume).
    """
    made: list[Path] = []  # the folder, once made: a Ctrl-C at any moment after removes it
    lock: BatchLock | None = None
    try:
        bdir = BatchDir.create(Path(config.output_dir).resolve(), made)
        lock = BatchLock(bdir.lock, hands_over=detach)
        lock.acquire(wait=0)
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
        # Registered as soon as it has a manifest: a batch whose enqueue is killed is resumable,
        # and found from any folder like the others.
        register(bdir.path, bdir.batch_id, name, created)
        store = ItemStore.create(bdir.items_db, durable=config.fsync)
        try:
            with store.transaction():
                store.set_meta("results_offset", 0)
                store.set_meta("commit_seq", 0)
                store.set_meta("control_offset", 0)
            dropped = enqueue_source(store, source, stdin=stdin, on_enqueue=on_enqueue, on_wait=lock.touch)
            unreadable = source_unreadable(store)
            counts = store.counts()
        finally:
            store.close()
        manifest = manifest.model_copy(
            update={"totals": counts, "duplicates_dropped": dropped, "unreadable": unreadable}
        )
        write_model(bdir.manifest, manifest, durable=config.fsync, backup=True)
        ResultsLog(bdir.results).close()
    except WriteFailed as exc:
        _remove(made, lock)
        raise UserError(
            f"cannot create the batch: cannot write {exc.path.name}: {exc.reason}."
            " The half-made batch was removed: free some space, then run again"
        ) from None
    except (UserError, KeyboardInterrupt):
        _remove(made, lock)
        raise
    except BaseException:
        if lock is not None:
            lock.release()  # a crash's batch is resumable
        raise
    if keep_lock is None:
        lock.release()
    else:
        keep_lock(lock)
    return bdir


def _remove(made: list[Path], lock: BatchLock | None) -> None:
    """Remove a half-made batch (``made``: its folder, if it was made yet), and its line in the
    registry (then let go of its lock)."""
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
    if lock is not None:
        lock.release()
    if made:
        with contextlib.suppress(OSError, UserError):  # the user's error is what to report
            forget([str(path) for path in made])


def _report_every(
    rows: Iterator[tuple[Any, ...] | LineBlock], read: int, cb: Callable[[int], None]
) -> Iterator[tuple[Any, ...] | LineBlock]:
    """``rows``, calling ``cb`` with the number of source items read (``read`` were skipped
    before the first row) once past each multiple of 100,000."""
    next_at = 100_000
    for row in rows:
        read += len(row) if isinstance(row, LineBlock) else 1
        yield row
        if read >= next_at:
            cb(read)
            next_at = (read // 100_000 + 1) * 100_000


def _default_name(source: SourceSpec) -> str:
    from .sources import describe

    return describe(source)[:80]
