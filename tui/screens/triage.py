"""The dashboard's triage: acting on items (and on the batch) through the control client.

A retry, skip or run-first of the marked items (or the one under the cursor, or an error
group) first asks: the confirm dialog says how many items of which status change and how, with
a few of their keys. A ``y`` sends the command off the UI thread (``client.send`` waits for the
engine's ack or changes the store offline under the lock) and the outcome goes to the event log.

:class:`Triage` is a plain object the :class:`~.dashboard.DashboardScreen` owns (one per screen):
the screen keeps its keys and routes them here, so this module holds what to send and how to
say it, and the screen what is shown where.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from textual.worker import get_current_worker

from batchtui.engine.client import Applied, NotAcknowledged, Outcome, Sent, invalid_note, send
from batchtui.engine.errors import BatchtuiError
from batchtui.engine.fmt import clean, count
from batchtui.engine.models import ControlOp
from batchtui.engine.store.queries import ACTION_STATUSES, ItemFilter, ItemQueries, Selection, StoreError

from ..text import cut_middle
from ..watch import BatchWatcher
from ..widgets.event_log import EventLog
from ..widgets.items_marks import PIN_LIMIT
from ..widgets.items_table import ItemsTable
from .modals import ConfirmScreen

if TYPE_CHECKING:
    from .dashboard import DashboardScreen

#: Each bulk action's verb and what becomes of the items it changes (those in its
#: ACTION_STATUSES): what the confirm dialog announces; the engine's answer says what it did.
BULK: Final[dict[str, tuple[str, str, str]]] = {
    "retry": ("Retry", "goes back to pending", "go back to pending"),
    "skip": ("Skip", "is skipped (killed if it runs)", "are skipped (running ones killed)"),
    "prioritize": (
        "Run first",
        "moves to the front of the queue",
        "move to the front of the queue (failed ones retried)",
    ),
}
_STATUS_WORD: Final = {
    "pending": "pending",
    # Handed out: running, queued behind the workers or waiting out a retry's backoff (the
    # store does not tell them apart; "running" counted the backoff's items as running).
    "processing": "in flight",
    "complete": "complete",
    "failed": "failed",
    "skipped": "skipped",
}


class Triage:
    """The bulk actions of one dashboard: confirm, send, report (see the module's docstring)."""

    def __init__(self, screen: DashboardScreen) -> None:
        self.screen = screen
        self._indexed = False  # the store has the index slowest first is read from
        self._asked: set[str] = set()  # the engines (their lock's token) asked to build it

    def ask_for_index(self, order: str) -> None:
        """The items shown in ``order``: slowest first on a batch an engine runs, from a store
        without the index that order is read from (without it each page sorts the whole view,
        engine/store/slowest.py), asks that engine to build it, once. The engine builds it beside
        the run (1-2 s for 1M items) and keeps it: each completion after writes to it too, so it
        is built only for a batch someone looks at slowest first."""
        screen, holder = self.screen, self.screen.engine.holder
        if order != "duration" or self._indexed or holder is None or not screen.engine_live:
            return
        if screen.host.read_only or holder.token() in self._asked:
            return
        try:
            with ItemQueries(screen.bdir.items_db) as store:
                self._indexed = store.has_slowest_index()
        except StoreError:
            return  # the table says why it cannot read the store
        if not self._indexed:
            self._asked.add(holder.token())
            self.steer("index", "index the items slowest first", value="duration")

    def bulk(self, op: ControlOp) -> None:
        """Retry, skip or run first the marked items, or the item under the cursor when none is
        marked; asks first (the count and a few keys), ``y`` sends it."""
        table = self.screen.query_one(ItemsTable)
        marked = not table.selection.is_empty
        if marked:
            selection, what = table.selection, "marked items"
        else:
            seq = table.selected_seq
            if seq is None:
                self.screen.notify("no item under the cursor", severity="warning")
                return
            selection, what = Selection().mark(seq), f"#{seq}"
        self.confirm(op, selection, what, clear_marks=marked)

    def retry_group(self, chosen: tuple[str, str] | None) -> None:
        """Retry every failed item of the error group ``chosen`` (its id and label)."""
        if chosen is None:
            self.screen.notify("no error group: nothing has failed", severity="warning")
            return
        group_id, label = chosen
        selection = Selection.of(ItemFilter(status="failed", error_group=group_id))
        self.confirm("retry", selection, f"group {group_id}, {cut_middle(clean(label), 40)}", clear_marks=False)

    def confirm(self, op: ControlOp, selection: Selection, what: str, *, clear_marks: bool) -> None:
        """Ask whether to apply ``op`` to ``selection`` (``what`` names it), saying what changes;
        nothing is asked when nothing would change (a warning says what the items are)."""
        screen = self.screen
        statuses, (verb, one, many) = ACTION_STATUSES[op], BULK[op]
        pinned: list[int] | None = None
        try:
            with ItemQueries(screen.bdir.items_db) as store, store.snapshot():
                counts = store.selected_counts(selection)
                left = store.unretriable_types(selection) if op != "skip" else {}  # a retry leaves them failed
                samples = store.sample_selected(selection, 5, statuses, retriable=op != "skip")
                pinned = store.selected_seqs(selection, statuses, retriable=op != "skip", limit=PIN_LIMIT)
        except StoreError as exc:
            screen.notify(clean(f"items.db: {exc}"), severity="error")
            return
        invalid = sum(left.values())
        n = sum(getattr(counts, st) for st in statuses) - invalid
        if pinned is not None:
            # Up to PIN_LIMIT items, the command carries the items counted here, as seq ranges
            # (well under control.jsonl's line limit): "Retry 21 items?" retries those 21, not the
            # failed items among the marks (or the view) when the engine takes the command in.
            n, selection = len(pinned), Selection.of_seqs(pinned)  # one read: the counts' items
        by_status = ", ".join(f"{getattr(counts, st):,} {_STATUS_WORD[st]}" for st in statuses if getattr(counts, st))
        others = counts.total - n
        of = f" of {counts.total:,} {what}" if what == "marked items" else f" ({what})"
        if invalid:  # the counts by status hold them: say what changes plainly
            by_status = f"{n:,} of them"
        if n == 0:
            has = ", ".join(f"{getattr(counts, st):,} {_STATUS_WORD[st]}" for st in _STATUS_WORD if getattr(counts, st))
            has += invalid_note(left)
            screen.notify(clean(f"{verb}: nothing to change{of}: {has or 'no items'}"), severity="warning", timeout=8)
            return
        question = f"{verb} {count(n, 'item', grouped=True)}?"
        detail = f"{by_status}{of} {one if n == 1 else many}{invalid_note(left)}."
        if others:
            detail += f" The other {others:,} stay as they are."
        # A view too big to pin (``a``, an error group) is applied as it stands when the engine
        # takes the command in, not as counted here: items that join it meanwhile are in it too.
        live = bool(selection.views)
        if live:
            detail += (
                f" Over {PIN_LIMIT:,} items: the view is applied as it stands then,"
                " items that join it before are included."
            )

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            items = what if live else count(n, "item", grouped=True)  # the engine's answer counts them
            self.steer(op, f"{verb.lower()} {items}" + ("" if clear_marks or live else f" ({what})"), select=selection)
            if clear_marks:
                screen.query_one(ItemsTable).clear_marks()

        screen.app.push_screen(ConfirmScreen(question, detail, samples=samples, total=n), confirmed)

    def steer(
        self,
        op: ControlOp,
        what: str,
        *,
        seqs: Sequence[int] | None = None,
        filter: dict[str, Any] | None = None,
        select: Selection | None = None,
        value: Any = None,
    ) -> None:
        """Send ``op`` through the control client, off the UI thread; its ack is awaited by the
        event log (an engine holds the batch), or the store is changed offline (none does)."""
        args = (op, what, seqs, filter, select, value, self.screen.host.clock)
        self.screen.run_worker(
            partial(self._send, *args),
            name="sending a command",
            group="control",
            exclusive=False,
            exit_on_error=False,
            thread=True,
        )

    def _send(
        self,
        op: ControlOp,
        what: str,
        seqs: Sequence[int] | None,
        filter: dict[str, Any] | None,
        select: Selection | None,
        value: Any,
        clock: Callable[[], float],
    ) -> None:
        """Runs in a worker thread: ``client.send`` may wait for the engine's ack."""
        screen = self.screen
        if screen.host.read_only:  # the keys are refused already; nothing else may send either
            screen.app.call_from_thread(screen.notify, f"{what}: read-only", severity="warning")
            return
        worker = get_current_worker()
        try:
            outcome = send(
                screen.bdir,
                op,
                seqs=seqs,
                filter=filter,
                select=select,
                value=value,
                wait=None,
                cancelled=lambda: worker.is_cancelled,
                now=clock,
            )
        except BatchtuiError as exc:  # no engine for a pause, the batch taken meanwhile, a damaged file
            screen.app.call_from_thread(screen.notify, clean(f"{what} failed: {exc}"), severity="error")
            return
        screen.app.call_from_thread(self._sent, what, outcome)

    def _sent(self, what: str, outcome: Outcome) -> None:
        screen = self.screen
        log = screen.query_one(EventLog)
        if isinstance(outcome, Sent):
            log.sent(outcome, what)
        elif isinstance(outcome, NotAcknowledged):
            text = outcome.describe(what, brief=True)
            log.write_event(text)
            screen.notify(clean(text), severity="warning", timeout=6)
        elif isinstance(outcome, Applied):
            log.write_event(f"{what}: {outcome.message}")
            if outcome.took_effect:
                screen.notify(clean(f"{what}: {outcome.message}"), timeout=3)
            else:  # answered, but it did nothing (queued for an engine that is gone)
                screen.notify(clean(f"{what}: {outcome.message}"), severity="warning", timeout=6)
            if not outcome.engine:  # changed offline: show it now
                (screen.watcher or BatchWatcher(screen.bdir.path, screen.post_message)).read_all(force=True)
