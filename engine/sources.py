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
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import fnmatch
import hashlib
import io
import itertools
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TextIO

import orjson
from pydantic import BaseModel, ConfigDict

from .errors import UserError
from .fmt import clean
from .models import Unreadable

SourceKind = Literal["dir", "files", "lines", "csv", "jsonl", "stdin"]
AsKind = Literal["auto", "files", "lines", "csv", "jsonl"]

_AS_KINDS: Final[frozenset[str]] = frozenset({"auto", "files", "lines", "csv", "jsonl"})
_SUFFIX_KINDS: Final[dict[str, SourceKind]] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "lines",
    ".lst": "lines",
    ".list": "lines",
    ".urls": "lines",
}
_SNIFF_BYTES: Final = 64 * 1024
_SNIFF_DELIMITERS: Final = ",;\t|"
_CSV_FIELD_LIMIT: Final = 64 * 1024 * 1024
_RAW_LIMIT: Final = 10_000
_FIELDS_SCAN_LINES: Final = 1000
# The enqueue reads line sources in blocks of this many characters (or, from a stdin object
# this module did not open, of this many lines): a few hundred kilobytes at a time.
_BLOCK_CHARS: Final = 256 * 1024
_BLOCK_LINES: Final = 8192
_DEFAULT_PORTS: Final[dict[str, int]] = {"http": 80, "https": 443, "ftp": 21}
# An http/https/ftp URL split as urllib.parse.urlsplit does (the RFC 3986 appendix B regex), with
# the authority taken apart: (scheme, userinfo@, host, port, path, query); the fragment is
# dropped. One match costs a fraction of urlsplit() plus .hostname/.port, and this runs once per
# line of a possibly huge input.
_URL_RE: Final = re.compile(
    r"(https?|ftp)://"
    r"([^/?#]*@)?"  # userinfo, kept as is; greedy, so it ends at the last "@" (as urlsplit)
    r"(\[[^\]/?#]*\]|[^:/?#\[\]@]+)"  # host: an IPv6 literal or a name
    r"(?::([0-9]*))?"  # port
    r"(/[^?#]*)?"  # path
    r"(?:\?([^#]*))?"  # query
    r"(?:#.*)?\Z",
    re.IGNORECASE | re.ASCII | re.DOTALL,
)

# A URL that normalize_line_key() returns unchanged: a lowercase http/https/ftp scheme, a host of
# lowercase ASCII name characters only (no userinfo, no port, no IPv6 literal: str.lower() leaves
# it as it is), a path, no fragment, and not ending in "?" (an empty query is dropped). Checking
# this is a fraction of normalizing; anything it does not match takes normalize_line_key().
_NORMAL_URL_HEAD: Final = r"(?:https?|ftp)://[a-z0-9._~%!$&'()*+,;=-]+/"
_NORMAL_URL_RE: Final = re.compile(_NORMAL_URL_HEAD + r"[^#]*(?<!\?)", re.ASCII)
_NORMAL_URL_HEAD_RE: Final = re.compile(_NORMAL_URL_HEAD, re.ASCII)
# A line start ("\n") where such a head begins; findall() gives the one-character "\n" per match,
# which allocates nothing.
_NORMAL_URL_LINES_RE: Final = re.compile(r"\n(?=" + _NORMAL_URL_HEAD + ")", re.ASCII)

# Undecodable bytes become this lone surrogate instead of raising inside the text layer, where
# the line number is lost (the decoder works on whole chunks). No strict decoder ever produces a
# lone surrogate, so finding it in a line means "this line did not decode".
_MARK: Final = "\udfff"
_MARK_ERRORS: Final = "batchtui.sources.mark"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return _MARK, exc.end
    raise exc


codecs.register_error(_MARK_ERRORS, _mark_undecodable)


