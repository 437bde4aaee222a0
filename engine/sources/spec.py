"""What a batch's items come from: :class:`SourceSpec` (stored in manifest.json as ``source``)
and :func:`build_spec`, which makes one from the command line's arguments and checks each of
them now, so that a mistake is said before a batch is created."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from pydantic import ConfigDict, Field

from ..basemodel import Model
from ..errors import UserError
from ..fmt import clean
from .text import codec

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


class SourceEntry(Model):
    """One source argument: its kind and its absolute path ("-" for stdin)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SourceKind
    path: str


class SourceSpec(Model):
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
    #: Fields each piped CSV/JSONL entry must have, with what names them ("the template",
    #: "--limit-by"): checked on its header (its first record) as it arrives, since nothing can
    #: look at a pipe ahead of its reading (see :func:`.records.expect_fields`). Not stored.
    needs: tuple[tuple[str, str], ...] = Field(default=(), exclude=True)


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


#: A record that was read: (key, record, line). The enqueue makes its row from this, without the
#: :class:`SourceItem` (and its origin) that :func:`iter_items` makes of it.
Record = tuple[str, dict[str, Any], int]


def build_spec(
    args: Sequence[str],
    *,
    as_kind: AsKind = "auto",
    glob: str | None = None,
    follow_symlinks: bool = False,
    encoding: str | None = None,
    key_field: str | None = None,
    delimiter: str | None = None,
) -> SourceSpec:
    """Turn source arguments into a :class:`SourceSpec`, checking each one now.

    "-" is stdin, a directory is walked, other paths get their kind from ``as_kind`` or, with
    "auto", from the suffix (.csv/.tsv, .jsonl/.ndjson, .txt/.lst/.list/.urls, else a file).
    Paths are made absolute so a resume from another directory reads the same inputs.
    Raises :class:`UserError` on a missing or unreadable path, stdin given twice, no arguments,
    an unknown encoding, a bad delimiter, an empty --glob, or an option that applies to none of
    the sources (``encoding`` None: not given, UTF-8). An option that would be ignored is refused:
    the user meant something by it, and a run that went on without it would do other work.
    """
    if isinstance(args, str):
        args = [args]
    if not args:
        raise UserError(
            "no source given: pass a directory, files, a list file (.txt), a CSV or JSONL file, or - for stdin"
        )
    if as_kind not in _AS_KINDS:
        raise UserError(f"unknown source kind {as_kind!r}: use one of auto, files, lines, csv, jsonl")
    if encoding is not None:
        codec(encoding)
    delimiter = _check_delimiter(delimiter)
    if glob is not None:
        # An empty pattern (often an unset shell variable: --glob "$PATTERN") would have walked
        # every file: all of them run, where a few were meant.
        glob = glob.strip().removeprefix("./")
        if not glob:
            raise UserError("--glob is empty: give a pattern such as '*.pdf', or leave --glob out")
        if glob.startswith("/"):  # matched against the paths inside each directory: never a match
            raise UserError(
                f"--glob {clean(glob)!r} starts with '/': the pattern is matched against the paths inside"
                f" the directory, so it would take nothing (give {clean(glob.lstrip('/') or '*')!r})"
            )
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
    if follow_symlinks and "dir" not in kinds:
        raise UserError("--follow-symlinks applies only to directory sources, and none was given")
    if encoding is not None and kinds.isdisjoint({"lines", "csv", "jsonl", "stdin"}):
        raise UserError("--encoding applies only to line, CSV and JSONL sources (and stdin), and none was given")
    if as_kind not in ("auto", "lines") and "stdin" in kinds:
        raise UserError(f"--as {as_kind} does not apply to stdin (-), which is read as lines: save it to a file first")
    if as_kind != "auto" and kinds <= {"dir", "stdin"} and not (as_kind == "lines" and "stdin" in kinds):
        raise UserError(f"--as {as_kind} applies only to file sources (not directories), and none was given")
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
        encoding=encoding or "utf-8",
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
    stream = stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)
    if as_kind != "auto":
        kind: SourceKind = as_kind
    else:
        # A pipe (a FIFO, `<(command)`) or a device cannot be one item, the file itself: with no
        # suffix that says otherwise, its lines are the items, as stdin's are.
        kind = _SUFFIX_KINDS.get(os.path.splitext(path)[1].lower(), "lines" if stream else "files")
    if kind == "files":
        if not stat.S_ISREG(st.st_mode):
            hint = " (a pipe or a device: its lines are items with --as lines)" if stream else ""
            raise UserError(f"not a regular file: {shown}{hint}")
    elif not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        # A FIFO or /dev/fd/N (process substitution) is fine to read lines or records from.
        raise UserError(f"not a readable file: {shown}")
    if not os.access(path, os.R_OK):
        raise UserError(f"file not readable: {shown} (permission denied)")
    return SourceEntry(kind=kind, path=path)


#: How much of a file :func:`reads_as_lines` looks at.
_SNIFF_BYTES: Final = 64 * 1024


def reads_as_lines(path: str) -> int:
    """How many lines the start of ``path`` holds if it reads as a list (UTF-8 text, no NUL
    byte, at least two non-blank lines in its first 64 KiB); 0 if it does not, or cannot be read.

    A file without a suffix is one item (``run urls --cmd 'curl {}'`` runs curl once, on the
    file's path): the CLI uses this to say so when the file looks like a list of lines."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return 0
    if b"\0" in head:
        return 0
    if len(head) == _SNIFF_BYTES:  # cut at a line's end: a character may be cut in two
        head = head[: head.rfind(b"\n") + 1]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    lines = sum(1 for line in text.splitlines() if line.strip())
    return lines if lines >= 2 else 0


class ListLike(NamedTuple):
    """A source file taken as one item that reads as a list of lines (see :func:`one_item_list`)."""

    path: str
    lines: int  # non-blank lines in its first 64 KiB
    whole: bool  # those 64 KiB are the whole file


def one_item_list(spec: SourceSpec, as_kind: AsKind = "auto") -> ListLike | None:
    """The only source when it is a file without a suffix, taken as one item, that reads as a
    list of lines (:func:`reads_as_lines`); None otherwise, and always for a spec made with
    another ``as_kind`` than auto: a user who said ``--as files`` meant it."""
    if as_kind != "auto" or len(spec.entries) != 1:
        return None
    entry = spec.entries[0]
    if entry.kind != "files" or os.path.splitext(entry.path)[1]:
        return None
    lines = reads_as_lines(entry.path)
    if not lines:
        return None
    try:
        whole = os.path.getsize(entry.path) <= _SNIFF_BYTES
    except OSError:
        return None
    return ListLike(entry.path, lines, whole)


def _check_delimiter(delimiter: str | None) -> str | None:
    if delimiter is None:
        return None
    named = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
    delimiter = named.get(delimiter.lower(), delimiter)
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise UserError(f"--delimiter must be one character (or \\t, tab), not {delimiter!r}")
    return delimiter


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
    # /dev/fd/63 (`<(command)`) or /dev/stdin says more whole than as "63" or "stdin".
    name = entry.path if entry.path.startswith(("/dev/", "/proc/")) else os.path.basename(entry.path)
    return clean(name if entry.kind == "files" else f"{name} ({entry.kind})")
