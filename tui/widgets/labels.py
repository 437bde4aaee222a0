"""Updating a label without repainting, or laying out, more of the screen than changed.

Textual lays the whole screen out again after ``Static.update`` unless told the size cannot
change. The dashboard's labels change 4 times a second while an engine runs, and with the
engine in this app's worker thread every layout is time the engine does not get (one GIL):
a label is updated only when its text changed, and laid out only when its size can change:
its width follows its text and the text's length changed, or its height does and the text
wraps (or did).
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.text import Text
from textual.content import Content
from textual.visual import VisualType
from textual.widgets import Static, Tab

__all__ = ["FigureTab", "set_text"]

#: What changes in a figure (``12,345``).
_FIGURES = re.compile(r"[0-9,.]")


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


class FigureTab(Tab):
    """A tab whose label holds a figure (``Complete 12,345``). Textual's Tab lays the screen
    out again on every relabel; this one is as wide as the widest label it has shown while
    only its figures change (``In flight 12`` then ``In flight 7`` keeps the width, the label
    centred), so it is laid out again only when a figure grows past that, or its words change
    (a filter named in it, or cleared)."""

    def __init__(self, label: str, *, id: str | None = None) -> None:
        self._shape = ""
        self._widest = 0
        super().__init__(label, id=id)

    def cells_for(self, label: str) -> int:
        """The cells this tab takes with ``label``, its padding included: as wide as the widest
        label of the same words it has shown."""
        n = cell_len(label)
        if _FIGURES.sub("", label) == self._shape:
            n = max(n, self._widest)
        return n + 2

    # Textual's Tab.update already drops Static.update's ``layout``; this keeps Tab's signature.
    def update(self, content: VisualType = "") -> None:  # type: ignore[override]
        if not isinstance(content, Content):
            super().update(content)
            return
        shape = _FIGURES.sub("", content.plain)
        if shape != self._shape or content.cell_length > self._widest:
            self._shape, self._widest = shape, content.cell_length
            self.styles.min_width = self._widest + 2  # Tab's padding: a cell each side
            super().update(content)
            return
        old = self.content
        if not isinstance(old, Content) or old.plain != content.plain or old.spans != content.spans:
            self.post_message(self.Relabelled(self))
            Static.update(self, content, layout=False)
