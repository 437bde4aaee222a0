"""The footer of every screen: the keys that fit, whole, in the order that matters.

Textual's Footer shows the active bindings in the order of the focus chain (the focused
widget's first, the app's last) and lets what does not fit run off the right edge, cut
mid-word (``s Sk``), so at 80 columns ``? Help`` and ``q Quit`` were never seen. Screens order
the bindings (:attr:`WorkerScreen.FOOTER_FIRST`); this footer keeps Textual's look and
compaction and leaves out the keys that do not fit whole. Every key stays in ``?`` and the
command palette.

Textual's Footer composes its keys again on every ``refresh_bindings`` of the screen, needed or
not; a recompose mounts new widgets and lays the screen out again, time an engine in this app's
worker thread does not get (one GIL). This one composes again only when what it shows changed:
the keys, their descriptions, tooltips and whether they apply, its width.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, ClassVar

from rich.cells import cell_len
from textual import events
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

__all__ = ["KeyFooter", "key_width"]


def _words(widget: Widget) -> tuple[str, str] | None:
    """(key, description) of a key of the footer; None for anything else (a group's label).
    Textual's FooterKey is not public: a key is told by what it shows."""
    key, description = getattr(widget, "key_display", None), getattr(widget, "description", None)
    return (key, description) if isinstance(key, str) and isinstance(description, str) else None


def key_width(key: tuple[str, str], *, compact: bool) -> int:
    """Cells a key (its display and description) takes in the footer, as Textual's FooterKey
    CSS lays it out: compact, the key, a space, the description and a margin; else the key
    padded by one on each side and the description followed by one space."""
    words = cell_len(key[0]) + cell_len(key[1])
    return words + 2 if compact else words + 3


class KeyFooter(Footer):
    """A Footer that shows only the keys that fit whole (in order, skipping one that does not
    fit for a shorter one after it), compact below COMPACT_BELOW columns."""

    COMPACT_BELOW: ClassVar[int] = 120

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._width = 0
        #: What the footer shows (see :meth:`shown`): as last composed, and as asked for since.
        self._composed: Hashable = None
        self._wanted: Hashable = None
        #: How many times the keys were composed (a test counts them).
        self.compositions = 0
        #: A composition is asked for and not done yet: an opening screen changes its bindings
        #: several times in a row (mounted, focused, its data in), one composition shows them.
        self._recompose_due = False

    def shown(self, screen: Screen[Any]) -> Hashable:
        """What the footer would show on ``screen`` now: its width, and each key shown with its
        display, description, tooltip and whether it applies (the command palette's too)."""
        keys = tuple(
            (key, self.app.get_key_display(binding), binding.description, binding.action, enabled, tooltip)
            for key, (_node, binding, enabled, tooltip) in screen.active_bindings.items()
            if binding.show or key == self.app.COMMAND_PALETTE_BINDING
        )
        return self.size.width or self.app.size.width, self.compact, keys

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if screen is self.screen and self._composed is not None and self.app.app_focus:
            wanted = self.shown(screen)
            if wanted == self._wanted:
                return  # shown already, or on its way
            self._wanted = wanted
        elif self._recompose_due and screen is self.screen:
            return  # the composition on its way reads the bindings as they are then
        super().bindings_changed(screen)
        self._recompose_due = screen is self.screen and self.is_attached and self.app.app_focus

    def compose(self) -> Iterable[Widget]:
        self._recompose_due = False
        width = self.size.width or self.app.size.width
        keys: list[Widget] = list(super().compose())
        if keys:
            self.compositions += 1
            self._composed = self._wanted = self.shown(self.screen)
        palette = [k for k in keys if k.has_class("-command-palette")]
        # The palette key is docked right: its text, its border and its padding.
        room = width - sum(key_width(words, compact=False) + 2 for k in palette if (words := _words(k)))
        for widget in keys:
            words = _words(widget)
            if words is not None and widget not in palette:
                need = key_width(words, compact=self.compact)
                if need > room:
                    continue
                room -= need
            yield widget

    def on_resize(self, event: events.Resize) -> None:
        compact = event.size.width < self.COMPACT_BELOW
        if compact != self.compact:
            self.compact = compact
        if event.size.width != self._width:
            self._width = event.size.width
            if self._composed is not None:
                self.bindings_changed(self.screen)
