"""The live dashboard of one batch.

Everything shown comes from the batch directory (live_progress.json, manifest.json, items.db
read-only): the same view works for an engine in this app's worker thread, an engine in another
process, or a finished batch. Commands go out through control.jsonl, like any other client's.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Log, ProgressBar, Sparkline, Static, Tab, Tabs

from batchtui.engine.batchdir import BatchDir, parse_iso
from batchtui.engine.control import ACK_TIMEOUT_S, append_command, apply_offline, new_command, unacked_message
from batchtui.engine.fmt import clean, fmt_duration
from batchtui.engine.liveness import EngineStatus, Liveness, engine_status
from batchtui.engine.models import ACTIVE_STATES, BatchState, ControlCommand, ControlOp, LiveProgress, Manifest
from batchtui.engine.store import ItemStore

from ..messages import EngineFinished, LiveUpdated, ManifestUpdated
from ..text import plain
from ..watch import BatchWatcher
from ..widgets.items_table import ItemsTable
from .modals import ConfirmScreen

TABS: tuple[tuple[str, str, str | None], ...] = (
    ("tab-all", "1 All", None),
    ("tab-processing", "2 Running", "processing"),
    ("tab-failed", "3 Failed", "failed"),
    ("tab-complete", "4 Complete", "complete"),
    ("tab-skipped", "5 Skipped", "skipped"),
)
HISTORY = 120


def fmt_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


class DashboardScreen(Screen[None]):
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
    ]

    ACK_TIMEOUT_S: ClassVar[float] = ACK_TIMEOUT_S  # a class attribute, so a test can shorten it
    COMPACT_BELOW: ClassVar[int] = 33  # rows: the full layout needs this many

    def __init__(self, batch: Path, *, in_process: bool = False) -> None:
        super().__init__()
        self.batch = BatchDir(batch)
        self.in_process = in_process
        self.live: LiveProgress | None = None
        self.manifest: Manifest | None = None
        self.alive = False  # an engine holds the batch (responding or not)
        self.engine = EngineStatus(Liveness.GONE, None, None)
        self._alive_stamp = 0.0
        self.rates: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.rss: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self._last_finished: int | None = None
        self._last_stamp: float | None = None
        self._pending_acks: dict[str, tuple[str, ControlOp, float]] = {}  # id -> (what, op, sent at)
        self._late_acks: dict[str, tuple[str, float]] = {}  # reported as not acknowledged
        self._seen_errors: set[tuple[int, int, str]] = set()
        self._seen_warnings: set[str] = set()
        self._error_rows: list[tuple[str, str, str, int, str]] = []
        self._flight_rows: list[tuple[int, str, int, str]] = []
        self._error_filter: str | None = None
        self.watcher: BatchWatcher | None = None

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            yield Static(id="title")
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=100, show_eta=False, show_percentage=True, id="progress")
                yield Static(id="progress-text")
            with Horizontal(id="counts"):
                for status in ("pending", "processing", "complete", "failed", "skipped"):
                    yield Static(id=f"count-{status}", classes=f"count {status}")
                yield Static(id="count-extra", classes="count extra")
            with Horizontal(id="charts"):
                with Vertical(classes="chart"):
                    yield Static(id="rate-label", classes="chart-label")
                    yield Sparkline([], id="rate-spark")
                with Vertical(classes="chart"):
                    yield Static(id="mem-label", classes="chart-label")
                    yield Sparkline([], id="mem-spark")
        with Horizontal(id="middle"):
            with Vertical(id="errors-box"):
                yield Static("Errors", classes="box-title")
                yield DataTable(id="errors", cursor_type="row", zebra_stripes=True)
            with Vertical(id="flight-box"):
                yield Static("In flight", classes="box-title")
                yield DataTable(id="inflight", cursor_type="none")
        yield Tabs(*[Tab(label, id=tab_id) for tab_id, label, _ in TABS], id="tabs")
        yield Input(placeholder="filter items by key or error text (enter to apply, escape to clear)", id="filter")
        yield ItemsTable(self.batch.items_db, id="items")
        yield Log(id="events", max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        errors = self.query_one("#errors", DataTable)
        for label in ("Type", "Category", "Count", "Example"):
            errors.add_column(label, key=label.lower())
        flights = self.query_one("#inflight", DataTable)
        for label in ("Seq", "Try", "Running", "Key"):
            flights.add_column(label, key=label.lower())
        self.query_one("#filter", Input).display = False
        self.query_one("#title", Static).update(plain(f"batch {self.batch.batch_id}"))
        self._event(f"watching batch {self.batch.batch_id}")
        if self.app_watch_files:
            self.watcher = BatchWatcher(self.batch.path, self.post_message)
            self.watcher.start()
        else:
            BatchWatcher(self.batch.path, self.post_message).read_all(force=True)
        self.set_interval(1.0, self._tick)
        self.query_one(ItemsTable).focus()  # the items are what an operator works on

    @property
    def app_watch_files(self) -> bool:
        return bool(getattr(self.app, "watch_files", True))

    def on_resize(self, event: events.Resize) -> None:
        # Below COMPACT_BELOW rows the charts go and the boxes shrink, so the title and the
        # status line stay on screen (the contract: usable from 80x24 up).
        self.set_class(event.size.height < self.COMPACT_BELOW, "compact")
        self._render_title()

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def _now(self) -> float:
        clock = getattr(self.app, "clock", None)
        return float(clock()) if callable(clock) else time.time()

    # -- data in -----------------------------------------------------------------------------

    @on(ManifestUpdated)
    def _manifest(self, message: ManifestUpdated) -> None:
        self.manifest = message.manifest
        self._render_title()
        if self.live is not None:
            self._render_counts(self.live)  # duplicates dropped come from the manifest

    @on(LiveUpdated)
    def _live(self, message: LiveUpdated) -> None:
        try:
            self._apply_live(message)
        except Exception as exc:
            # A display bug must never take down an engine running in this app.
            if getattr(self.app, "strict_display", False):
                raise
            self._event(f"display error: {type(exc).__name__}: {exc}")

    def _apply_live(self, message: LiveUpdated) -> None:
        live = message.live
        previous = self.live
        self.live = live
        # A write from an engine thought frozen: say at once that it responds again.
        self._check_alive(
            force=previous is None or previous.state != live.state or self.engine.liveness == Liveness.STALE
        )
        if previous is None or live.updated_at != previous.updated_at:
            self._sample(live)
        self._render_title()
        self._render_progress(live)
        self._render_counts(live)
        self._render_charts(live)
        self._render_errors(live)
        self._render_flights(live)
        self._log_news(previous, live)
        self.query_one(ItemsTable).refresh_data()
        if previous is None or previous.state != live.state:
            self.refresh_bindings()

    def _check_alive(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._alive_stamp > 1.0:
            self._alive_stamp = now
            was, before = self.alive, self.engine
            self.engine = engine_status(self.batch.path, live=self.live, now=self._now())
            self.alive = self.engine.held
            if was != self.alive:
                self.refresh_bindings()
            if before.liveness != self.engine.liveness or (
                self.engine.liveness == Liveness.STALE and before.badge() != self.engine.badge()
            ):
                self._render_title()
                if self.live is not None:
                    self._render_progress(self.live)
            if before.liveness != Liveness.STALE and self.engine.liveness == Liveness.STALE:
                self._event(f"engine not responding: {self.engine.explain()}")
            elif before.liveness == Liveness.STALE and self.engine.liveness == Liveness.ALIVE:
                self._event("engine responding again")
        self._check_acks()

    def _check_acks(self) -> None:
        """A command with no ack within ACK_TIMEOUT_S is reported once as not acknowledged."""
        now = time.monotonic()
        for cmd_id, (what, op, sent) in list(self._pending_acks.items()):
            if now - sent < self.ACK_TIMEOUT_S:
                continue
            self._pending_acks.pop(cmd_id)
            self._late_acks[cmd_id] = (what, sent)
            text = unacked_message(self.batch, what, op, now - sent, self.engine, brief=True)
            self._event(text)
            self.notify(clean(text), severity="warning", timeout=6)

    def _sample(self, live: LiveProgress) -> None:
        self.rates.append(live.rate_per_s)
        self.rss.append(live.memory.rss_mb + live.memory.children_rss_mb)

    def _tick(self) -> None:
        self._check_alive()
        if self.live is not None:
            self._render_flights(self.live)
        if not self.app_watch_files:
            return
        if self.watcher is not None:
            self.watcher.read_all()  # cheap stat; covers a missed inotify event

    # -- rendering ---------------------------------------------------------------------------

    def _current_state(self) -> BatchState | None:
        if self.live is not None:
            state = self.live.state
        elif self.manifest is not None:
            state = self.manifest.state
        else:
            return None
        if state in ACTIVE_STATES and not self.alive and not self.in_process:
            return None  # an engine died: the files still say running
        return state

    def _render_title(self) -> None:
        state = self._current_state()
        title = Text()
        title.append(f"{self.batch.batch_id}", style="bold")
        about = Text()
        if self.manifest is not None:
            about.append("  ")
            about.append_text(plain(self.manifest.name, limit=60))
            proc = self.manifest.processor
            kind = str(proc.get("kind", ""))
            what = proc.get("command") or proc.get("call")
            about.append("  ")
            about.append_text(plain(f"{kind}: {what}" if what else f"{kind} processor", style="dim", limit=70))
        label = state.value if state is not None else "interrupted"
        stale = self.engine.liveness == Liveness.STALE
        badge = self.query_one("#title", Static)
        badge.set_class(label == "paused" and not stale, "paused")
        badge.set_class(label in ("halted", "interrupted") and not stale, "halted")
        badge.set_class(label == "finished" and not stale, "finished")
        badge.set_class(stale, "stale")
        shown = self.engine.badge() if stale else label.upper()  # NOT RESPONDING 13s: frozen, hung or dead
        engine = ""
        if stale and not self.in_process:
            engine = f" pid {self.engine.pid}"
        elif self.live is not None and self.alive:
            engine = " in this app" if self.in_process else f" pid {self.live.pid}"
            cluster = self.live.cluster
            if cluster is not None:  # where the items run: the title says it, not only the counts row
                engine += " on a local dask cluster" if cluster.local else f" on dask {cluster.scheduler}"
        state_text = f"   [{shown}{engine}]"
        # The state comes right after the id when the whole line would not fit (80 columns):
        # it is what an operator must see; the name and command may be cut.
        room = (self.size.width or 140) - 4  # the padding of #top and #title
        if len(title) + len(about) + len(state_text) <= room:
            title.append_text(about)
            title.append(state_text, style="bold")
        else:
            title.append(state_text, style="bold")
            title.append_text(about)
        if self.live is not None and self.live.halt_reason:
            title.append("  ")
            title.append_text(plain(self.live.halt_reason, limit=80))
        badge.update(title)

    def _render_progress(self, live: LiveProgress) -> None:
        self.query_one("#progress", ProgressBar).update(total=100, progress=live.percent)
        c = live.counts
        parts = [f"{c.finished:,}/{live.total:,}", f"{live.rate_per_s:.1f}/s"]
        stale = self.engine.liveness == Liveness.STALE
        if stale:  # the figures are the last the engine wrote: how old they are comes first
            parts.insert(0, f"no update {fmt_duration(self.engine.silent_s)}")
        elif live.state in (BatchState.RUNNING, BatchState.STOPPING):
            parts.append(f"ETA {fmt_duration(live.eta_s)}")
        elif live.state == BatchState.PAUSED:
            parts.append("ETA paused")
        parts.append(f"elapsed {fmt_duration(live.elapsed_s)}")
        if live.cost.spent or live.cost.budget is not None:
            budget = f" / {live.cost.budget:g}" if live.cost.budget is not None else ""
            parts.append(f"cost {live.cost.spent:.4g}{budget}")
        text = self.query_one("#progress-text", Static)
        text.set_class(stale, "stale")
        text.update(Text("  ·  ".join(parts), no_wrap=True, overflow="ellipsis"))

    def _render_counts(self, live: LiveProgress) -> None:
        c = live.counts
        for status in ("pending", "processing", "complete", "failed", "skipped"):
            label = "running" if status == "processing" else status
            self.query_one(f"#count-{status}", Static).update(Text(f"{label} {getattr(c, status):,}"))
        extra = []
        if self.manifest is not None and self.manifest.duplicates_dropped:
            extra.append(f"duplicates dropped {self.manifest.duplicates_dropped:,}")
        extra.append(f"workers {live.workers}")
        cluster = live.cluster
        if cluster is not None:
            where = "local dask cluster" if cluster.local else f"dask {cluster.scheduler}"
            extra.append(
                f"{where}: {cluster.workers} workers, {fmt_mb(cluster.memory_used_mb)}"
                f" / {fmt_mb(cluster.memory_total_mb)}"
            )
        self.query_one("#count-extra", Static).update(Text("  ".join(extra)))

    def _render_charts(self, live: LiveProgress) -> None:
        self.query_one("#rate-spark", Sparkline).data = list(self.rates) or [0.0]
        self.query_one("#mem-spark", Sparkline).data = list(self.rss) or [0.0]
        peak_rate = max(self.rates, default=0.0)
        self.query_one("#rate-label", Static).update(
            Text(f"throughput {live.rate_per_s:.1f}/s  (peak {peak_rate:.1f}/s)")
        )
        m = live.memory
        self.query_one("#mem-label", Static).update(
            Text(
                f"memory {fmt_mb(m.rss_mb + m.children_rss_mb)}  (peak {fmt_mb(m.peak_rss_mb)},"
                f" children {fmt_mb(m.children_rss_mb)}, available {fmt_mb(m.system_available_mb)})"
            )
        )

    def _render_errors(self, live: LiveProgress) -> None:
        rows = [
            (f"{g.error_type}\x00{g.message}", g.error_type, g.category, g.count, g.example_message)
            for g in live.error_groups
        ]
        if rows == self._error_rows:
            return
        table = self.query_one("#errors", DataTable)
        keep = self._row_key_at_cursor(table)
        table.clear()
        for key, etype, category, count, example in rows:
            table.add_row(plain(etype), plain(category), Text(f"{count:,}"), plain(example, limit=200), key=key)
        self._error_rows = rows
        if keep is not None:
            for index, row in enumerate(rows):
                if row[0] == keep:
                    table.move_cursor(row=index, animate=False)
                    break

    @staticmethod
    def _row_key_at_cursor(table: DataTable[Any]) -> str | None:
        if table.row_count == 0:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:
            return None

    def _render_flights(self, live: LiveProgress) -> None:
        now = self._now()
        rows = []
        for f in live.in_flight:
            try:
                running = fmt_duration(now - parse_iso(f.started_at))
            except ValueError:
                running = "?"
            rows.append((f.seq, f.key, f.attempt, running))
        if rows == self._flight_rows:
            return
        table = self.query_one("#inflight", DataTable)
        same_items = [r[:3] for r in rows] == [r[:3] for r in self._flight_rows]
        if same_items:
            for seq, _key, _attempt, running in rows:
                table.update_cell(str(seq), "running", Text(running))
        else:
            table.clear()
            for seq, key, attempt, running in rows:
                table.add_row(Text(str(seq)), Text(str(attempt)), Text(running), plain(key, limit=120), key=str(seq))
        self._flight_rows = rows

    def _log_news(self, previous: LiveProgress | None, live: LiveProgress) -> None:
        if previous is None or previous.state != live.state:
            self._event(f"state {live.state.value}" + (f": {live.halt_reason}" if live.halt_reason else ""))
        for w in live.warnings:
            if w not in self._seen_warnings:
                self._seen_warnings.add(w)
                self._event(f"warning: {w}")
        for e in live.recent_errors:
            ident = (e.seq, e.attempt, e.error_type)
            if ident not in self._seen_errors:
                self._seen_errors.add(ident)
                self._event(f"#{e.seq} try {e.attempt} {e.category} {e.error_type}: {e.message}")
        for cmd_id, (what, _op, _sent) in list(self._pending_acks.items()):
            if cmd_id in live.acked:
                result = live.control_results.get(cmd_id, "done")
                self._pending_acks.pop(cmd_id)
                self._event(f"{what}: {result}")
                self.notify(clean(f"{what}: {result}"), timeout=3)
        for cmd_id, (what, sent) in list(self._late_acks.items()):
            if cmd_id in live.acked:
                result = live.control_results.get(cmd_id, "done")
                self._late_acks.pop(cmd_id)
                late = f"{what}: {result} (acknowledged late, after {time.monotonic() - sent:.0f}s)"
                self._event(late)
                self.notify(clean(late), timeout=4)

    def _event(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self._now()))
        self.query_one("#events", Log).write_line(f"{stamp} {clean(text, limit=300)}")

    # -- selection and filters ---------------------------------------------------------------

    @property
    def selected_seq(self) -> int | None:
        return self.query_one(ItemsTable).selected_seq

    def _selected_row(self) -> Any:
        seq = self.selected_seq
        if seq is None:
            return None
        try:
            store = ItemStore.open_readonly(self.batch.items_db)
        except Exception:
            return None
        try:
            return store.get(seq)
        finally:
            store.close()

    def _selected_error_type(self) -> str | None:
        table = self.query_one("#errors", DataTable)
        if table.has_focus and table.row_count:
            key = self._row_key_at_cursor(table)
            if key:
                return key.split("\x00", 1)[0]
        if self._error_filter:
            return self._error_filter
        row = self._selected_row()
        return row.error_type if row is not None and row.status == "failed" else None

    @on(DataTable.RowSelected, "#errors")
    def _error_selected(self, event: DataTable.RowSelected) -> None:
        error_type = str(event.row_key.value).split("\x00", 1)[0]
        self._error_filter = error_type
        self.query_one("#tabs", Tabs).active = "tab-failed"
        self.query_one(ItemsTable).set_filter(status="failed", error_type=error_type, text=self._text_filter())
        self._event(f"items filtered to {error_type}")

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
        return self.alive and self.live is not None and self.live.state in ACTIVE_STATES

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
        op = "resume" if self.live.state == BatchState.PAUSED else "pause"
        self._send(new_command(op), "resume" if op == "resume" else "pause")

    def action_stop(self) -> None:
        if not self.engine_live:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._send(new_command("stop"), "stop")

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
        self._retry(seqs=[row.seq], error_type=None, what=f"retry #{row.seq}")

    def action_retry_type(self) -> None:
        error_type = self._selected_error_type()
        if not error_type:
            self.notify("select an error type (errors table) or a failed item first", severity="warning")
            return
        self._retry(seqs=None, error_type=error_type, what=f"retry all {error_type}")

    def _retry(self, *, seqs: list[int] | None, error_type: str | None, what: str) -> None:
        cmd = new_command("retry", seqs=seqs, filter={"error_type": error_type} if error_type else None)
        if self.engine_live:
            self._send(cmd, what)
        else:
            self._offline(
                what,
                lambda store: (
                    f"{len(store.retry_failed(error_type=error_type, seqs=seqs))}"
                    " failed items back to pending; resume to run them"
                ),
            )

    def action_skip_selected(self) -> None:
        row = self._selected_row()
        if row is None or row.status not in ("pending", "processing", "failed"):
            self.notify("select a pending, running or failed item to skip", severity="warning")
            return
        if self.engine_live:
            self._send(new_command("skip", seqs=[row.seq]), f"skip #{row.seq}")
        else:
            self._offline(f"skip #{row.seq}", lambda store: f"{len(store.skip([row.seq]))} skipped")

    def _send(self, cmd: ControlCommand, what: str) -> None:
        append_command(self.batch, cmd)
        self._pending_acks[cmd.id] = (what, cmd.op, time.monotonic())
        note = ""
        if self.engine.liveness == Liveness.STALE:
            note = f"; the engine is not responding ({self.engine.badge().lower()}): it applies it if it wakes"
        self._event(f"sent {what} ({cmd.id}){note}")

    @work(thread=True, exclusive=False, group="offline")
    def _offline(self, what: str, change: Any) -> None:
        try:
            result = apply_offline(self.batch, change)
        except Exception as exc:
            self.app.call_from_thread(self.notify, clean(f"{what} failed: {exc}"), severity="error")
            return
        self.app.call_from_thread(self._offline_done, what, result)

    def _offline_done(self, what: str, result: str) -> None:
        self._event(f"{what}: {result}")
        self.notify(clean(f"{what}: {result}"), timeout=3)
        if self.watcher is not None:
            self.watcher.read_all(force=True)
        else:
            BatchWatcher(self.batch.path, self.post_message).read_all(force=True)

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

    def action_browser(self) -> None:
        from .browser import BrowserScreen

        self.app.push_screen(BrowserScreen(self.batch.path.parent))

    @on(EngineFinished)
    def _engine_finished(self, message: EngineFinished) -> None:
        self._event(f"engine finished: {message.state} (exit {message.exit_code})")
        self._check_alive(force=True)
