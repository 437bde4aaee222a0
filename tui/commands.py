"""The command palette (ctrl+p): every action of the screen once, with its key.

An action that cannot apply now is listed greyed, with why (the screen's
:meth:`~batchtui.tui.screens.base.WorkerScreen.unavailable`); choosing it says why rather
than doing nothing. Textual's own commands that ours cover (Quit, Keys) are left out, so
nothing is listed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.screen import Screen

from .keys import key_entries
from .screens.base import WorkerScreen

if TYPE_CHECKING:
    from .app import BatchtuiApp

__all__ = ["ActionsProvider", "PaletteEntry", "palette_entries"]

#: Textual's system commands that an entry of ours already is.
_COVERED = {"Quit", "Keys"}


@dataclass(frozen=True)
class PaletteEntry:
    """One line of the palette."""

    title: str
    key: str
    help: str
    run: Callable[[], object]
    #: Why it cannot apply now; None when it can.
    why_not: str | None = None

    def prompt(self, title: Content | None = None) -> Content:
        """The title (``title``: as the search highlighted it), dim when it cannot apply now,
        then the key."""
        shown = Content(self.title) if title is None else title
        if self.why_not:
            shown = shown.stylize("dim")
        return shown.append_text(f"  {self.key}", "dim bold") if self.key else shown

    def help_text(self) -> str:
        return f"not now: {self.why_not}" if self.why_not else self.help


def palette_entries(app: BatchtuiApp, screen: Screen[Any]) -> list[PaletteEntry]:
    """The screen's and the app's actions (each once, the keys of each), then the app's
    commands that have no key."""
    out: list[PaletteEntry] = []
    seen: set[str] = set()
    for entry in key_entries(screen):
        if entry.node is not screen and entry.node is not app:
            continue  # a focused widget's keys (cursor moves) are no commands
        if entry.title in seen or not entry.description:
            continue
        seen.add(entry.title)
        why = screen.unavailable(entry.action_name) if isinstance(screen, WorkerScreen) else None
        if why is None and not entry.enabled:
            why = "not available now"
        namespace = entry.node

        def run(
            action: str = entry.action, node: Any = namespace, title: str = entry.title, why: str | None = why
        ) -> None:
            if why is not None:
                app.notify(f"{title}: {why}", severity="warning", timeout=4)
            else:
                app.call_next(app.run_action, action, node)

        out.append(PaletteEntry(entry.title, entry.key_text, entry.tooltip or entry.title, run, why))
    for command in app.extra_commands(screen):
        if command.title not in _COVERED and command.title not in {e.title for e in out}:
            out.append(PaletteEntry(command.title, "", command.help, command.callback))
    return out


class ActionsProvider(Provider):
    """The palette's one provider (see the module docstring)."""

    def _entries(self) -> Iterator[PaletteEntry]:
        from .app import BatchtuiApp

        app = self.app
        if isinstance(app, BatchtuiApp):
            yield from palette_entries(app, self.screen)

    async def discover(self) -> Hits:
        # Those that apply now first, the greyed ones after them.
        for entry in sorted(self._entries(), key=lambda e: e.why_not is not None):
            yield DiscoveryHit(entry.prompt(), entry.run, text=entry.title, help=entry.help_text())

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in self._entries():
            score = max(matcher.match(entry.title), matcher.match(entry.key) * 0.9 if entry.key else 0.0)
            if score > 0:
                if entry.why_not:
                    score *= 0.5  # below the ones that apply
                shown = entry.prompt(matcher.highlight(entry.title))
                yield Hit(score, shown, entry.run, text=entry.title, help=entry.help_text())
