"""What every screen that runs thread workers shares: their errors go to the app's one handler.

``Worker.StateChanged`` does not bubble: it reaches the node that ran the worker only. A screen
passes a failed worker to :meth:`Host.handle_worker_error` (the app notifies it), so an error
in a screen's worker never closes the app nor is written three different ways.
"""

from __future__ import annotations

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from ..host import host

__all__ = ["WorkerScreen"]


class WorkerScreen(Screen[None]):
    """A screen whose thread workers run with ``exit_on_error=False``."""

    def palette_offers(self, action: str) -> bool:
        """Whether the command palette offers ``action`` now. ``check_action`` says whether its
        key works: a key may answer why it does nothing (e.g. an engine runs: nothing to resume)
        where the palette had better not offer it."""
        return True

    @on(Worker.StateChanged)
    def _worker_ended(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            host(self).handle_worker_error(event.worker)