class SourceEntry(BaseModel):
    """One source argument: its kind and its absolute path ("-" for stdin)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SourceKind
    path: str


class SourceSpec(BaseModel):
    """Where the items come from and how to read them; stored in manifest.json as ``source``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: tuple[SourceEntry, ...]
    glob: str | None = None
    follow_symlinks: bool = False
    encoding: str = "utf-8"
    key_field: str | None = None
    delimiter: str | None = None
    skip_hidden: bool = True
    #: Absolute directories pruned from directory walks (the batch output directory, so that
    #: ``run .`` never walks its own batch).
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One item from a source.

    ``data`` is JSON-serializable: the resolved path (files), the stripped line (lines, stdin) or
    a ``dict[str, Any]`` (CSV, JSONL). ``invalid`` says why a record could not be read; such an
    item is enqueued as failed. ``origin`` is "name:line" for line-based sources.
    """

    key: str
    data: Any
    invalid: str | None = None
    origin: str = ""


# -- building a spec -------------------------------------------------------------------------


def build_spec(
    args: Sequence[str],
    *,
    as_kind: AsKind = "auto",
    glob: str | None = None,
    follow_symlinks: bool = False,
    encoding: str = "utf-8",
    key_field: str | None = None,
    delimiter: str | None = None,
) -> SourceSpec:
    """Turn source arguments into a :class:`SourceSpec`, checking each one now.

    "-" is stdin, a directory is walked, other paths get their kind from ``as_kind`` or, with
    "auto", from the suffix (.csv/.tsv, .jsonl/.ndjson, .txt/.lst/.list/.urls, else a file).
    Paths are made absolute so a resume from another directory reads the same inputs.
    Raises :class:`UserError` on a missing or unreadable path, stdin given twice, no arguments,
    an unknown encoding, a bad delimiter, or an option that applies to none of the sources.
    """
    if isinstance(args, str):
        args = [args]
    if not args:
        raise UserError(
            "no source given: pass a directory, files, a list file (.txt), a CSV or JSONL file, or - for stdin"
        )
    if as_kind not in _AS_KINDS:
        raise UserError(f"unknown source kind {as_kind!r}: use one of auto, files, lines, csv, jsonl")
    _codec(encoding)
    delimiter = _check_delimiter(delimiter)
    if glob is not None:
        glob = glob.strip().removeprefix("./") or None
    entries: list[SourceEntry] = []
    for arg in args:
        if arg == "-":
            if any(e.kind == "stdin" for e in entries):
                raise UserError("stdin (-) is given more than once")
            entries.append(SourceEntry(kind="stdin", path="-"))
        else:
            entries.append(_entry_for(arg, as_kind))
    kinds = {e.kind for e in entries}
    if glob is not None and "dir" not in kinds:
        raise UserError(f"--glob {glob!r} applies only to directory sources, and none was given")
    if key_field is not None:
        if not key_field:
            raise UserError("--key-field is empty")
        if kinds.isdisjoint({"csv", "jsonl"}):
            raise UserError("--key-field applies only to CSV and JSONL sources, and none was given")
    if delimiter is not None and "csv" not in kinds:
        raise UserError("--delimiter applies only to CSV sources, and none was given")
    return SourceSpec(
        entries=tuple(entries),
        glob=glob,
        follow_symlinks=follow_symlinks,
        encoding=encoding,
        key_field=key_field,
        delimiter=delimiter,
    )


def _entry_for(arg: str, as_kind: AsKind) -> SourceEntry:
    if not arg:
        raise UserError("an empty path was given as a source")
    shown = clean(arg)
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"source path is not valid UTF-8: {shown} (rename it, or pass its directory)") from None
    path = os.path.abspath(arg)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise UserError(f"broken symlink: {shown}") from None
        raise UserError(f"no such file or directory: {shown}") from None
    except OSError as exc:
        raise UserError(f"cannot access {shown}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError(f"directory not readable: {shown} (permission denied)")
        return SourceEntry(kind="dir", path=path)
    kind: SourceKind = _SUFFIX_KINDS.get(os.path.splitext(path)[1].lower(), "files") if as_kind == "auto" else as_kind
    if kind == "files":
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"not a regular file: {shown}")
    elif not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        # A FIFO or /dev/fd/N (process substitution) is fine to read lines or records from.
        raise UserError(f"not a readable file: {shown}")
    if not os.access(path, os.R_OK):
        raise UserError(f"file not readable: {shown} (permission denied)")
    return SourceEntry(kind=kind, path=path)


def _check_delimiter(delimiter: str | None) -> str | None:
    if delimiter is None:
        return None
    named = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
    delimiter = named.get(delimiter.lower(), delimiter)
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise UserError(f"--delimiter must be one character (or \\t, tab), not {delimiter!r}")
    return delimiter


def _codec(encoding: str) -> str:
    """The codec to open text with: utf-8 becomes utf-8-sig so a BOM is dropped."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}") from None
    return "utf-8-sig" if name == "utf-8" else encoding


