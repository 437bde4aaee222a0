"""Line sources (a text file of lines, stdin) and a line's key.

A line is stripped; blank lines and lines starting with "#" are no items. Its key is
:func:`normalize_line_key` (a URL gets one spelling). The enqueue's fast path reads lines in
blocks and keys a whole block at once (:func:`line_keys`), without an item object per line.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Final, TextIO

from ..errors import UserError
from .spec import SourceItem
from .text import MARK, MARK_ERRORS, codec, stream_error, undecodable
from .waiting import SourceWait, WaitingReader, may_wait, pipe_blocks, waiting_text

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


def line_items(lines: Iterable[str], name: str, encoding: str) -> Iterator[SourceItem]:
    for n, raw in enumerate(lines, 1):
        if MARK in raw:
            raise undecodable(name, n, encoding)
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        yield SourceItem(key=normalize_line_key(line), data=line, origin=f"{name}:{n}")


@contextlib.contextmanager
def _stdin_text(stdin: TextIO | None, encoding: str, wait: SourceWait | None = None) -> Iterator[tuple[TextIO, bool]]:
    """The text stream stdin (-) is read from, and whether it was opened here.

    The real stdin's bytes are decoded with the source's encoding (not the locale's), bad bytes
    marked as for files; sys.stdin.buffer is left open afterwards. With ``wait``, a stdin that
    is no regular file (a pipe, a terminal) is read from its descriptor through
    :class:`.waiting.WaitingReader` (nothing reads stdin before the enqueue: the preflight does
    not). A stream passed in is read as it is, and a decoding error in it becomes a UserError."""
    if stdin is None or stdin is sys.stdin:
        if sys.stdin is None:
            raise UserError("stdin (-) was given but this process has no stdin")
        buffer = getattr(sys.stdin, "buffer", None)
        fd = _fileno(buffer)
        if wait is not None and fd is not None and may_wait(fd):
            name = codec(encoding)
            with waiting_text(fd, wait, name, closefd=False) as text:
                try:
                    yield text, True
                except UnicodeError as exc:
                    raise stream_error("<stdin>", encoding, exc) from None
            return
        if buffer is not None:
            wrapper = io.TextIOWrapper(buffer, encoding=codec(encoding), errors=MARK_ERRORS)
            try:
                yield wrapper, True
            except UnicodeError as exc:
                raise stream_error("<stdin>", encoding, exc) from None
            finally:
                wrapper.detach()  # leave sys.stdin.buffer open
            return
        stdin = sys.stdin
    try:
        yield stdin, False
    except UnicodeDecodeError:
        raise UserError(f"<stdin> is not valid {stdin.encoding or encoding} text") from None


def _fileno(stream: object) -> int | None:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def stdin_items(stdin: TextIO | None, encoding: str) -> Iterator[SourceItem]:
    with _stdin_text(stdin, encoding) as (text, _opened):
        yield from line_items(text, "<stdin>", encoding)


def read_blocks(f: TextIO) -> Iterator[list[str]]:
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


def line_chunks(f: TextIO, encoding: str) -> Iterator[list[str]]:
    """:func:`read_blocks`, or of a source read through :class:`.waiting.WaitingReader` (nothing
    read from ``f`` yet) a block of what has come at a time: ``f.read(n)`` waits for ``n``
    characters or the end, and held back the lines a pipe sent before a pause."""
    binary = getattr(f, "buffer", None)
    if isinstance(binary, io.BufferedReader) and isinstance(binary.raw, WaitingReader):
        return pipe_blocks(binary, encoding)
    return read_blocks(f)


def _iter_blocks(lines: Iterable[str]) -> Iterator[list[str]]:
    """The lines of any text stream, a block at a time, split as iterating it splits them."""
    it = iter(lines)
    while block := list(itertools.islice(it, _BLOCK_LINES)):
        yield block


def _keep(lines: list[str]) -> list[str]:
    return [line for line in map(str.strip, lines) if line and line[0] != "#"]


def line_blocks(blocks: Iterable[list[str]], name: str, encoding: str) -> Iterator[list[str]]:
    """:func:`line_items` a block at a time: the data of the lines kept, block by block."""
    n = 0  # lines before this block
    for raw in blocks:
        if MARK in "".join(raw):
            bad = next(i for i, line in enumerate(raw) if MARK in line)
            kept = _keep(raw[:bad])
            if kept:
                yield kept
            raise undecodable(name, n + bad + 1, encoding)
        n += len(raw)
        kept = _keep(raw)
        if kept:
            yield kept


def stdin_blocks(stdin: TextIO | None, encoding: str, wait: SourceWait | None = None) -> Iterator[list[str]]:
    """:func:`stdin_items` a block at a time (``wait``: see :func:`_stdin_text`)."""
    with _stdin_text(stdin, encoding, wait) as (text, opened):
        # A stream not opened here has an unknown newline mode: split it as iterating it does.
        yield from line_blocks(line_chunks(text, encoding) if opened else _iter_blocks(text), "<stdin>", encoding)


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
