"""The batch browser: every batch in the output dir; open, resume here, or delete one."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from batchtui.engine.batchdir import engine_alive, iter_batches, parse_iso
from batchtui.engine.models import Counts
from batchtui.engine.summary import DAMAGED, BatchSummary, summarize

from ..host import host
from ..text import plain
from .base import WorkerScreen
from .modals import ConfirmScreen

BAR_WIDTH = 12


def progress_bar(percent: float, width: int = BAR_WIDTH) -> str:
    filled = round(width * max(0.0, min(100.0, percent)) / 100)
    return "█" * filled + "░" * (width - filled)


def engine_label(row: BatchSummary) -> str:
    """The Engine column: the lock holder's pid, and NOT RESPONDING when it stopped writing."""
    if row.engine is None:
        return ""
    return f"pid {row.engine.pid}" + (f" {row.engine.badge}" if row.engine.badge else "")


def _local(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return time.strftime("%m-%d %H:%M:%S", time.localtime(parse_iso(iso)))
    except ValueError:
        return iso


class BrowserScreen(WorkerScreen):
    """All batches, newest first. This is where an operator picks which batch to resume."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", id="browser_open", tooltip="Watch the selected batch"),
        Binding(
            "r",
            "resume",
            "Resume here",
            id="browser_resume",
            tooltip="Resume the selected batch with its engine in this app",
        ),
        Binding("d", "delete", "Delete", id="browser_delete", tooltip="Delete the selected batch (asks)"),
        Binding("f5", "reload", "Refresh", id="browser_refresh", tooltip="Read the output dir again"),
    ]

    def __init__(self, output_dir: Path) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.rows: list[BatchSummary] = []

    def compose(self) -> ComposeResult:
        yield Static(id="browser-title")
        yield DataTable(id="batches", cursor_type="row", zebra_stripes=True)
        yield Static(id="browser-empty")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#batches", DataTable)
        table.add_columns("Batch", "State", "Engine", "Progress", "Done", "Failed", "Created", "Updated", "Name")
        self.query_one("#browser-title", Static).update(plain(f"Batches in {self.output_dir}"))
        self.action_reload()
        if host(self).watch_files:
            self.set_interval(2.0, self.action_reload)
        table.focus()

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="browser-load", name="reading the batches", exit_on_error=False)
    def _load(self) -> None:
        now = host(self).clock()
        rows = [summarize(b, now=now) for b in iter_batches(self.output_dir)]
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[BatchSummary]) -> None:
        table = self.query_one("#batches", DataTable)
        keep = self.selected_id
        table.clear()  # a few hundred rows at most: rebuilding is simpler than diffing
        warning = self.app.theme_variables.get("warning", "yellow")  # the theme's, as .tcss would
        for r in rows:
            c: Counts = r.totals
            table.add_row(
                Text(r.batch_id),
                Text(r.state, style="bold"),
                Text(engine_label(r), style=f"bold {warning}" if r.stale else ""),
                Text(f"{progress_bar(c.percent)} {c.percent:5.1f}%"),
                Text(f"{c.finished:,}/{c.total:,}"),
                Text(f"{c.failed:,}"),
                Text(_local(r.created_at)),
                Text(_local(r.updated_at)),
                plain((r.error or "") if r.state == DAMAGED else r.name, limit=50),
                key=r.batch_id,
            )
        self.rows = rows
        empty = self.query_one("#browser-empty", Static)
        empty.display = not rows
        empty.update(
            plain(
                f"No batches in {self.output_dir} yet. Start one with `batchtui run SOURCE --cmd ...` or"
                " `batchtui demo`."
            )
        )
        if keep is not None:
            for index, r in enumerate(rows):
                if r.batch_id == keep:
                    table.move_cursor(row=index, animate=False)
                    break
        self.refresh_bindings()

    @property
    def selected(self) -> BatchSummary | None:
        table = self.query_one("#batches", DataTable)
        if not self.rows or table.cursor_row is None or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    @property
    def selected_id(self) -> str | None:
        row = self.selected
        return row.batch_id if row else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        row = self.selected if self.is_mounted else None
        if action == "resume":
            return True if row and row.resumable else None
        if action == "delete":
            return True if row and not row.engine else None
        if action == "open":
            return True if row else None
        return True

    @on(DataTable.RowHighlighted, "#batches")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected, "#batches")
    def _selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        row = self.selected
        if row is None or row.state == DAMAGED:
            return
        host(self).open_batch(self.output_dir / row.batch_id)

    def action_resume(self) -> None:
        row = self.selected
        if row is None or not row.resumable:
            self.notify("this batch has nothing to resume or an engine runs it", severity="warning")
            return
        host(self).resume_batch(self.output_dir / row.batch_id)

    def action_delete(self) -> None:
        row = self.selected
        if row is None or row.engine:
            return
        path = self.output_dir / row.batch_id

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            if engine_alive(path) is not None:
                self.notify("an engine started on it meanwhile; not deleted", severity="error")
                return
            if path.is_symlink():  # its batch lives elsewhere: never deleted through a link
                self.notify(f"{row.batch_id} is a symbolic link; not deleted", severity="error")
                return
            shutil.rmtree(path, ignore_errors=True)
            self.notify(f"deleted {row.batch_id}" if not path.exists() else f"could not delete all of {path}")
            self.action_reload()

        c: Counts = row.totals
        self.app.push_screen(
            ConfirmScreen(
                f"Delete batch {row.batch_id}?",
                f"{c.total:,} items, {c.complete:,} complete. Its results and logs go too; this cannot be undone.",
            ),
            confirmed,
        )
