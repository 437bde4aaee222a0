"""Numbers as a user writes them: ASCII digits only, everywhere a number is read.

Python's ``int()`` and ``float()`` take the digits of any script (``int('٣')`` is 3,
``float('１.５')`` is 1.5), and so did the flags and the text settings parsed with them
(``-j ٣``, ``--rate ٣/s``, ``--seq ٣``), while the same setting from a config file or the
environment, read by pydantic, was refused. One rule now: a number is written in ASCII. It
imports nothing: every verb loads it.
"""

from __future__ import annotations

__all__ = ["ascii_number", "to_float", "to_int"]


def ascii_number(text: str) -> str:
    """``text``, if it is written in ASCII; else ValueError saying a number is 0-9."""
    if not text.isascii():
        raise ValueError(f"{text.strip()!r} is not a number written with the digits 0-9")
    return text


def to_float(text: str) -> float:
    """``float(text)`` of a number written in ASCII (ValueError otherwise)."""
    return float(ascii_number(text))


def to_int(text: str) -> int:
    """``int(text)`` of a number written in ASCII (ValueError otherwise)."""
    return int(ascii_number(text))
