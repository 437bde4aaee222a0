"""Terminals without UTF-8: what is drawn with box, block and mark characters falls back to ASCII.

Python cannot tell us: under ``LANG=C`` it coerces the locale to C.UTF-8 (PEP 538, which also
sets ``LC_CTYPE=C.UTF-8`` in our own environment) and stdout says utf-8 (PEP 540). So the
terminal's promise is read from the locale variables the user set, as POSIX ranks them
(``LC_ALL``, then ``LC_CTYPE``, then ``LANG``), the coercion's own ``LC_CTYPE=C.UTF-8`` aside;
``BATCHTUI_ASCII=1`` or ``0`` decides outright. A locale that is set and does not name UTF-8
(``C``, ``POSIX``, ``en_US.ISO-8859-1``) means ASCII; none set at all is taken as UTF-8 (what
terminals are today).

In ASCII mode the app's charts draw with an ASCII ramp, and every frame the app writes to the
terminal goes through :func:`to_ascii` (the app's driver class is :func:`ascii_driver` of
Textual's), so Textual's own borders, tabs and scrollbars follow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from rich.cells import cell_len
from textual.driver import Driver

__all__ = ["ASCII_BARS", "ASCII_CLASS", "UNICODE_BARS", "ascii_driver", "ascii_terminal", "to_ascii"]

#: The app's CSS class in ASCII mode (what a widget that draws asks).
ASCII_CLASS: Final = "-ascii"

#: A chart column's partial fill, 0 (empty) to 8 (full), in each mode.
UNICODE_BARS: Final = " ▁▂▃▄▅▆▇█"
ASCII_BARS: Final = " __.--=*#"

#: What Python's locale coercion puts in LC_CTYPE; the user's own setting it is not.
_COERCED: Final = {"C.UTF-8", "C.utf8"}


def ascii_terminal(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the terminal should get ASCII only (see the module docstring)."""
    env = os.environ if environ is None else environ
    forced = env.get("BATCHTUI_ASCII", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = env.get(name, "").strip()
        if not value or (name == "LC_CTYPE" and value in _COERCED):
            continue
        norm = value.lower().replace("-", "").replace("_", "")
        return "utf8" not in norm
    return False


def _table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(0x2500, 0x2580):  # box drawing
        name_char = chr(code)
        if name_char in "─━┄┅┈┉╌╍═╴╶╸╺╼╾":
            table[code] = "-"
        elif name_char in "│┃┆┇┊┋╎╏║╵╷╹╻╽╿":
            table[code] = "|"
        else:
            table[code] = "+"  # corners, tees, crosses, rounded corners
    for i, ch in enumerate(UNICODE_BARS):
        table[ord(ch)] = ASCII_BARS[i]
    extra = {
        "▀": "-", "▔": "-", "▐": "|", "▌": "|", "▏": "|", "▎": "|", "▍": "|", "▋": "|", "▊": "|", "▉": "#",
        "░": ":", "▒": "%", "▓": "#", "■": "#", "□": "o", "▪": "#", "▫": "o",
        "●": "*", "○": "o", "◉": "*", "◆": "*", "◇": "o", "•": "*", "∙": ".", "·": ".", "✓": "v",
        "✔": "v", "✗": "x", "✘": "x", "×": "x", "…": "~", "⋯": "~", "–": "-", "—": "-",
        "‘": "'", "’": "'", "“": '"', "”": '"', "«": "<", "»": ">",
        "←": "<", "→": ">", "↑": "^", "↓": "v", "▲": "^", "▼": "v", "▶": ">", "◀": "<",
        "▸": ">", "◂": "<", "▴": "^", "▾": "v", "⏸": "=", "⏵": ">", "\u00a0": " ",
    }  # fmt: skip
    for ch, ascii_ch in extra.items():
        table[ord(ch)] = ascii_ch
    return table


_TABLE: Final = _table()


def to_ascii(text: str) -> str:
    """``text`` with every non-ASCII character replaced: drawing characters by their nearest
    ASCII look, anything else (an item key's letters a non-UTF-8 terminal cannot show) by a
    ``?`` a cell."""
    if text.isascii():
        return text
    out = text.translate(_TABLE)
    if out.isascii():
        return out
    # A wide character (CJK) takes two cells, a combining one none: the layout stays as drawn.
    return "".join(ch if ch.isascii() else "?" * cell_len(ch) for ch in out)


def ascii_driver(base: type[Driver]) -> type[Driver]:
    """``base`` (the terminal driver Textual chose) writing every frame through :func:`to_ascii`."""

    # A base class only known at run time: mypy takes no variable as a base (valid-type, misc).
    class AsciiDriver(base):  # type: ignore[valid-type,misc]
        def write(self, data: str) -> None:
            super().write(to_ascii(data))

    AsciiDriver.__name__ = AsciiDriver.__qualname__ = f"Ascii{base.__name__}"
    return AsciiDriver
