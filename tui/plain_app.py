"""The app's base class: every notification is plain text.

Textual renders a notification's message as content markup unless told otherwise, and ours
carry item content, error messages and paths: a ``[`` in them would style a toast, or make it a
link that runs an action (``[@click=app.quit]``). Screens' and widgets' ``notify`` go through the
app's, so the one override here covers every call.
"""

from __future__ import annotations

from typing import TypeVar

from textual.app import App
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
