"""Record sources: CSV (delimiter sniffed, header required, empty rows skipped) and JSONL.

A record's key is its ``--key-field``, else :func:`record_hash` of its canonical JSON. A record
that cannot be read (a ragged row, a line that is no JSON object) is an invalid item, enqueued
as failed; a CSV without a usable header is the user's mistake (:class:`UserError`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, TextIO

import orjson

from ..errors import UserError
from ..fmt import clean
from ..jsonexact import inexact_integer
from .spec import Record, SourceItem, SourceSpec
from .text import MARK, open_text, undecodable
from .waiting import SourceWait, arrived_head, open_source_text

_SNIFF_BYTES: Final = 64 * 1024

_SNIFF_DELIMITERS: Final = ",;\t|"

_CSV_FIELD_LIMIT: Final = 64 * 1024 * 1024

_RAW_LIMIT: Final = 10_000

_FIELDS_SCAN_LINES: Final = 1000


def _sniff_delimiter(head: str, path: str) -> str:
    sample = head[:_SNIFF_BYTES]
    cut = sample.rfind("\n")
    if cut > 0:
        sample = sample[:cut]
    first = next((ln for ln in sample.splitlines() if ln.strip()), "")
    if path.lower().endswith(".tsv") and "\t" in first:
        return "\t"  # what the name says; the sniffer may prefer a comma inside the values
    try:
        found = csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS).delimiter
    except csv.Error:
        found = ","
    if found in first:
        return found
    # The sniffer guessed a character the header does not even contain: trust the header.
    counts = {d: first.count(d) for d in _SNIFF_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class CsvHead:
    """An open CSV: its reader positioned after the header, and the header."""

    def __init__(self, f: TextIO, path: str, spec: SourceSpec) -> None:
        self.name = os.path.basename(path)
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        # Sniff on the head, then read on from it without seeking (works for pipes too). The
        # head is completed to a whole line so no physical line is split in two. A pipe's head
        # is what has come (arrived_head): its first records are not held back for 64 KiB; with
        # --delimiter there is nothing to sniff, and no head is read.
        lines: Iterable[str]
        if spec.delimiter:
            delimiter, lines = spec.delimiter, f
        elif (arrived := arrived_head(f, _SNIFF_BYTES, newline="")) is not None:
            delimiter, lines = _sniff_delimiter(arrived[0], path), arrived[1]
        else:
            head = f.read(_SNIFF_BYTES)
            if head and not head.endswith("\n"):
                head += f.readline()
            delimiter = _sniff_delimiter(head, path)
            lines = itertools.chain(io.StringIO(head, newline=""), f)
        # strict: a quote left open would swallow the rest of the file into one field, and
        # ``"a"b`` would silently become ``ab``; both are refused at their line instead.
        self.reader = csv.reader(lines, delimiter=delimiter, strict=True)
        self.last_line = 0
        self.encoding = spec.encoding
        header_row: list[str] | None = None
        for row in self.rows():
            if any(field.strip() for field in row[1]):
                header_row = row[1]
                break
        if header_row is None:
            raise UserError(f"{self.name}: empty CSV file: a header line naming the columns is required")
        self.header = [h.strip() for h in header_row]
        for i, h in enumerate(self.header, 1):
            if not h:
                raise UserError(
                    f"{self.name}: header column {i} has no name (is the first line a header?); "
                    f"header: {', '.join(self.header)}"
                )
        dup = next((h for i, h in enumerate(self.header) if h in self.header[:i]), None)
        if dup is not None:
            raise UserError(f"{self.name}: header names column {dup!r} twice")
        if spec.key_field is not None and spec.key_field not in self.header:
            raise UserError(
                f"{self.name}: --key-field {spec.key_field!r} is not a column; columns: {', '.join(self.header)}"
            )

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line where the row starts, row), checking that it decoded."""
        while True:
            start = self.last_line + 1
            try:
                row = next(self.reader, None)
            except csv.Error as exc:
                if str(exc) == "unexpected end of data":
                    raise UserError(
                        f"{self.name}: line {start}: a quoted field opens in this row and is never closed"
                        " (the rest of the file would be one field)"
                    ) from None
                hint = ' (a quote inside a quoted field is written twice: "")' if "'\"'" in str(exc) else ""
                raise UserError(f"{self.name}: line {self.reader.line_num}: {exc}{hint}") from None
            if row is None:
                return
            self.last_line = self.reader.line_num
            if any(MARK in field for field in row):
                raise undecodable(self.name, start, self.encoding)
            yield start, row


