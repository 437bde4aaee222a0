"""The dashboard's errors table: one row per error type and message, with a count and an example."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import DataTable, Static

from batchtui.engine.models import LiveProgress

from ..messages import ErrorTypeChosen
from ..text import plain

__all__ = ["ErrorsPanel", "row_key_at_cursor"]


def row_key_at_cursor(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor of ``table`` (None when empty)."""
    if table.row_count == 0:
        return None
    try:
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
    except Exception:
        return None


class ErrorsPanel(Vertical):
    """The error groups of live_progress.json. Choosing a row posts :class:`ErrorTypeChosen`;
    the cursor stays on its group when the table is redrawn."""

    live: var[LiveProgress | None] = var(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[tuple[str, str, str, int, str]] = []
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static("Errors", classes="box-title")
        yield DataTable(id="errors", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#errors", DataTable)
        for label in ("Type", "Category", "Count", "Example"):
            table.add_column(label, key=label.lower())
        self._ready = True
        self.redraw()

    def watch_live(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        live = self.live
        if live is None or not self._ready:
            return
        rows = [
            (f"{g.error_type}\x00{g.message}", g.error_type, g.category, g.count, g.example_message)
            for g in live.error_groups
        ]
        if rows == self._rows:
            return
        table = self.query_one("#errors", DataTable)
        keep = row_key_at_cursor(table)
        table.clear()
        for key, etype, category, count, example in rows:
            table.add_row(plain(etype), plain(category), Text(f"{count:,}"), plain(example, limit=200), key=key)
        self._rows = rows
        if keep is not None:
            for index, row in enumerate(rows):
                if row[0] == keep:
                    table.move_cursor(row=index, animate=False)
                    break

    def focused_error_type(self) -> str | None:
        """The error type under the cursor, when the table has the focus."""
        table = self.query_one("#errors", DataTable)
        if table.has_focus and table.row_count:
            key = row_key_at_cursor(table)
            if key:
                return key.split("\x00", 1)[0]
        return None

    @on(DataTable.RowSelected, "#errors")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(ErrorTypeChosen(str(event.row_key.value).split("\x00", 1)[0]))