# -- iterating ---------------------------------------------------------------------------------


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
            yield from _walk_dir(entry.path, spec, unreadable if unreadable is not None else Unreadable())
        elif entry.kind == "files":
            yield _explicit_file(entry.path)
        elif entry.kind == "lines":
            with _open_text(entry.path, spec.encoding) as f:
                yield from _line_items(f, os.path.basename(entry.path), spec.encoding)
        elif entry.kind == "stdin":
            yield from _stdin_items(stdin, spec.encoding)
        elif entry.kind == "csv":
            yield from _items_of(_csv_records(entry.path, spec), os.path.basename(entry.path))
        else:
            yield from _items_of(_jsonl_records(entry.path, spec), os.path.basename(entry.path))


def iter_blocks(
    spec: SourceSpec, stdin: TextIO | None = None, unreadable: Unreadable | None = None
) -> Iterator[SourceItem | Record | list[str]]:
    """The items of :func:`iter_items`, in the same order, with those of line sources (a lines
    file, stdin) in blocks: lists of their data (the stripped lines kept), whose keys are
    :func:`line_keys`; and the CSV and JSONL records read as :data:`Record` tuples (those that
    cannot be read come as invalid items). The enqueue's fast path: no per-line item, origin
    or key here.

    Raises :class:`UserError` as :func:`iter_items` does, after the items before the error.
    """
    for entry in spec.entries:
        if entry.kind == "lines":
            with _open_text(entry.path, spec.encoding) as f:
                yield from _line_blocks(_read_blocks(f), os.path.basename(entry.path), spec.encoding)
        elif entry.kind == "stdin":
            yield from _stdin_blocks(stdin, spec.encoding)
        elif entry.kind == "csv":
            yield from _csv_records(entry.path, spec)
        elif entry.kind == "jsonl":
            yield from _jsonl_records(entry.path, spec)
        else:
            yield from iter_items(spec.model_copy(update={"entries": (entry,)}), stdin, unreadable)


def _file_item(real: str) -> SourceItem:
    try:
        real.encode("utf-8")
    except UnicodeEncodeError:
        # A name of raw bytes: the data keeps them (surrogate escapes, as os.fsdecode gives
        # them), the key, which is UTF-8 text everywhere, shows them as \xNN.
        return SourceItem(key=os.fsencode(real).decode("utf-8", "backslashreplace"), data=real)
    return SourceItem(key=real, data=real)


