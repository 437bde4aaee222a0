"""Untrusted text (item keys, data, error messages, logs) as Rich Text a widget can show.

Item content must never render as markup nor reach the terminal as control sequences: a file
named ``[bold]x`` or ``\\x1b[2J`` shows literally. Everything item-derived goes through
:func:`batchtui.engine.fmt.clean` (the one sanitizer) and, for a widget that parses markup
(Static, DataTable), into a ``Text``; a plain ``str`` is never handed to such a widget.
"""

from __future__ import annotations

from rich.text import Text

from batchtui.engine.fmt import clean, clean_block

__all__ = ["plain", "plain_block"]


def plain(text: object, style: str = "", limit: int | None = None) -> Text:
    """One line of untrusted text as a Rich Text that is never parsed as markup."""
    return Text(clean(text, limit), style=style, no_wrap=True, overflow="ellipsis")


def plain_block(text: str, style: str = "") -> Text:
    """Multi-line untrusted text (logs, tracebacks) as a Rich Text, never markup."""
    return Text(clean_block(text), style=style)
