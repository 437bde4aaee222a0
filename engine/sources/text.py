"""Opening a source's text so that a line that does not decode is found with its number.

The decoder works on whole chunks: a strict one would raise inside the text layer, where the
line number is lost. Undecodable bytes become :data:`MARK` instead, and the readers of lines,
CSV rows and JSONL records raise :func:`undecodable` (or mark the record invalid) at the line
holding it.
"""

from __future__ import annotations

import codecs
import contextlib
from collections.abc import Iterator
from typing import Final, TextIO

from ..errors import UserError
from ..fmt import clean

# Undecodable bytes become this lone surrogate instead of raising inside the text layer, where
# the line number is lost (the decoder works on whole chunks). No strict decoder ever produces a
# lone surrogate, so finding it in a line means "this line did not decode".
MARK: Final = "\udfff"

MARK_ERRORS: Final = "batchtui.sources.mark"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return MARK, exc.end
    raise exc


codecs.register_error(MARK_ERRORS, _mark_undecodable)


_TEXT_ENCODINGS: Final = "pass a text encoding such as utf-8, latin-1, cp1252 or utf-16-le"


def codec(encoding: str) -> str:
    """The codec to open text with: utf-8 becomes utf-8-sig so a BOM is dropped.

    Refused (UserError) up front: an unknown name, a codec that is no text encoding (rot13,
    base64, hex, zlib: bytes to bytes, which ``open`` raises LookupError on), and one that
    cannot decode a stream with our error handler (idna, punycode: strict only)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise UserError(f"encoding {encoding!r} is not a text encoding (it turns bytes into bytes): {_TEXT_ENCODINGS}")
    try:
        codecs.getincrementaldecoder(encoding)(errors=MARK_ERRORS).decode(b"", final=True)
    except UnicodeError as exc:  # idna, punycode: strict only; "undefined": always raises
        why = "it can only stop at a byte it cannot decode" if MARK_ERRORS in str(exc) else str(exc)
        raise UserError(f"encoding {encoding!r} cannot read text files ({why}): {_TEXT_ENCODINGS}") from None
    return "utf-8-sig" if info.name == "utf-8" else encoding


def stream_error(name: str, encoding: str, exc: UnicodeError) -> UserError:
    """A decoding failure of the whole stream (not of a line, those are marked): utf-16 or
    utf-32 without a BOM says so on its first chunk, before any line."""
    base = codecs.lookup(encoding).name
    hint = f" (for a file without one, pass {base}-le or {base}-be)" if "BOM" in str(exc) else ""
    return UserError(f"{name} is not valid {encoding} text: {exc}{hint}")


@contextlib.contextmanager
def open_text(path: str, encoding: str, newline: str | None = None) -> Iterator[TextIO]:
    try:
        f = open(path, encoding=codec(encoding), errors=MARK_ERRORS, newline=newline)  # noqa: SIM115
    except OSError as exc:
        raise UserError(f"cannot read {clean(path)}: {exc.strerror or exc}") from None
    with f:
        try:
            yield f
        except UnicodeError as exc:
            raise stream_error(clean(path), encoding, exc) from None


def undecodable(name: str, line: int, encoding: str) -> UserError:
    return UserError(f"{name}: line {line} is not valid {encoding} text (pass the right --encoding)")