def _explicit_file(path: str) -> SourceItem:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UserError(f"cannot read {clean(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"not a regular file: {clean(path)}")
    return _file_item(os.path.realpath(path))


def _glob_matcher(pattern: str | None) -> Callable[[str, str], bool] | None:
    """(name, relative posix path) -> matches. Without "/" the pattern matches the name only."""
    if pattern is None:
        return None
    match = re.compile(fnmatch.translate(pattern)).match
    if "/" in pattern:
        return lambda _name, rel: match(rel) is not None
    return lambda name, _rel: match(name) is not None


def _scan(path: str) -> list[os.DirEntry[str]]:
    """The entries of one directory, sorted by name (OSError when it cannot be read)."""
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _path_max(path: str) -> int:
    """The longest path (in bytes, with its NUL) the system opens: PATH_MAX, 4096 on Linux."""
    try:
        return os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def _reason(exc: OSError, path_max: int) -> str:
    """Why a path could not be read, in a few words."""
    if exc.errno == errno.ENAMETOOLONG:
        return f"path longer than PATH_MAX, {path_max} bytes"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _shown_path(path: str) -> str:
    """A path for an example of what could not be read: escaped, and its middle cut when long."""
    shown = clean(path)
    return shown if len(shown) <= 160 else f"{shown[:70]}...{shown[-70:]}"


def _walk_dir(root: str, spec: SourceSpec, unreadable: Unreadable) -> Iterator[SourceItem]:
    follow = spec.follow_symlinks
    matcher = _glob_matcher(spec.glob)
    exclude = {os.path.realpath(p) for p in spec.exclude}
    try:
        st = os.stat(root)
        top = _scan(root)
    except OSError as exc:
        raise UserError(f"cannot read directory {clean(root)}: {exc.strerror or exc}") from None
    path_max = _path_max(root)
    # A path of as many characters as this may be too long (a character is 1 to 4 bytes): only
    # those are measured in bytes.
    long_chars = path_max // 4
    # Directories already entered, by identity; only needed when symlinks can make loops.
    visited = {(st.st_dev, st.st_ino)}
    # One frame per directory on the current path: (its resolved path, its path relative to the
    # root with a trailing "/", its remaining sorted entries). Resolving once per directory
    # spares a realpath() per file: below a resolved directory, a non-link name is resolved.
    stack: list[tuple[str, str, Iterator[os.DirEntry[str]]]] = [(os.path.realpath(root), "", iter(top))]
    while stack:
        real_dir, rel_dir, entries = stack[-1]
        de = next(entries, None)
        if de is None:
            stack.pop()
            continue
        name = de.name
        if spec.skip_hidden and name.startswith("."):
            continue
        try:
            is_link = de.is_symlink()
            if is_link and not follow:
                continue
            if de.is_dir(follow_symlinks=follow):
                real_sub = os.path.realpath(de.path) if is_link else os.path.join(real_dir, name)
                if real_sub in exclude:
                    continue
                if follow:
                    sst = de.stat(follow_symlinks=True)
                    ident = (sst.st_dev, sst.st_ino)
                    if ident in visited:
                        continue
                    visited.add(ident)
                try:
                    sub = _scan(de.path)
                except OSError as exc:  # not fatal, never silent: counted and shown
                    if exc.errno != errno.ENOENT:
                        unreadable.add(_shown_path(de.path), _reason(exc, path_max))
                    continue
                stack.append((real_sub, f"{rel_dir}{name}/", iter(sub)))
                continue
            if not de.is_file(follow_symlinks=follow):
                if is_link and not os.path.exists(de.path):
                    unreadable.add(_shown_path(de.path), "broken symbolic link")
                continue  # fifo, socket, device
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # else it vanished while walking: nothing to read
                unreadable.add(_shown_path(de.path), _reason(exc, path_max))
            continue
        if matcher is not None and not matcher(name, rel_dir + name):
            continue
        path = os.path.realpath(de.path) if is_link else os.path.join(real_dir, name)
        if len(path) >= long_chars and len(os.fsencode(path)) >= path_max:
            # Nothing can open it by its path: counted, rather than an item that can never run.
            unreadable.add(_shown_path(path), _reason(OSError(errno.ENAMETOOLONG, ""), path_max))
            continue
        yield _file_item(path)


def _open_text(path: str, encoding: str, newline: str | None = None) -> TextIO:
    try:
        return open(path, encoding=_codec(encoding), errors=_MARK_ERRORS, newline=newline)
    except OSError as exc:
        raise UserError(f"cannot read {clean(path)}: {exc.strerror or exc}") from None


def _undecodable(name: str, line: int, encoding: str) -> UserError:
    return UserError(f"{name}: line {line} is not valid {encoding} text (pass the right --encoding)")


def _line_items(lines: Iterable[str], name: str, encoding: str) -> Iterator[SourceItem]:
    for n, raw in enumerate(lines, 1):
        if _MARK in raw:
            raise _undecodable(name, n, encoding)
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        yield SourceItem(key=normalize_line_key(line), data=line, origin=f"{name}:{n}")


@contextlib.contextmanager
def _stdin_text(stdin: TextIO | None, encoding: str) -> Iterator[tuple[TextIO, bool]]:
    """The text stream stdin (-) is read from, and whether it was opened here.

    The real stdin's bytes are decoded with the source's encoding (not the locale's), bad bytes
    marked as for files; sys.stdin.buffer is left open afterwards. A stream passed in is read as
    it is, and a decoding error in it becomes a UserError."""
    if stdin is None or stdin is sys.stdin:
        if sys.stdin is None:
            raise UserError("stdin (-) was given but this process has no stdin")
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is not None:
            wrapper = io.TextIOWrapper(buffer, encoding=_codec(encoding), errors=_MARK_ERRORS)
            try:
                yield wrapper, True
            finally:
                wrapper.detach()  # leave sys.stdin.buffer open
            return
        stdin = sys.stdin
    try:
        yield stdin, False
    except UnicodeDecodeError:
        raise UserError(f"<stdin> is not valid {stdin.encoding or encoding} text") from None


def _stdin_items(stdin: TextIO | None, encoding: str) -> Iterator[SourceItem]:
    with _stdin_text(stdin, encoding) as (text, _opened):
        yield from _line_items(text, "<stdin>", encoding)


def _read_blocks(f: TextIO) -> Iterator[list[str]]:
    """The lines of ``f`` (without their newline), a block at a time. Only for text opened with
    universal newlines (every line ends in "\\n" once read): then this splits as iterating does."""
    tail = ""
    while chunk := f.read(_BLOCK_CHARS):
        lines = (tail + chunk).split("\n") if tail else chunk.split("\n")
        tail = lines.pop()
        if lines:
            yield lines
    if tail:
        yield [tail]


def _iter_blocks(lines: Iterable[str]) -> Iterator[list[str]]:
    """The lines of any text stream, a block at a time, split as iterating it splits them."""
    it = iter(lines)
    while block := list(itertools.islice(it, _BLOCK_LINES)):
        yield block


def _keep(lines: list[str]) -> list[str]:
    return [line for line in map(str.strip, lines) if line and line[0] != "#"]


def _line_blocks(blocks: Iterable[list[str]], name: str, encoding: str) -> Iterator[list[str]]:
    """:func:`_line_items` a block at a time: the data of the lines kept, block by block."""
    n = 0  # lines before this block
    for raw in blocks:
        if _MARK in "".join(raw):
            bad = next(i for i, line in enumerate(raw) if _MARK in line)
            kept = _keep(raw[:bad])
            if kept:
                yield kept
            raise _undecodable(name, n + bad + 1, encoding)
        n += len(raw)
        kept = _keep(raw)
        if kept:
            yield kept


def _stdin_blocks(stdin: TextIO | None, encoding: str) -> Iterator[list[str]]:
    """:func:`_stdin_items` a block at a time."""
    with _stdin_text(stdin, encoding) as (text, opened):
        # A stream not opened here has an unknown newline mode: split it as iterating it does.
        yield from _line_blocks(_read_blocks(text) if opened else _iter_blocks(text), "<stdin>", encoding)


# -- CSV ---------------------------------------------------------------------------------------


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


class _CsvHead:
    """An open CSV: its reader positioned after the header, and the header."""

    def __init__(self, f: TextIO, path: str, spec: SourceSpec) -> None:
        self.name = os.path.basename(path)
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        # Sniff on the head, then read on from it without seeking (works for pipes too). The
        # head is completed to a whole line so no physical line is split in two.
        head = f.read(_SNIFF_BYTES)
        if head and not head.endswith("\n"):
            head += f.readline()
        delimiter = spec.delimiter or _sniff_delimiter(head, path)
        lines = itertools.chain(io.StringIO(head, newline=""), f)
        self.reader = csv.reader(lines, delimiter=delimiter)
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
                raise UserError(f"{self.name}: line {self.reader.line_num}: {exc}") from None
            if row is None:
                return
            self.last_line = self.reader.line_num
            if any(_MARK in field for field in row):
                raise _undecodable(self.name, start, self.encoding)
            yield start, row


#: A record that was read: (key, record, line). The enqueue makes its row from this, without the
#: :class:`SourceItem` (and its origin) that :func:`iter_items` makes of it.
Record = tuple[str, dict[str, Any], int]


def _items_of(records: Iterator[SourceItem | Record], name: str) -> Iterator[SourceItem]:
    for rec in records:
        if isinstance(rec, SourceItem):
            yield rec
        else:
            key, data, n = rec
            yield SourceItem(key=key, data=data, origin=f"{name}:{n}")


def _csv_records(path: str, spec: SourceSpec) -> Iterator[SourceItem | Record]:
    """The records of a CSV file; those that cannot be read as invalid items."""
    key_field = spec.key_field
    with _open_text(path, spec.encoding, newline="") as f:
        head = _CsvHead(f, path, spec)
        header = head.header
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


# -- JSONL -------------------------------------------------------------------------------------

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
    if _MARK in line:
        return None, f"line {n}: not valid {encoding} text"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, f"line {n}: invalid JSON: {exc}"
    if not isinstance(obj, dict):
        return None, f"line {n}: expected a JSON object, got {_JSON_TYPES.get(type(obj), type(obj).__name__)}"
    return obj, None


def _jsonl_records(path: str, spec: SourceSpec) -> Iterator[SourceItem | Record]:
    """The records of a JSONL file; those that cannot be read as invalid items."""
    name = os.path.basename(path)
    key_field = spec.key_field
    with _open_text(path, spec.encoding) as f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            obj, why = _parse_jsonl_line(line, n, spec.encoding)
            if obj is None:
                shown = line[:_RAW_LIMIT].replace(_MARK, "\ufffd")
                yield SourceItem(key=f"{path}:{n}", data={"_raw": shown, "_line": n}, invalid=why, origin=f"{name}:{n}")
                continue
            yield _record(obj, key_field, path, n, name)


# -- keys --------------------------------------------------------------------------------------


def normalize_line_key(line: str) -> str:
    """The one key normalization for lines.

    Stripped; an http/https/ftp URL gets a lowercase scheme and host, no default port, no
    fragment and "/" for an empty path (the query is kept as is). Anything else is the stripped
    line unchanged.
    """
    line = line.strip()
    m = _URL_RE.match(line)
    if m is None:
        return line
    scheme, userinfo, host, port, path, query = m.groups()
    scheme = scheme.lower()
    if port:
        if not port.isdigit() or int(port) > 65535:
            return line
        port = "" if int(port) == _DEFAULT_PORTS[scheme] else f":{int(port)}"
    query = f"?{query}" if query else ""
    return f"{scheme}://{userinfo or ''}{host.lower()}{port or ''}{path or '/'}{query}"


def line_keys(lines: list[str]) -> list[str]:
    """``[normalize_line_key(line) for line in lines]`` for stripped lines, faster: a line
    without "://" is its own key, and so is a URL already in normal form (most of a URL list).
    When every line of the block is its own key, that is told from a few scans of its text and
    ``lines`` itself is returned."""
    if _own_keys(lines):
        return lines
    normal = _NORMAL_URL_RE.fullmatch
    norm = normalize_line_key
    return [line if "://" not in line or normal(line) else norm(line) for line in lines]


def _own_keys(lines: list[str]) -> bool:
    """Whether every one of these stripped lines is its own key; False when unsure."""
    text = "\n" + "\n".join(lines)
    if text.count("\n") != len(lines):
        return False  # a line holds a newline: not one line per "\n" here
    urls = text.count("://")
    if not urls:
        return True
    if "#" in text or "?\n" in text or text.endswith("?"):
        return False  # maybe a fragment or an empty query: see line by line
    # A line starting with a URL head in normal form (scheme://host/) is a URL in normal form:
    # it has no "#" and does not end in "?" (seen above). Each head holds one "://", so when
    # there are as many heads at line starts as "://" in the block, every "://" is in one: the
    # other lines are no URLs. Most URL lists share one head: count that first.
    first = _NORMAL_URL_HEAD_RE.match(lines[0])
    if first is not None and text.count("\n" + first.group()) == urls:
        return True
    return len(_NORMAL_URL_LINES_RE.findall(text)) == urls


def record_hash(record: Mapping[str, Any]) -> str:
    """A record's key without --key-field: 32 hex chars of sha256 over its canonical JSON."""
    data = record if isinstance(record, dict) else dict(record)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


# -- describing --------------------------------------------------------------------------------


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
            with _open_text(entry.path, spec.encoding, newline="") as f:
                fields.update(_CsvHead(f, entry.path, spec).header)
            continue
        with _open_text(entry.path, spec.encoding) as f:
            for n, raw in enumerate(itertools.islice(f, _FIELDS_SCAN_LINES), 1):
                if raw.strip():
                    obj, _ = _parse_jsonl_line(raw.strip(), n, spec.encoding)
                    if obj is not None:
                        fields.update(obj)
                        break
    return fields


def describe(spec: SourceSpec) -> str:
    """Short human text for the spec, e.g. "dir /data (*.py)", "urls.txt (lines)", "2 sources"."""
    entries = spec.entries
    if not entries:
        return "no sources"
    if len(entries) > 1:
        if all(e.kind == "files" for e in entries):
            return f"{len(entries)} files"
        return f"{len(entries)} sources"
    entry = entries[0]
    if entry.kind == "dir":
        return clean(f"dir {entry.path}" + (f" ({spec.glob})" if spec.glob else ""))
    if entry.kind == "stdin":
        return "stdin (lines)"
    name = os.path.basename(entry.path)
    return clean(name if entry.kind == "files" else f"{name} ({entry.kind})")