def items_of(records: Iterator[SourceItem | Record], name: str) -> Iterator[SourceItem]:
    for rec in records:
        if isinstance(rec, SourceItem):
            yield rec
        else:
            key, data, n = rec
            yield SourceItem(key=key, data=data, origin=f"{name}:{n}")


def csv_records(path: str, spec: SourceSpec, wait: SourceWait | None = None) -> Iterator[SourceItem | Record]:
    """The records of a CSV file; those that cannot be read as invalid items (``wait``: a pipe's
    waits are told there, see :mod:`.waiting`)."""
    key_field = spec.key_field
    with open_source_text(path, spec.encoding, newline="", wait=wait) as f:
        head = CsvHead(f, path, spec)
        header = head.header
        if spec.needs and not _regular_file(f):
            _check_needs(spec, head.name, header, "its header")
        width = len(header)
        for n, row in head.rows():
            if not any(field.strip() for field in row):
                continue  # blank line or a row of empty fields
            if len(row) != width:
                yield SourceItem(
                    key=f"{path}:{n}",
                    data={"_raw": row, "_line": n},
                    invalid=f"row {n} has {len(row)} fields, header has {width}",
                    origin=f"{head.name}:{n}",
                )
                continue
            record = dict(zip(header, row, strict=True))
            yield _record(record, key_field, path, n, head.name)


def _record(record: dict[str, Any], key_field: str | None, path: str, n: int, name: str) -> SourceItem | Record:
    if key_field is None:
        return record_hash(record), record, n
    if key_field not in record:
        return SourceItem(
            key=f"{path}:{n}", data=record, invalid=f"line {n}: no field {key_field!r}", origin=f"{name}:{n}"
        )
    value = record[key_field]
    key = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if value is None or not key.strip():
        # An empty key would silently merge every such record into one.
        return SourceItem(
            key=f"{path}:{n}", data=record, invalid=f"line {n}: field {key_field!r} is empty", origin=f"{name}:{n}"
        )
    return key, record, n


