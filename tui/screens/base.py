"""What every screen that runs thread workers shares: their errors go to the app's one handler.

``Worker.StateChanged`` does not bubble: it reaches the node that ran the worker only. A screen
passes a failed worker to :meth:`Host.handle_worker_error` (the app notifies it), so an error
in a screen's worker never closes the app nor is written three different ways.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.binding import ActiveBinding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from batchtui.engine.fmt import clean

from ..host import host
from ..widgets.footer import KeyFooter

__all__ = ["WorkerScreen"]


class WorkerScreen(Screen[None]):
    """A screen whose thread workers run with ``exit_on_error=False``, and whose footer shows
    its keys in the order that matters."""

    #: Binding ids the footer shows first, in this order; the others follow in Textual's order
    #: (focused widget, screen, app). The footer shows what fits whole (widgets/footer.py),
    #: so ``?`` and ``q`` come first on every screen: visible at 80 columns.
    FOOTER_FIRST: ClassVar[tuple[str, ...]] = ("help", "quit")

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """Textual's active bindings, those of FOOTER_FIRST first, without those the footer
        leaves out now (only what is shown changes: the footer and the keys panel read it; keys
        are dispatched through the binding chain)."""
        hidden = self.footer_hidden()
        bindings = {k: b for k, b in super().active_bindings.items() if b.binding.id not in hidden}
        rank = {binding_id: i for i, binding_id in enumerate(self.footer_first())}
        first = sorted(
            (key for key, active in bindings.items() if active.binding.id in rank),
            key=lambda key: rank[bindings[key].binding.id or ""],
        )
        return {key: bindings[key] for key in [*first, *(k for k in bindings if k not in first)]}

    def on_screen_suspend(self) -> None:
        """A screen is on top of this one (a dialog shows this one under it): the footer's keys
        are not this screen's to answer then. Hidden, its row kept (nothing moves), until this
        screen is back on top."""
        for footer in self.query(KeyFooter):
            footer.visible = False

    def on_screen_resume(self) -> None:
        for footer in self.query(KeyFooter):
            footer.visible = True

    def footer_first(self) -> tuple[str, ...]:
        """The binding ids the footer shows first now (a screen may order by its state)."""
        return self.FOOTER_FIRST

    def footer_hidden(self) -> frozenset[str]:
        """Binding ids the footer leaves out now: keys that do nothing in the screen's state and
        answer with a toast that says why."""
        return frozenset()

    #: Actions that change the batch (or another): refused when the app is read-only.
    STEERING: ClassVar[frozenset[str]] = frozenset()
    #: Actions that run a program on the app's own terminal: refused when the app is served to a
    #: browser (a pager there would run on the server, and less's ``!`` runs a shell).
    LOCAL_ONLY: ClassVar[frozenset[str]] = frozenset()

    def refusal(self, action: str) -> str | None:
        """Why the app's mode refuses ``action`` whatever the batch's state, or None."""
        app = host(self)
        if app.read_only and action in self.STEERING:
            return "read-only: `batchtui serve` was started without --allow-control"
        if app.served and action in self.LOCAL_ONLY:
            return "not in a browser: it would run on the server's terminal"
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hidden when the app's mode refuses the action (a key then does nothing), else what
        :meth:`may` says of it now."""
        if self.refusal(action) is not None:
            return False
        return self.may(action, parameters)

    def may(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``check_action`` for the screen's state: True runs, None greys, False hides."""
        return True

    def palette_offers(self, action: str) -> bool:
        """Whether the command palette offers ``action`` now. ``check_action`` says whether its
        key works: a key may answer why it does nothing (e.g. an engine runs: nothing to resume)
        where the palette had better not offer it."""
        return True

    def unavailable(self, action: str) -> str | None:
        """Why ``action`` (its name, without parameters) cannot apply now, or None when it can:
        the command palette lists it greyed with this. A screen says more where it knows more."""
        refused = self.refusal(action)
        if refused is not None:
            return refused
        if self.check_action(action, ()) is not True or not self.palette_offers(action):
            return "not available now"
        return None

    def action_why_not(self, action: str, title: str) -> None:
        """A key whose ``action`` is greyed out now was pressed: say why (see keys.explained)."""
        why = self.unavailable(action)
        if why is not None:
            self.notify(clean(f"{title}: {why}"), severity="warning", timeout=6)

    @on(Worker.StateChanged)
    def _worker_ended(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            host(self).handle_worker_error(event.worker)
