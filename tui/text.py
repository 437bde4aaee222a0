"""Untrusted text (item keys, data, error messages, logs) as Rich Text a widget can show.

Item content must never render as markup nor reach the terminal as control sequences: a file
named ``[bold]x`` or ``\\x1b[2J`` shows literally. Everything item-derived goes through
:func:`batchtui.engine.fmt.clean` (the one sanitizer) and, for a widget that parses markup
(Static, DataTable), into a ``Text``; a plain ``str`` is never handed to such a widget.
"""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from batchtui.engine.fmt import clean, clean_block

__all__ = ["cap_middle", "cut_middle", "plain", "plain_block"]


def plain(text: object, style: str = "", limit: int | None = None) -> Text:
    """One line of untrusted text as a Rich Text that is never parsed as markup."""
    return Text(clean(text, limit), style=style, no_wrap=True, overflow="ellipsis")


def plain_block(text: str, style: str = "") -> Text:
    """Multi-line untrusted text (logs, tracebacks) as a Rich Text, never markup."""
    return Text(clean_block(text), style=style)


def cap_middle(text: str, limit: int) -> str:
    """``text`` as one clean line (:func:`clean`) of at most ``limit`` of its characters: its
    start and its end, an ellipsis between. What a view keeps of a key before it cuts it to a
    width with :func:`cut_middle`: a cap that kept the start alone would lose the end that
    tells keys apart (two 2,000-character keys would read alike, ``AAAA…AAAA…``)."""
    if len(text) <= limit:
        return clean(text)
    half = limit // 2
    return clean(text[:half]) + "…" + clean(text[len(text) - (limit - half - 1) :])


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` terminal cells, cut in the middle with an ellipsis.

    Keys and paths differ at their end (``.../documents/0001`` vs ``.../documents/0002``) as
    often as at their start, so both ends are kept: the end gets the larger half. Wide (CJK)
    characters count two cells and are never split. ``text`` is already clean (one line).
    """
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    if width == 1:
        return "…"
    room = width - 1
    head_cells = room // 2
    # set_cell_size pads with a space where a wide character would be split: strip it, and
    # give the cell to the tail.
    head = set_cell_size(text, head_cells).rstrip(" ") if head_cells else ""
    tail_cells = room - cell_len(head)
    tail, used = "", 0
    for ch in reversed(text):
        w = cell_len(ch)
        if used + w > tail_cells:
            break
        tail, used = ch + tail, used + w
    return head + "…" + tail
