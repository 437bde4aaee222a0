"""Opening a source's text so that a line that does not decode is found with its number.

The decoder works on whole chunks: a strict one would raise inside the text layer, where the
line number is lost. Undecodable bytes become :data:`MARK` instead, and the readers of lines,
CSV rows and JSONL records raise :func:`undecodable` (or mark the record invalid) at the line
holding it.
"""

from __future__ import annotations

import codecs
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


def codec(encoding: str) -> str:
    """The codec to open text with: utf-8 becomes utf-8-sig so a BOM is dropped."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}") from None
    return "utf-8-sig" if name == "utf-8" else encoding


def open_text(path: str, encoding: str, newline: str | None = None) -> TextIO:
    try:
        return open(path, encoding=codec(encoding), errors=MARK_ERRORS, newline=newline)
    except OSError as exc:
        raise UserError(f"cannot read {clean(path)}: {exc.strerror or exc}") from None


def undecodable(name: str, line: int, encoding: str) -> UserError:
    return UserError(f"{name}: line {line} is not valid {encoding} text (pass the right --encoding)")
