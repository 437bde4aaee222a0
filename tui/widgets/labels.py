"""Updating a label without repainting, or laying out, more of the screen than changed.

Textual lays the whole screen out again after ``Static.update`` unless told the size cannot
change. The dashboard's labels change 4 times a second while an engine runs, and with the
engine in this app's worker thread every layout is time the engine does not get (one GIL):
a label is updated only when its text changed, and laid out only when its size can change:
its width follows its text and the text's length changed, or its height does and the text
wraps (or did).
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
    old_len, new_len = cell_len(old.plain) if isinstance(old, Text) else -1, cell_len(text.plain)
    width, height = label.styles.width, label.styles.height
    if width is not None and width.is_auto:
        layout = old_len != new_len  # as wide as its text
    elif height is None or height.is_auto:
        # As high as its text: one line as long as neither the old text nor the new one wraps.
        layout = "\n" in text.plain or old_len < 0 or max(old_len, new_len) > label.content_size.width
    else:
        layout = False  # a fixed size
    label.update(text, layout=layout)
    return True
