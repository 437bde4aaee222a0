"""JSON integers orjson cannot keep: beyond 64 bits it reads them as floats, silently.

``{"id": 123456789012345678901234567890}`` came back as ``1.2345678901234568e+29``: two such ids
were one key, and a result lost its digits. Readers of untrusted JSON (source records, a
command's result line) ask :func:`inexact_integer` and refuse such a line with its reason.
"""

from __future__ import annotations

import json
import re
from typing import Final

#: A run of digits long enough to be such an integer: the cheap test before the exact one, so an
#: ordinary line is parsed once.
_LONG_DIGITS: Final = re.compile(r"[0-9]{19}")

_LONG_DIGITS_BYTES: Final = re.compile(rb"[0-9]{19}")

#: The integers orjson reads as integers (it takes unsigned 64-bit ones too).
_INT_RANGE: Final = range(-(1 << 63), 1 << 64)


def inexact_integer(text: str | bytes) -> str | None:
    """The first integer of the valid JSON ``text`` that orjson would read as a float, shown for
    a message (a very long one cut in the middle); None when there is none."""
    long_digits = _LONG_DIGITS_BYTES.search(text) if isinstance(text, bytes) else _LONG_DIGITS.search(text)
    if long_digits is None:
        return None
    found: list[str] = []

    def parse_int(digits: str) -> int:
        if not found and int(digits) not in _INT_RANGE:
            found.append(digits)
        return 0

    try:
        json.loads(text, parse_int=parse_int)
    except (ValueError, RecursionError):
        return None  # not what orjson read: nothing to say here
    if not found:
        return None
    big = found[0]
    return big if len(big) <= 40 else f"{big[:20]}...{big[-8:]} ({len(big)} digits)"


__all__ = ["inexact_integer"]
