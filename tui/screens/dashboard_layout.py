"""The dashboard's layout by terminal size, in one place: each class applies when its test holds,
and app.tcss says what collapses under it. The title, the status line, the tabs and the footer
stay at every size; the items table gets the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from textual.dom import DOMNode
from textual.geometry import Size

TINY_BELOW: Final = 18  # rows: under them the errors and the events leave the status line its place
LAYOUT: Final[dict[str, Callable[[Size], bool]]] = {
    "short": lambda size: size.height < 30,  # charts and counts row gone, 3 error groups, 2 events
    "low": lambda size: size.height < 40,  # charts gone, 5 error groups, 3 events
    "narrow": lambda size: size.width < 100,  # in flight gone (the status line counts it), errors full width
    "tiny": lambda size: size.height < TINY_BELOW,  # a small pane: errors and events gone
}


def set_layout_classes(node: DOMNode, size: Size) -> bool:
    """Give ``node`` the LAYOUT classes of ``size``, without restyling (each class set on its
    own would restyle every widget): whether any changed."""
    changed = False
    for name, applies in LAYOUT.items():
        wanted = applies(size)
        if wanted != node.has_class(name):
            node.set_class(wanted, name, update=False)
            changed = True
    return changed
