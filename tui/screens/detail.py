"""Item detail: its data, every attempt with its error, stdout/stderr tails, the result."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.client import ACK_TIMEOUT_S, Applied, NotAcknowledged, send
from batchtui.engine.errors import BatchtuiError
from batchtui.engine.fmt import clean
from batchtui.engine.models import ControlOp
from batchtui.engine.store.queries import AttemptRow, ItemQueries, ItemRow, StoreError

from ..host import host
from ..text import plain, plain_block
from .base import WorkerScreen

TAIL_BYTES = 16384


def _tail(path: Path, limit: int = TAIL_BYTES) -> str | None:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except FileNotFoundError:
        return None
    text = data.decode(errors="replace")
    if size > limit:
        text = "…" + text.split("\n", 1)[-1]
    return text


class ItemDetailScreen(WorkerScreen):
    """One item, in full. Item content is shown as plain text, never markup."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "back", "Back", id="detail_back", tooltip="Back to the dashboard"),
        Binding("r", "retry", "Retry", id="detail_retry", tooltip="Retry this item (if it failed)"),
        Binding("s", "skip", "Skip", id="detail_skip", tooltip="Skip this item"),
        Binding("f5", "reload", "Reload", id="detail_reload", tooltip="Read the item again"),
    ]

    def __init__(self, batch: Path, seq: int) -> None:
        super().__init__()
        self.batch = BatchDir(batch)
        self.seq = seq
        self.row: ItemRow | None = None
        self.attempt_rows: list[AttemptRow] = []

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(id="detail-title")
            yield Static("Data", classes="section")
            yield Static(id="detail-data", classes="block")
            yield Static("Attempts", classes="section")
            yield DataTable(id="attempts", cursor_type="row")
            yield Static("Error", classes="section")
            yield Static(id="detail-error", classes="block")
            yield Static("Result", classes="section")
            yield Static(id="detail-result", classes="block")
            yield Static("stdout (tail)", classes="section")
            yield Static(id="detail-stdout", classes="block")
            yield Static("stderr (tail)", classes="section")
            yield Static(id="detail-stderr", classes="block")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#attempts", DataTable).add_columns("Try", "Status", "Started", "Duration", "Error")
        self.action_reload()

    def action_reload(self) -> None:
        try:
            with ItemQueries(self.batch.items_db) as store:
                detail = store.item(self.seq)
        except StoreError as exc:
            self.query_one("#detail-title", Static).update(plain(f"cannot read the store: {exc}"))
            return
        self.row, self.attempt_rows = (None, []) if detail is None else (detail.row, detail.attempts)
        self._show_row()

    def _show_row(self) -> None:
        row = self.row
        if row is None:
            self.query_one("#detail-title", Static).update(plain(f"item {self.seq} not found"))
            return
        title = Text()
        title.append(f"#{row.seq}  ", style="bold")
        title.append_text(plain(row.key, limit=200))
        title.append(f"  [{row.status.upper()}]  attempts {row.attempts}", style="bold")
        if row.duration_s is not None:
            title.append(f"  {row.duration_s:.3f}s")
        if row.cost is not None:
            title.append(f"  cost {row.cost:g}")
        self.query_one("#detail-title", Static).update(title)
        self.query_one("#detail-data", Static).update(plain_block(_pretty(row.data)))
        table = self.query_one("#attempts", DataTable)
        table.clear()
        for a in self.attempt_rows:
            err = f"{a.error.error_type} [{a.error.category}]: {a.error.message}" if a.error else ""
            table.add_row(
                Text(str(a.attempt)),
                Text(a.status),
                Text(a.started_at or ""),
                Text(f"{a.duration_s:.3f}s" if a.duration_s is not None else ""),
                plain(err, limit=200),
            )
        if row.error_type:
            err = f"{row.error_type} [{row.error_category}]: {row.error_message}\n\n{row.error_detail or ''}"
        else:
            err = "(none)"
        self.query_one("#detail-error", Static).update(plain_block(err))
        self.query_one("#detail-result", Static).update(
            plain_block(_pretty(row.result) if row.status == "complete" else "(not complete)")
        )
        for stream, wid in (("out", "#detail-stdout"), ("err", "#detail-stderr")):
            text = _tail(self.batch.logs / f"{row.seq}.{stream}")
            self.query_one(wid, Static).update(plain_block(text if text is not None else "(no output)"))

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_retry(self) -> None:
        if self.row is None or self.row.status != "failed":
            self.notify("only a failed item can be retried", severity="warning")
            return
        self._command("retry", host(self).clock)

    def action_skip(self) -> None:
        if self.row is None or self.row.status not in ("pending", "processing", "failed"):
            self.notify("this item cannot be skipped now", severity="warning")
            return
        self._command("skip", host(self).clock)

    @work(thread=True, group="detail", name="sending a command", exit_on_error=False)
    def _command(self, op: ControlOp, clock: Callable[[], float]) -> None:
        """Send ``op`` for this item through the control client and wait for its ack (in
        slices, so that quitting the app never waits for an engine that does not answer)."""
        worker = get_current_worker()
        what = f"{op} #{self.seq}"
        severity: SeverityLevel = "information"
        try:
            outcome = send(
                self.batch, op, seqs=[self.seq], wait=ACK_TIMEOUT_S, cancelled=lambda: worker.is_cancelled, now=clock
            )
        except BatchtuiError as exc:  # no engine and the batch taken meanwhile, a damaged file
            message, severity = f"{op} failed: {exc}", "error"
        else:
            if worker.is_cancelled:
                return
            if isinstance(outcome, Applied):
                message = f"{what}: {outcome.message}"
            elif isinstance(outcome, NotAcknowledged):  # the engine may have gone, or be frozen
                message, severity = outcome.describe(what, brief=True), "warning"
            else:  # Sent: not asked for (a wait was given)
                message = f"sent {what}"
        self.app.call_from_thread(
            self.notify, clean(message), severity=severity, timeout=6 if severity == "warning" else 3
        )
        self.app.call_from_thread(self.set_timer, 0.6, self.action_reload)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
