"""Updating a label without repainting, or laying out, more of the screen than changed.

Textual lays the whole screen out again after ``Static.update`` unless told the size cannot
change. The dashboard's labels change 4 times a second while an engine runs, and with the
engine in this app's worker thread every layout is time the engine does not get (one GIL):
a label is updated only when its text changed, and laid out only when its size can change
(its width or height follows its content, and the text's length changed).
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

__all__ = ["set_text"]


def _same(old: object, new: Text) -> bool:
    return isinstance(old, Text) and old.plain == new.plain and old.spans == new.spans and old.style == new.style


def set_text(label: Static, text: Text) -> bool:
    """Show ``text`` in ``label`` (see the module docstring); True if it changed."""
    old = label.content
    if _same(old, text):
        return False
    styles = label.styles
    sized_by_content = any(s is None or s.is_auto for s in (styles.width, styles.height))
    old_len = cell_len(old.plain) if isinstance(old, Text) else -1
    label.update(text, layout=sized_by_content and (old_len != cell_len(text.plain) or "\n" in text.plain))
    return True
