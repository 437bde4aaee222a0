"""The app's base class: every notification is plain text.

Textual renders a notification's message as content markup unless told otherwise, and ours
carry item content, error messages and paths: a ``[`` in them would style a toast, or make it a
link that runs an action (``[@click=app.quit]``). Screens' and widgets' ``notify`` go through the
app's, so the one override here covers every call.

Textual's own notifications are written as markup (ctrl+c's "Press [b]q[/b] to quit the app",
the screenshot's saved path): shown as plain text they printed their tags. The two are made
here instead: the ctrl+c hint with its key in bold (the one piece of markup, its text escaped),
the screenshot's path as plain text (a path is anybody's text).
"""

from __future__ import annotations

from typing import TypeVar

from textual import events, on
from textual.app import App
from textual.markup import escape
from textual.notifications import SeverityLevel

__all__ = ["PlainApp"]

ReturnType = TypeVar("ReturnType")


class PlainApp(App[ReturnType]):
    """An App whose notifications never read markup, whatever the caller passes."""

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def action_help_quit(self) -> None:
        """ctrl+c: say which key quits (Textual's hint, its markup made here)."""
        for key, active in self.active_bindings.items():
            if active.binding.action in ("quit", "app.quit"):
                shown = escape(self.get_key_display(active.binding) or key)
                super().notify(f"Press [b]{shown}[/b] to quit the app", title="Do you want to quit?", markup=True)
                return

    @on(events.DeliveryComplete)
    def _screenshot_saved(self, event: events.DeliveryComplete) -> None:
        """Textual's "Saved screenshot to [$text-success]'path'", as plain text."""
        if event.name == "screenshot":
            event.prevent_default()  # not App's toast, whose markup would print as tags here
            saved = "Saved screenshot" if event.path is None else f"Saved screenshot to {str(event.path)!r}"
            self.notify(saved, title="Screenshot")
