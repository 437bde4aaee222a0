"""The live dashboard of one batch.

Everything shown comes from the batch directory (live_progress.json, manifest.json, items.db read-only):
the same view works for an engine in this app's worker thread, an engine in another process, or a
finished batch. Commands go out through the control client (engine/client.py), like any other client's.

The screen only composes the panels (tui/widgets/), feeds them the live progress, the manifest
and the engine's liveness as reactive data (``data_bind``), and routes keys: what the items
table shows (tab, text filter, error group) to :class:`.item_filters.ItemFilters`, the bulk
actions and every command (confirm, send, report) to :class:`.triage.Triage`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.reactive import var
from textual.timer import Timer
from textual.widgets import Input, Tabs

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.client import ACK_TIMEOUT_S
from batchtui.engine.fmt import clean
from batchtui.engine.liveness import EngineStatus, Liveness, engine_status
from batchtui.engine.models import BatchState, ControlOp, LiveProgress, Manifest
from batchtui.engine.reading import SourceReading

from ..flight import Flight, flights, nothing_runs
from ..host import Host, host
from ..messages import EngineFinished, FileDamaged, LiveUpdated, ManifestUpdated, on_latest
from ..watch import BatchWatcher
from ..widgets.charts import Charts
from ..widgets.counts import CountsRow
from ..widgets.errors_panel import ErrorsPanel
from ..widgets.event_log import EventLog
from ..widgets.footer import KeyFooter
from ..widgets.in_flight import InFlightPanel
from ..widgets.items_table import ItemsTable
from ..widgets.labels import FigureTab
from ..widgets.limits_panel import LimitsPanel
from ..widgets.status import GONE, ProgressLine, TitleBar
from .base import WorkerScreen
from .dashboard_gates import DashboardGates
from .dashboard_keys import DASHBOARD_BINDINGS
from .dashboard_layout import set_layout_classes
from .item_filters import TABS, ItemFilters
from .modals import ConfirmScreen
from .resume_dialog import ResumeDialog, ResumeStarted
from .triage import Triage

_SORT_NAMES = {"seq": "seq", "duration": "slowest first", "tries": "most tries first"}


class DashboardScreen(WorkerScreen):
    """Progress, rate, ETA, counts, memory, errors, in-flight items and the items table."""

    #: The items are what an operator works on: the first focus goes to their table (not to the
    #: errors table, the first focusable widget), so the footer's first keys are the table's
    #: and it is composed once as the screen opens, not twice.
    AUTO_FOCUS: ClassVar[str | None] = "#items"
    STEERING: ClassVar[frozenset[str]] = frozenset({"toggle_pause", "stop", "bulk", "retry_group", "resume_batch"})

    BINDINGS: ClassVar[list[BindingType]] = DASHBOARD_BINDINGS
    ALLOW_IN_MAXIMIZED_VIEW: ClassVar[str | None] = "#top, Footer"  # l: the run stays in sight (app.tcss)

    #: How often the progress of an engine in this app's thread is shown (issue 19, point 6).
    IN_PROCESS_EVERY_S: ClassVar[float] = 0.5
    ACK_TIMEOUT_S: ClassVar[float] = ACK_TIMEOUT_S  # a class attribute, so a test can shorten it
    #: What the footer shows first (what fits, from the left; everything is in ? and ^p).
    #: With an engine running it, pause and stop come after quit; without, resume
    #: (footer_first).
    FOOTER_FIRST: ClassVar[tuple[str, ...]] = (
        "help",
        "quit",
        "items_table.select",
        "retry",
        "skip",
        "filter",
        "items_table.mark",
        "prioritize",
        "retry_type",
        "mark_all",
        "sort",
        "browser",
    )

    #: The data every panel is bound to. Set again on every read of a file, equal or not: an
    #: offline change re-reads the same live_progress.json to refresh the items.
    live: var[LiveProgress | None] = var(None, always_update=True)
    manifest: var[Manifest | None] = var(None, always_update=True)
    engine: var[EngineStatus] = var(GONE)
    #: The batch folder is not there any more (moved or deleted while shown).
    gone: var[bool] = var(False)
    #: This app's engine runs this batch (opened for it, its lock may not be taken yet). False
    #: once it ended, for good: another engine (another app's) may run the batch since.
    here: var[bool] = var(False)
    #: An engine reads the batch's source (or its enqueue was cut short): engine/reading.py.
    reading: var[SourceReading | None] = var(None)

    def __init__(self, batch: Path, *, in_process: bool = False) -> None:
        super().__init__()
        self.bdir = BatchDir(batch)
        self.in_process = in_process
        self.set_reactive(DashboardScreen.here, in_process)
        self._alive_stamp = 0.0
        self._live_stamp = 0.0
        self._live_pending: LiveProgress | None = None
        self._live_timer: Timer | None = None
        self.filters = ItemFilters(self)  # the items' tab, text filter and error group
        self.watcher: BatchWatcher | None = None
        self.triage = Triage(self)  # retry, skip, run first: confirm and send
        self.gates = DashboardGates(self)  # which keys apply now, and why not
        self._flights: dict[int, Flight] = {}  # the items in flight, of the live progress shown

    @property
    def host(self) -> Host:
        return host(self)

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # The layout classes of the terminal's size before the widgets get their first styles
        # (a class set later restyles every widget again).
        self._apply_layout(self.app.size, update=False)
        cls, clock = DashboardScreen, self.host.clock
        with Vertical(id="top"):
            title = TitleBar(self.bdir.batch_id, in_process=self.in_process, id="title")
            yield title.data_bind(cls.live, cls.manifest, cls.engine, cls.gone, cls.reading, in_process=cls.here)
            progress = ProgressLine(in_process=self.in_process, id="progress-row")
            yield progress.data_bind(cls.live, cls.engine, cls.gone, cls.reading, in_process=cls.here)
            yield CountsRow(id="counts").data_bind(cls.live, cls.manifest)
            yield Charts(id="charts").data_bind(cls.live)
        with Horizontal(id="middle"):
            yield ErrorsPanel(self.bdir.items_db, id="errors-box").data_bind(cls.live)
            yield LimitsPanel(id="limits-box").data_bind(cls.live, cls.manifest)  # --limit-by only
            yield InFlightPanel(clock, id="flight-box").data_bind(cls.live)
        yield Tabs(*[FigureTab(label, id=tab_id) for tab_id, label, _ in TABS], id="tabs")
        yield Input(placeholder="filter items by key or error text (enter to apply, escape to clear)", id="filter")
        yield ItemsTable(self.bdir.items_db, id="items")
        yield EventLog(self.bdir, clock, id="events").data_bind(cls.live, cls.engine)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._event(f"watching batch {self.bdir.batch_id}")
        if self.host.watch_files:
            self.watcher = BatchWatcher(self.bdir.path, self.post_message)
            self.watcher.start()
        else:
            BatchWatcher(self.bdir.path, self.post_message).read_all(force=True)
        self.set_interval(1.0, self._tick)
        # The active tab shows how many rows a filter leaves: its label follows the table's count
        # (its virtual size), which may arrive from a background count after the filter.
        self.watch(self.query_one(ItemsTable), "virtual_size", lambda _size: self.filters.label_tabs(), init=False)
        if self.in_process:
            self.call_after_refresh(self.host.engine_may_start)

    def on_resize(self, event: events.Resize) -> None:
        # The title, the status line, the tabs and the footer are always on screen; the panels
        # collapse by size (dashboard_layout.py) and the items table gets the rest.
        self._apply_layout(event.size, update=True)
        self.filters.label_tabs()

    def _apply_layout(self, size: Size, *, update: bool) -> None:
        """The layout classes for ``size``; with ``update``, the widgets restyled once if any
        changed."""
        if set_layout_classes(self, size) and update:
            self.update_node_styles()
            errors = self.query_one(ErrorsPanel)
            if self.has_class("tiny") and self.focused is not None and errors in self.focused.ancestors:
                self.set_focus(self.query_one(ItemsTable))  # not on a table out of sight

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def _event(self, text: str) -> None:
        for log in self.query(EventLog):  # none for a moment while the screen recomposes
            log.write_event(text)

    # -- data in -----------------------------------------------------------------------------

    @on_latest(ManifestUpdated)
    def _manifest(self, message: ManifestUpdated) -> None:
        self.manifest = message.manifest
        if message.manifest.state == BatchState.CREATED and self.reading is None:
            self._check_alive(force=True)  # an engine may read its source: say so at once

    @on(FileDamaged)
    def _damaged(self, message: FileDamaged) -> None:
        self._event(message.line(shown=self.live is not None or self.manifest is not None))
        self.query_one(TitleBar).unreadable |= self.manifest is None and message.name == "manifest.json"

    @on_latest(LiveUpdated)
    def _live(self, message: LiveUpdated) -> None:
        live, previous = message.live, self.live
        if self.in_process_engine and previous is not None and previous.state == live.state:
            # The engine runs in this app's thread: every repaint is time it does not get (one
            # GIL). Its progress is shown IN_PROCESS_EVERY_S apart, the latest write each time;
            # a change of state at once.
            wait = self._live_stamp + self.IN_PROCESS_EVERY_S - time.monotonic()
            if wait > 0:
                self._live_pending = live
                if self._live_timer is None:
                    self._live_timer = self.set_timer(wait, self._live_later)
                return
        self._apply_live(live)

    def _live_later(self) -> None:
        self._live_timer = None
        live, self._live_pending = self._live_pending, None
        if live is not None:
            self._apply_live(live)

    def _apply_live(self, live: LiveProgress) -> None:
        self._live_stamp = time.monotonic()
        self._live_pending = None
        try:
            previous = self.live
            # A write from an engine thought frozen: say at once that it responds again.
            force = previous is None or previous.state != live.state or self.engine.liveness == Liveness.STALE
            self._check_alive(force=force or not self.engine.held, live=live)
            self.live = nothing_runs(live, self.engine.held or self.here, self.bdir)
        except Exception as exc:
            # A display bug must never take down an engine running in this app.
            if self.host.strict_display:
                raise
            self._event(f"display error: {type(exc).__name__}: {exc}")

    def watch_live(self, previous: LiveProgress | None, live: LiveProgress | None) -> None:
        if live is None:
            return
        try:
            table = self.query_one(ItemsTable)
        except NoMatches:  # recomposing: the new panels are composed from this live progress
            return
        # Nothing more will come to a finished batch: "no items yet" would promise some.
        empty = "this batch has no items" if live.state == BatchState.FINISHED else ItemsTable.empty_text
        if table.empty_text != empty:
            table.empty_text = empty
            table.refresh()
        self._flights = flights(live)
        self._show_flights(table, reread=False)  # read below, with the running items' times
        table.refresh_data()
        changed_state = previous is None or previous.state != live.state
        # The tabs' counts with the status line's, from the same write: a screen never shows two
        # different failed counts. A FigureTab is laid out again only when a figure grows past
        # its widest (labels.py), so this costs a repaint of the tabs.
        self.filters.label_tabs()
        if changed_state:
            self.refresh_bindings()

    def _check_alive(self, force: bool = False, live: LiveProgress | None = None) -> None:
        now = time.monotonic()
        if self.here and not self.host.engine_running:
            self.here = False  # this app's engine ended: who runs the batch now is the lock's
        if force or now - self._alive_stamp > 1.0:
            self._alive_stamp = now
            was = self.engine.held
            self.engine = engine_status(self.bdir.path, live=live or self.live, now=self.host.clock())
            self.reading = self.gates.source_reading(live or self.live)
            if was != self.engine.held:
                self.refresh_bindings()
                self.live = self.live and nothing_runs(self.live, self.engine.held or self.here, self.bdir)  # died?
        for log in self.query(EventLog):  # as in _event: timers go on while the screen recomposes
            log.check_acks(self.ACK_TIMEOUT_S)

    def watch_reading(self, previous: SourceReading | None, reading: SourceReading | None) -> None:
        if (previous is None, previous and previous.engine) != (reading is None, reading and reading.engine):
            self.refresh_bindings()
        if reading is not None and (previous is None or previous.items != reading.items):
            for table in self.query(ItemsTable):  # no live progress yet: the rows read so far
                table.refresh_data()
            self.filters.label_tabs()

    def watch_gone(self, gone: bool) -> None:
        self.refresh_bindings()
        if gone:
            said = f"the batch folder {self.bdir.path} is gone (moved or deleted): these are its last figures"
            self._event(said)
            self.notify(said, severity="warning", timeout=8)
            if self.live is not None:  # nothing here runs any more
                self.live = nothing_runs(self.live, held=False)

    def _tick(self) -> None:
        self._check_alive()
        self.gone = not self.bdir.path.is_dir()
        for panel in self.query(InFlightPanel):  # as in _event
            panel.tick()
        for table in self.query(ItemsTable):
            self._show_flights(table)
        if self.watcher is not None and self.host.watch_files:
            self.watcher.read_all()  # cheap stat; covers a missed inotify event

    def _show_flights(self, table: ItemsTable, *, reread: bool = True) -> None:
        """The items in flight in the table, running or queued (none without an engine: a dead one's are stale)."""
        alive = self.engine.held or self.in_process_engine
        table.show_flights(self._flights if alive else {}, self.host.clock(), reread=reread, engine=alive)
        self.triage.ask_for_index(table.order)  # slowest first: read from an index, once an engine has it

    # -- selection and filters ---------------------------------------------------------------

    @property
    def selected_seq(self) -> int | None:
        return self.query_one(ItemsTable).selected_seq

    @on(ErrorsPanel.GroupChosen)
    def _group_chosen(self, event: ErrorsPanel.GroupChosen) -> None:
        self.filters.show_group(event.group_id, event.group)

    @on(Tabs.TabActivated, "#tabs")
    def _tab(self, event: Tabs.TabActivated) -> None:
        if event.tab.id != self.filters.shown:  # a click (a key shows its tab at once)
            self.filters.show_tab(event.tab.id)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.filters.apply_text(event.value)

    @on(ItemsTable.MarksChanged)
    def _marks_changed(self, event: ItemsTable.MarksChanged) -> None:
        self.query_one(ProgressLine).marked = event.count

    @on(ItemsTable.Selected)
    def _item_selected(self, event: ItemsTable.Selected) -> None:
        self._open_detail(event.seq)

    def _open_detail(self, seq: int) -> None:
        from .detail import ItemDetailScreen

        self.app.push_screen(ItemDetailScreen(self.bdir.path, seq, status_from=self))

    # -- actions -----------------------------------------------------------------------------

    @property
    def engine_live(self) -> bool:
        return self.gates.engine_live

    def may(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.gates.may(action)

    def action_toggle_pause(self) -> None:
        if self.gates.idle("toggle_pause"):
            return
        if not self.engine_live or self.live is None:
            self.notify("no engine is running this batch", severity="warning")
            return
        op: ControlOp = "resume" if self.live.state == BatchState.PAUSED else "pause"
        self.triage.steer(op, op)

    def action_stop(self) -> None:
        if self.gates.idle("stop") or not self.engine_live:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.triage.steer("stop", "stop")

        self.app.push_screen(
            ConfirmScreen(
                "Stop this batch?", "In-flight items get the grace period, then go back to pending. Resume it any time."
            ),
            confirmed,
        )

    def action_bulk(self, op: ControlOp) -> None:
        """``r``, ``s``, ``+``: retry, skip or run first the marked items, or the item under the
        cursor when none is marked; asks first (the count and a few keys), ``y`` sends it."""
        self.triage.bulk(op)

    def action_retry_group(self) -> None:
        """``R``: retry every failed item of an error group (see :meth:`.ItemFilters.chosen_group`)."""
        self.triage.retry_group(self.filters.chosen_group())

    def action_details(self) -> None:
        seq = self.selected_seq
        if seq is not None:
            self._open_detail(seq)

    def action_filter(self) -> None:
        self.filters.open_field()

    def action_clear_filter(self) -> None:
        """Escape: the marks go first (one escape), then the filter and the group."""
        if self.query_one(ItemsTable).clear_marks():
            self.notify("marks cleared", timeout=2)
            return
        self.filters.clear()

    def action_mark(self) -> None:
        self.query_one(ItemsTable).action_toggle_mark()

    def action_mark_range(self, step: int) -> None:
        self.query_one(ItemsTable).action_extend_marks(step)

    def action_mark_all(self) -> None:
        """``a``: the items of the view (tab, filter, group) as they are now (items_marks.py)."""
        table = self.query_one(ItemsTable)
        table.mark_view()
        self.notify(f"{table.marked_count:,} marked", timeout=2)

    def action_sort(self) -> None:
        order = self.query_one(ItemsTable).next_order()
        self.notify(f"items sorted: {_SORT_NAMES[order]}", timeout=2)

    def action_focus_errors(self) -> None:
        if self.has_class("tiny"):
            self.notify(f"{self.unavailable('focus_errors')}: tab 3 lists the failed items", severity="warning")
            return
        self.query_one(ErrorsPanel).focus_table()

    def action_focus_items(self) -> None:
        self.set_focus(self.query_one(ItemsTable))

    def action_events(self) -> None:
        """The event log on the whole screen (its lines whole, scrolled with the keys), or back."""
        log = self.query_one(EventLog)
        self.set_focus(log if log.toggle_whole_screen() else self.query_one(ItemsTable))
        self.refresh_bindings()  # the tables' keys go (dashboard_gates.py), or come back

    def action_tab(self, tab_id: str) -> None:
        self.query_one("#tabs", Tabs).active = tab_id
        if tab_id != self.filters.shown:  # now, not a turn later: "3a" marks the failed items
            self.filters.show_tab(tab_id)

    @property
    def resumable(self) -> bool:
        return self.gates.resumable

    @property
    def in_process_engine(self) -> bool:
        """This app's engine runs this batch (its lock may not be taken yet)."""
        return self.here and self.host.engine_running

    def footer_first(self) -> tuple[str, ...]:
        return self.gates.footer_first(self.FOOTER_FIRST)

    def footer_hidden(self) -> frozenset[str]:
        return self.gates.footer_hidden()

    def palette_offers(self, action: str) -> bool:
        return action != "resume_batch" or self.resumable

    def unavailable(self, action: str) -> str | None:
        return self.refusal(action) or self.gates.unavailable(action) or super().unavailable(action)

    def action_resume_batch(self) -> None:
        if self.gates.idle("resume_batch"):
            return
        if self.gone:
            self.notify(clean(f"batch {self.bdir.batch_id}: its folder is gone"), severity="warning")
            return
        if self.engine.held or self.in_process_engine:
            self.notify(self.gates.held_text(), severity="warning")
            return
        if not self.resumable:
            self.notify(clean(f"batch {self.bdir.batch_id} is finished: nothing to resume"), severity="warning")
            return

        def started(outcome: ResumeStarted | None) -> None:
            if outcome is None:
                return
            if outcome.requeued:
                self._event(f"requeued {outcome.requeued:,} failed items")
            if outcome.plan is not None:
                self.host.resume_batch(self.bdir.path, outcome.plan)  # this dashboard is replaced
                return
            self._event(f"resumed in a background engine, pid {outcome.pid}: {outcome.command}")
            self.notify(f"resumed in a background engine (pid {outcome.pid})", timeout=4)
            (self.watcher or BatchWatcher(self.bdir.path, self.post_message)).read_all(force=True)
            self._check_alive(force=True)

        self.app.push_screen(ResumeDialog(self.bdir.path), started)

    def action_browser(self) -> None:
        self.host.open_browser()

    @on(EngineFinished)
    def _engine_finished(self, message: EngineFinished) -> None:
        live = self.live
        if live is not None and live.state != message.state and not (message.batch / "live_progress.json").exists():
            # Its folder went while it ran: the engine wrote how it ended where the folder went.
            self._apply_live(live.ended(BatchState(message.state), message.halt_reason))
        else:  # its last write (its last items, its end) may not be read yet: it is logged first
            (self.watcher or BatchWatcher(self.bdir.path, self.post_message)).read_all(force=True)
        why = f": {message.halt_reason}" if message.halt_reason else ""
        self.call_later(self._event, f"engine finished: {message.state} (exit {message.exit_code}){why}")
        self._check_alive(force=True)
