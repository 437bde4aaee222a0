"""The live dashboard of one batch.

Everything shown comes from the batch directory (live_progress.json, manifest.json, items.db
read-only): the same view works for an engine in this app's worker thread, an engine in another
process, or a finished batch. Commands go out through the control client (engine/client.py),
like any other client's.

The screen only composes the panels (tui/widgets/), feeds them the live progress, the manifest
and the engine's liveness as reactive data (``data_bind``), and routes keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.widgets import Footer, Input, Tab, Tabs
from textual.worker import get_current_worker

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.client import ACK_TIMEOUT_S, Applied, NotAcknowledged, Outcome, Sent, send
from batchtui.engine.errors import BatchtuiError
from batchtui.engine.fmt import clean
from batchtui.engine.liveness import EngineStatus, Liveness, engine_status
from batchtui.engine.models import ACTIVE_STATES, BatchState, ControlOp, LiveProgress, Manifest
from batchtui.engine.store.queries import ItemQueries, StoreError

from ..host import Host, host
from ..messages import EngineFinished, ErrorTypeChosen, LiveUpdated, ManifestUpdated
from ..watch import BatchWatcher
from ..widgets.charts import Charts
from ..widgets.counts import CountsRow
from ..widgets.errors_panel import ErrorsPanel
from ..widgets.event_log import EventLog
from ..widgets.in_flight import InFlightPanel
from ..widgets.items_table import ItemsTable
from ..widgets.status import GONE, ProgressLine, TitleBar
from .base import WorkerScreen
from .modals import ConfirmScreen
from .resume_dialog import ResumeDialog, ResumeStarted, resumable

TABS: tuple[tuple[str, str, str | None], ...] = (
    ("tab-all", "1 All", None),
    ("tab-processing", "2 Running", "processing"),
    ("tab-failed", "3 Failed", "failed"),
    ("tab-complete", "4 Complete", "complete"),
    ("tab-skipped", "5 Skipped", "skipped"),
)


class DashboardScreen(WorkerScreen):
    """Progress, rate, ETA, counts, memory, errors, in-flight items and the items table."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause/Resume", id="pause", tooltip="Pause dispatch, or let it go on"),
        Binding("r", "retry_selected", "Retry", id="retry", tooltip="Retry the selected failed item"),
        Binding(
            "R",
            "retry_type",
            "Retry type",
            id="retry_type",
            tooltip="Retry every failed item of the selected error type",
        ),
        Binding("s", "skip_selected", "Skip", id="skip", tooltip="Skip the selected item (kills it if running)"),
        Binding("x", "stop", "Stop", id="stop", tooltip="Stop the batch gracefully (resumable)"),
        Binding("enter", "details", "Details", id="details", tooltip="Open the selected item", show=False),
        Binding("slash", "filter", "Filter", id="filter", tooltip="Filter the items by key or error text"),
        Binding("1", "tab('tab-all')", "All", id="tab1", show=False),
        Binding("2", "tab('tab-processing')", "Running", id="tab2", show=False),
        Binding("3", "tab('tab-failed')", "Failed", id="tab3", show=False),
        Binding("4", "tab('tab-complete')", "Complete", id="tab4", show=False),
        Binding("5", "tab('tab-skipped')", "Skipped", id="tab5", show=False),
        Binding("escape", "clear_filter", "Clear filter", id="clear_filter", show=False),
        Binding("b", "browser", "Batches", id="browser", tooltip="All batches in the output dir"),
        Binding(
            "u",
            "resume_batch",
            "Resume batch",
            id="resume_batch",
            tooltip="Resume this batch: workers, failure-rate limit, timeout, retry failed, here or in the background",
        ),
    ]

    ACK_TIMEOUT_S: ClassVar[float] = ACK_TIMEOUT_S  # a class attribute, so a test can shorten it
    COMPACT_BELOW: ClassVar[int] = 33  # rows: the full layout needs this many

    #: The data every panel is bound to. Set again on every read of a file, equal or not: an
    #: offline change re-reads the same live_progress.json to refresh the items.
    live: var[LiveProgress | None] = var(None, always_update=True)
    manifest: var[Manifest | None] = var(None, always_update=True)
    engine: var[EngineStatus] = var(GONE)

    def __init__(self, batch: Path, *, in_process: bool = False) -> None:
        super().__init__()
        self.batch = BatchDir(batch)
        self.in_process = in_process
        self._alive_stamp = 0.0
        self._error_filter: str | None = None
        self.watcher: BatchWatcher | None = None

    @property
    def host(self) -> Host:
        return host(self)

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        cls, clock = DashboardScreen, self.host.clock
        with Vertical(id="top"):
            title = TitleBar(self.batch.batch_id, in_process=self.in_process, id="title")
            yield title.data_bind(cls.live, cls.manifest, cls.engine)
            yield ProgressLine(id="progress-row").data_bind(cls.live, cls.engine)
            yield CountsRow(id="counts").data_bind(cls.live, cls.manifest)
            yield Charts(id="charts").data_bind(cls.live)
        with Horizontal(id="middle"):
            yield ErrorsPanel(id="errors-box").data_bind(cls.live)
            yield InFlightPanel(clock, id="flight-box").data_bind(cls.live)
        yield Tabs(*[Tab(label, id=tab_id) for tab_id, label, _ in TABS], id="tabs")
        yield Input(placeholder="filter items by key or error text (enter to apply, escape to clear)", id="filter")
        yield ItemsTable(self.batch.items_db, id="items")
        yield EventLog(self.batch, clock, id="events").data_bind(cls.live, cls.engine)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._event(f"watching batch {self.batch.batch_id}")
        if self.host.watch_files:
            self.watcher = BatchWatcher(self.batch.path, self.post_message)
            self.watcher.start()
        else:
            BatchWatcher(self.batch.path, self.post_message).read_all(force=True)
        self.set_interval(1.0, self._tick)
        self.query_one(ItemsTable).focus()  # the items are what an operator works on

    def on_resize(self, event: events.Resize) -> None:
        # Below COMPACT_BELOW rows the charts go and the boxes shrink, so the title and the
        # status line stay on screen (the contract: usable from 80x24 up).
        self.set_class(event.size.height < self.COMPACT_BELOW, "compact")

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def _event(self, text: str) -> None:
        self.query_one(EventLog).write_event(text)

    # -- data in -----------------------------------------------------------------------------

    @on(ManifestUpdated)
    def _manifest(self, message: ManifestUpdated) -> None:
        self.manifest = message.manifest

    @on(LiveUpdated)
    def _live(self, message: LiveUpdated) -> None:
        try:
            live, previous = message.live, self.live
            # A write from an engine thought frozen: say at once that it responds again.
            force = previous is None or previous.state != live.state or self.engine.liveness == Liveness.STALE
            self._check_alive(force=force, live=live)
            self.live = live
        except Exception as exc:
            # A display bug must never take down an engine running in this app.
            if self.host.strict_display:
                raise
            self._event(f"display error: {type(exc).__name__}: {exc}")

    def watch_live(self, previous: LiveProgress | None, live: LiveProgress | None) -> None:
        if live is None:
            return
        self.query_one(ItemsTable).refresh_data()
        if previous is None or previous.state != live.state:
            self.refresh_bindings()

    def _check_alive(self, force: bool = False, live: LiveProgress | None = None) -> None:
        now = time.monotonic()
        if force or now - self._alive_stamp > 1.0:
            self._alive_stamp = now
            was = self.engine.held
            self.engine = engine_status(self.batch.path, live=live or self.live, now=self.host.clock())
            if was != self.engine.held:
                self.refresh_bindings()
        self.query_one(EventLog).check_acks(self.ACK_TIMEOUT_S)

    def _tick(self) -> None:
        self._check_alive()
        self.query_one(InFlightPanel).tick()
        if self.watcher is not None and self.host.watch_files:
            self.watcher.read_all()  # cheap stat; covers a missed inotify event

    # -- selection and filters ---------------------------------------------------------------

    @property
    def selected_seq(self) -> int | None:
        return self.query_one(ItemsTable).selected_seq

    def _selected_row(self) -> Any:
        seq = self.selected_seq
        if seq is None:
            return None
        try:
            with ItemQueries(self.batch.items_db) as store:
                return store.row(seq)
        except StoreError:
            return None

    def _selected_error_type(self) -> str | None:
        chosen = self.query_one(ErrorsPanel).focused_error_type() or self._error_filter
        if chosen:
            return chosen
        row = self._selected_row()
        return row.error_type if row is not None and row.status == "failed" else None

    @on(ErrorTypeChosen)
    def _error_chosen(self, event: ErrorTypeChosen) -> None:
        self._error_filter = event.error_type
        self.query_one("#tabs", Tabs).active = "tab-failed"
        self.query_one(ItemsTable).set_filter(status="failed", error_type=event.error_type, text=self._text_filter())
        self._event(f"items filtered to {event.error_type}")

    @on(Tabs.TabActivated, "#tabs")
    def _tab(self, event: Tabs.TabActivated) -> None:
        status = {tab_id: st for tab_id, _label, st in TABS}.get(event.tab.id or "")
        if status != "failed":
            self._error_filter = None
        self.query_one(ItemsTable).set_filter(status=status, error_type=self._error_filter, text=self._text_filter())

    def _text_filter(self) -> str | None:
        value = self.query_one("#filter", Input).value.strip()
        return value or None

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        table = self.query_one(ItemsTable)
        table.set_filter(status=table.status, error_type=table.error_type, text=event.value.strip() or None)
        table.focus()

    @on(ItemsTable.Selected)
    def _item_selected(self, event: ItemsTable.Selected) -> None:
        self._open_detail(event.seq)

    def _open_detail(self, seq: int) -> None:
        from .detail import ItemDetailScreen

        self.app.push_screen(ItemDetailScreen(self.batch.path, seq))

    # -- actions -----------------------------------------------------------------------------

    @property
    def engine_live(self) -> bool:
        return self.engine.held and self.live is not None and self.live.state in ACTIVE_STATES

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pause", "stop"):
            if not self.engine_live:
                return None  # greyed out: nothing to pause or stop
            if self.live is not None and self.live.state == BatchState.STOPPING:
                return None
        return True

    def action_toggle_pause(self) -> None:
        if not self.engine_live or self.live is None:
            self.notify("no engine is running this batch", severity="warning")
            return
        op: ControlOp = "resume" if self.live.state == BatchState.PAUSED else "pause"
        self._steer(op, op)

    def action_stop(self) -> None:
        if not self.engine_live:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._steer("stop", "stop")

        self.app.push_screen(
            ConfirmScreen(
                "Stop this batch?", "In-flight items get the grace period, then go back to pending. Resume it any time."
            ),
            confirmed,
        )

    def action_retry_selected(self) -> None:
        row = self._selected_row()
        if row is None or row.status != "failed":
            self.notify("select a failed item to retry", severity="warning")
            return
        self._steer("retry", f"retry #{row.seq}", seqs=[row.seq])

    def action_retry_type(self) -> None:
        error_type = self._selected_error_type()
        if not error_type:
            self.notify("select an error type (errors table) or a failed item first", severity="warning")
            return
        self._steer("retry", f"retry all {error_type}", filter={"error_type": error_type})

    def action_skip_selected(self) -> None:
        row = self._selected_row()
        if row is None or row.status not in ("pending", "processing", "failed"):
            self.notify("select a pending, running or failed item to skip", severity="warning")
            return
        self._steer("skip", f"skip #{row.seq}", seqs=[row.seq])

    def _steer(
        self, op: ControlOp, what: str, *, seqs: Sequence[int] | None = None, filter: dict[str, Any] | None = None
    ) -> None:
        """Send ``op`` through the control client, off the UI thread; its ack is awaited by the
        event log (an engine holds the batch), or the store is changed offline (none does)."""
        self._send(op, what, seqs, filter, self.host.clock)

    @work(thread=True, exclusive=False, group="control", name="sending a command", exit_on_error=False)
    def _send(
        self,
        op: ControlOp,
        what: str,
        seqs: Sequence[int] | None,
        filter: dict[str, Any] | None,
        clock: Callable[[], float],
    ) -> None:
        worker = get_current_worker()
        try:
            outcome = send(
                self.batch, op, seqs=seqs, filter=filter, wait=None, cancelled=lambda: worker.is_cancelled, now=clock
            )
        except BatchtuiError as exc:  # no engine for a pause, the batch taken meanwhile, a damaged file
            self.app.call_from_thread(self.notify, clean(f"{what} failed: {exc}"), severity="error")
            return
        self.app.call_from_thread(self._sent, what, outcome)

    def _sent(self, what: str, outcome: Outcome) -> None:
        log = self.query_one(EventLog)
        if isinstance(outcome, Sent):
            log.sent(outcome, what)
        elif isinstance(outcome, NotAcknowledged):
            text = outcome.describe(what, brief=True)
            log.write_event(text)
            self.notify(clean(text), severity="warning", timeout=6)
        elif isinstance(outcome, Applied):
            log.write_event(f"{what}: {outcome.message}")
            self.notify(clean(f"{what}: {outcome.message}"), timeout=3)
            if not outcome.engine:  # changed offline: show it now
                (self.watcher or BatchWatcher(self.batch.path, self.post_message)).read_all(force=True)

    def action_details(self) -> None:
        seq = self.selected_seq
        if seq is not None:
            self._open_detail(seq)

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        field.display = False
        self._error_filter = None
        table = self.query_one(ItemsTable)
        table.set_filter(status=table.status, error_type=None, text=None)
        table.focus()

    def action_tab(self, tab_id: str) -> None:
        self.query_one("#tabs", Tabs).active = tab_id

    @property
    def resumable(self) -> bool:
        """No engine holds the batch and a resume has something to do (resume_dialog.py)."""
        state = self.live.state if self.live is not None else self.manifest.state if self.manifest else None
        counts = self.live.counts if self.live is not None else self.manifest.totals if self.manifest else None
        return counts is not None and resumable(state, counts, self.engine.held or self.in_process_engine)

    @property
    def in_process_engine(self) -> bool:
        """This app's engine runs this batch (its lock may not be taken yet)."""
        return self.in_process and self.host.engine_running

    def palette_offers(self, action: str) -> bool:
        return action != "resume_batch" or self.resumable

    def action_resume_batch(self) -> None:
        if self.engine.held or self.in_process_engine:
            where = "this app" if self.in_process_engine else f"pid {self.engine.pid}"
            self.notify(f"an engine ({where}) runs this batch: nothing to resume", severity="warning")
            return
        if not self.resumable:
            self.notify(f"batch {self.batch.batch_id} is finished: nothing to resume", severity="warning")
            return

        def started(outcome: ResumeStarted | None) -> None:
            if outcome is None:
                return
            if outcome.requeued:
                self._event(f"requeued {outcome.requeued:,} failed items")
            if outcome.plan is not None:
                self.host.resume_batch(self.batch.path, outcome.plan)  # this dashboard is replaced
                return
            self._event(f"resumed in a background engine, pid {outcome.pid}: {outcome.command}")
            self.notify(f"resumed in a background engine (pid {outcome.pid})", timeout=4)
            (self.watcher or BatchWatcher(self.batch.path, self.post_message)).read_all(force=True)
            self._check_alive(force=True)

        self.app.push_screen(ResumeDialog(self.batch.path), started)

    def action_browser(self) -> None:
        from .browser import BrowserScreen

        self.app.push_screen(BrowserScreen(self.batch.path.parent))

    @on(EngineFinished)
    def _engine_finished(self, message: EngineFinished) -> None:
        self._event(f"engine finished: {message.state} (exit {message.exit_code})")
        self._check_alive(force=True)
