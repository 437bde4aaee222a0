"""Untrusted text (item keys, data, error messages, logs) made safe for the terminal.

Item content must never render as markup nor reach the terminal as control sequences: a file
named ``[bold]x`` or ``\\x1b[2J`` shows literally. Everything item-derived goes through these
helpers; plain ``str`` is never handed to a widget that parses markup (Static, DataTable).
"""

from __future__ import annotations

from rich.text import Text

from .fmt import clean

__all__ = ["clean", "clean_block", "plain", "plain_block"]


def clean_block(text: str) -> str:
    """Multi-line text (logs, tracebacks): newlines kept, every other control char escaped."""
    return "\n".join(clean(line) for line in text.splitlines())


def plain(text: object, style: str = "", limit: int | None = None) -> Text:
    """A Rich Text that is never parsed as markup."""
    return Text(clean(text, limit), style=style, no_wrap=True, overflow="ellipsis")


def plain_block(text: str, style: str = "") -> Text:
    return Text(clean_block(text), style=style)