_JSON_TYPES: Final[dict[type, str]] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _parse_jsonl_line(line: str, n: int, encoding: str) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None, why not)."""
    if MARK in line:
        return None, f"line {n}: not valid {encoding} text"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, f"line {n}: invalid JSON: {exc}"
    if not isinstance(obj, dict):
        return None, f"line {n}: expected a JSON object, got {_JSON_TYPES.get(type(obj), type(obj).__name__)}"
    return obj, None


def _parse_record(line: str, n: int, encoding: str) -> tuple[dict[str, Any] | None, str | None]:
    """:func:`_parse_jsonl_line`, and an integer orjson could not keep is a reason too."""
    obj, why = _parse_jsonl_line(line, n, encoding)
    if obj is not None and (big := inexact_integer(line)) is not None:
        return None, (
            f"line {n}: the integer {big} is beyond 64 bits and would be read as a float, losing digits;"
            " write it as a string"
        )
    return obj, why


def jsonl_records(path: str, spec: SourceSpec, wait: SourceWait | None = None) -> Iterator[SourceItem | Record]:
    """The records of a JSONL file; those that cannot be read as invalid items (``wait``: a
    pipe's waits are told there, see :mod:`.waiting`)."""
    name = os.path.basename(path)
    key_field = spec.key_field
    with open_source_text(path, spec.encoding, wait=wait) as f:
        unchecked = bool(spec.needs) and not _regular_file(f)
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            obj, why = _parse_record(line, n, spec.encoding)
            if obj is None:
                shown = line[:_RAW_LIMIT].replace(MARK, "\ufffd")
                yield SourceItem(key=f"{path}:{n}", data={"_raw": shown, "_line": n}, invalid=why, origin=f"{name}:{n}")
                continue
            if unchecked:  # the first record, as preflight reads a file's
                _check_needs(spec, name, obj, f"its first record (line {n})")
                unchecked = False
            yield _record(obj, key_field, path, n, name)


def record_hash(record: Mapping[str, Any]) -> str:
    """A record's key without --key-field: 32 hex chars of sha256 over its canonical JSON."""
    data = record if isinstance(record, dict) else dict(record)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _regular_file(f: TextIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _check_needs(spec: SourceSpec, name: str, have: Iterable[str], where: str) -> None:
    """UserError when ``have`` (a piped entry's header or first record) lacks a field of
    ``spec.needs``: said as preflight says it of a file, before any of the entry's items."""
    have = set(have)
    lacking: dict[str, list[str]] = {}
    for field, who in spec.needs:
        if field not in have:
            lacking.setdefault(who, []).append(field)
    if lacking:
        uses = "; ".join(f"{who} uses {', '.join(fields)}" for who, fields in lacking.items())
        raise UserError(
            f"{clean(name)}: {uses}, which {where} lacks (it has: {', '.join(sorted(map(clean, have))) or 'nothing'})"
        )


def piped_records(spec: SourceSpec) -> list[str]:
    """The CSV and JSONL entries that are no regular file (a FIFO, ``/dev/stdin``, a device):
    their fields are known only as they are read."""
    piped = []
    for entry in spec.entries:
        if entry.kind in ("csv", "jsonl"):
            try:
                regular = stat.S_ISREG(os.stat(entry.path).st_mode)
            except OSError:
                regular = True  # the reading says what is wrong with it
            if not regular:
                piped.append(entry.path)
    return piped


def expect_fields(spec: SourceSpec, wanted: Mapping[str, str]) -> SourceSpec:
    """``spec``, told to check ``wanted`` (field -> what names it) in each piped CSV/JSONL
    entry as it arrives: the fields that no regular file of it has (:func:`fields_of`, which
    preflight checks, reads files only). Unchanged without piped entries."""
    if not wanted or not piped_records(spec):
        return spec
    known = fields_of(spec) or set()
    needs = tuple((field, who) for field, who in sorted(wanted.items()) if field not in known)
    return spec.model_copy(update={"needs": needs}) if needs else spec


def fields_of(spec: SourceSpec) -> set[str] | None:
    """The field names a template may use: CSV headers and the keys of each JSONL file's first
    object (a union over entries); None without a CSV or JSONL entry. Reads only file heads; a
    pipe is not read (that would eat its items)."""
    fields: set[str] | None = None
    for entry in spec.entries:
        if entry.kind not in ("csv", "jsonl"):
            continue
        fields = fields if fields is not None else set()
        try:
            if not stat.S_ISREG(os.stat(entry.path).st_mode):
                continue
        except OSError as exc:
            raise UserError(f"cannot read {clean(entry.path)}: {exc.strerror or exc}") from None
        if entry.kind == "csv":
            with open_text(entry.path, spec.encoding, newline="") as f:
                fields.update(CsvHead(f, entry.path, spec).header)
            continue
        with open_text(entry.path, spec.encoding) as f:
            for n, raw in enumerate(itertools.islice(f, _FIELDS_SCAN_LINES), 1):
                if raw.strip():
                    obj, _ = _parse_jsonl_line(raw.strip(), n, spec.encoding)
                    if obj is not None:
                        fields.update(obj)
                        break
    return fields
