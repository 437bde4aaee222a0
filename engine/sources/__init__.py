"""Item sources, streamed: a directory walk, files, line files, CSV, JSONL and stdin.

:func:`build_spec` turns command-line arguments into a :class:`SourceSpec` (stored in the
manifest), :func:`iter_items` streams :class:`SourceItem` objects from it. Nothing here holds a
whole input in memory: files are read line by line and a directory walk keeps only the sorted
entries of the directories on the current path.

Every item has a key from the one normalization of its kind (files: the resolved path; lines:
:func:`normalize_line_key`; records: ``--key-field`` or :func:`record_hash`). Duplicates are not
dropped here: the store dedupes on the key, so the key functions must be deterministic.

A record that cannot be read (invalid JSON line, ragged CSV row) does not stop the batch: it
comes as an item with ``invalid`` set, which the engine enqueues as failed. A wrong encoding or a
CSV without a usable header is the user's mistake and raises :class:`UserError` when reached.

What a directory walk cannot read (a folder it may not list, a path longer than PATH_MAX, a
broken link it was asked to follow) is never skipped in silence: it is counted, with a few
examples, in the :class:`~batchtui.engine.models.Unreadable` passed in (the batch's manifest
and report say so). A file whose name is not UTF-8 is an item like any other: its data is the
path as ``os.fsdecode`` gives it (undecodable bytes as surrogate escapes, so ``open()`` and a
shell's ``{path}`` get the exact bytes) and its key shows those bytes as ``\\xNN``.

The package's API is here (:func:`build_spec`, :func:`iter_items`, :func:`iter_blocks`,
:func:`fields_of`, :func:`describe`, the models and the key functions); each kind of source
is read in its own module:

    spec.py      SourceSpec and its parts, build_spec (checks the arguments), describe
    walk.py      a directory walk, and explicit files
    lines.py     line files and stdin, a line's key (URLs normalized)
    records.py   CSV and JSONL records, a record's key, the fields a template may use
    text.py      opening text so that a line that does not decode is found, with its number
    waiting.py   a source that keeps its reader waiting (a pipe): its waits told, its lines as they come
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TextIO

from ..models import Unreadable
from .lines import (
    line_blocks,
    line_chunks,
    line_items,
    line_keys,
    normalize_line_key,
    stdin_blocks,
    stdin_items,
)
from .records import csv_records, expect_fields, fields_of, items_of, jsonl_records, piped_records, record_hash
from .spec import (
    AsKind,
    Record,
    SourceEntry,
    SourceItem,
    SourceKind,
    SourceSpec,
    build_spec,
    describe,
    one_item_list,
    reads_as_lines,
)
from .text import open_text
from .waiting import NoWriter, SourceWait, named_pipes, open_source_text
from .walk import explicit_file, walk_dir

__all__ = [
    "AsKind",
    "NoWriter",
    "Record",
    "SourceEntry",
    "SourceItem",
    "SourceKind",
    "SourceSpec",
    "SourceWait",
    "build_spec",
    "describe",
    "expect_fields",
    "fields_of",
    "iter_blocks",
    "iter_items",
    "line_keys",
    "named_pipes",
    "normalize_line_key",
    "one_item_list",
    "piped_records",
    "reads_as_lines",
    "record_hash",
]


def iter_items(
    spec: SourceSpec, stdin: TextIO | None = None, unreadable: Unreadable | None = None
) -> Iterator[SourceItem]:
    """Stream every item of ``spec``, entry by entry, in order (a directory in name order).

    ``stdin`` is read for a "-" entry (default: ``sys.stdin``, decoded with ``spec.encoding``).
    What a directory walk could not read is counted in ``unreadable``.
    Raises :class:`UserError` when an input is missing or does not decode, when reached.
    """
    for entry in spec.entries:
        if entry.kind == "dir":
            yield from walk_dir(entry.path, spec, unreadable if unreadable is not None else Unreadable())
        elif entry.kind == "files":
            yield explicit_file(entry.path)
        elif entry.kind == "lines":
            with open_text(entry.path, spec.encoding) as f:
                yield from line_items(f, os.path.basename(entry.path), spec.encoding)
        elif entry.kind == "stdin":
            yield from stdin_items(stdin, spec.encoding)
        elif entry.kind == "csv":
            yield from items_of(csv_records(entry.path, spec), os.path.basename(entry.path))
        else:
            yield from items_of(jsonl_records(entry.path, spec), os.path.basename(entry.path))


def iter_blocks(
    spec: SourceSpec,
    stdin: TextIO | None = None,
    unreadable: Unreadable | None = None,
    wait: SourceWait | None = None,
) -> Iterator[SourceItem | Record | list[str]]:
    """The items of :func:`iter_items`, in the same order, with those of line sources (a lines
    file, stdin) in blocks: lists of their data (the stripped lines kept), whose keys are
    :func:`line_keys`; and the CSV and JSONL records read as :data:`Record` tuples (those that
    cannot be read come as invalid items). The enqueue's fast path: no per-line item, origin
    or key here.

    A source that may keep its reader waiting (stdin, a FIFO, a device) tells ``wait`` of its
    waits, and its lines come as they are sent (see :mod:`.waiting`).

    Raises :class:`UserError` as :func:`iter_items` does, after the items before the error.
    A named pipe read again that no writer opened in time (:class:`NoWriter`) is passed over
    when ``wait.go_on`` (noted in ``wait.no_writer``), else raised.
    """
    for entry in spec.entries:
        try:
            if entry.kind == "lines":
                with open_source_text(entry.path, spec.encoding, wait=wait) as f:
                    yield from line_blocks(line_chunks(f, spec.encoding), os.path.basename(entry.path), spec.encoding)
            elif entry.kind == "stdin":
                yield from stdin_blocks(stdin, spec.encoding, wait)
            elif entry.kind == "csv":
                yield from csv_records(entry.path, spec, wait)
            elif entry.kind == "jsonl":
                yield from jsonl_records(entry.path, spec, wait)
            else:
                yield from iter_items(spec.model_copy(update={"entries": (entry,)}), stdin, unreadable)
        except NoWriter:
            if wait is None or not wait.go_on:
                raise
            wait.no_writer.append(entry.path)  # raised by the open: nothing of it was read
