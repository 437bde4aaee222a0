"""The dashboard's errors table: one row per error group (a type and a normalized message), with
its category, count and message. A type with one message is one row; a type with several shows
each, so "disk full" and "permission denied" of the same ``exit 1`` are two rows to act on."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import var
from textual.widgets import DataTable, Static

from batchtui.engine.adaptive import timeout_text
from batchtui.engine.errors import group_id
from batchtui.engine.fmt import count as plural
from batchtui.engine.models import ErrorGroup, LiveProgress

from ..text import plain
from .labels import set_text

__all__ = ["ErrorsPanel", "group_label", "row_key_at_cursor"]


def _id(group: ErrorGroup) -> str:
    # A live_progress.json of an older engine has no ids: the same function gives the same id.
    return group.id or group_id(group.error_type, group.message)


def group_label(group: ErrorGroup) -> str:
    """``type: message`` of a group, for a line that names it (the tab, a dialog)."""
    message = group.message or group.example_message
    return f"{group.error_type}: {message}" if message else group.error_type


def row_key_at_cursor(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor of ``table`` (None when empty)."""
    if table.row_count == 0:
        return None
    try:
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
    except Exception:
        return None


class ErrorsPanel(Vertical):
    """The error groups of live_progress.json. Choosing a row posts :class:`GroupChosen`; the
    cursor stays on its group when the table is redrawn."""

    class GroupChosen(Message):
        """Enter on a group: show its failed items."""

        def __init__(self, group: ErrorGroup, group_id: str) -> None:
            self.group = group
            self.group_id = group_id
            super().__init__()

    DEFAULT_CSS = """
    ErrorsPanel { border-left: tall $panel; }
    ErrorsPanel:focus-within { border-left: tall $accent; }
    """

    live: var[LiveProgress | None] = var(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[tuple[str, str, str, int, str]] = []
        self._groups: dict[str, ErrorGroup] = {}
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static("Errors", classes="box-title", id="errors-title")
        yield DataTable(id="errors", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#errors", DataTable)
        for label in ("Type", "Category", "Count", "Message"):
            table.add_column(label, key=label.lower())
        self._ready = True
        self.redraw()

    def watch_live(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        live = self.live
        if live is None or not self._ready:
            return
        # The timeout in force (an adaptive one follows the median success) rides on the
        # title: the counts row that also says it is hidden on a terminal under 30 rows.
        groups = {_id(g): g for g in live.error_groups}
        # How many groups there are: a short terminal shows three rows of them, and the ones
        # below must not pass for none.
        title = Text("Errors")
        if groups:
            title.append(f"  {plural(len(groups), 'group')}")
        if live.timeout is not None:
            title.append(f"  {timeout_text(live.timeout, short=True)}", style="dim")
        set_text(self.query_one("#errors-title", Static), title)
        rows = [(gid, g.error_type, g.category, g.count, g.message or g.example_message) for gid, g in groups.items()]
        if rows == self._rows:
            return
        table = self.query_one("#errors", DataTable)
        keep = row_key_at_cursor(table)
        table.clear()
        for key, etype, category, count, message in rows:
            table.add_row(plain(etype), plain(category), Text(f"{count:,}"), plain(message, limit=200), key=key)
        self._rows, self._groups = rows, groups
        if keep is not None:
            for index, row in enumerate(rows):
                if row[0] == keep:
                    table.move_cursor(row=index, animate=False)
                    break

    def cursor_group(self) -> tuple[str, ErrorGroup] | None:
        """(id, group) under the cursor (None when there are no errors)."""
        key = row_key_at_cursor(self.query_one("#errors", DataTable))
        group = self._groups.get(key) if key else None
        return None if key is None or group is None else (key, group)

    def group(self, group_id: str) -> ErrorGroup | None:
        """The group with this id, as last shown (None: not among them)."""
        return self._groups.get(group_id)

    def focus_table(self) -> None:
        """Give the focus to the errors table (the ``e`` key)."""
        # Screen.set_focus, not focus(): that waits a turn, and keys typed ahead ("e", down,
        # enter in one burst over SSH) would still go to the items table.
        self.screen.set_focus(self.query_one("#errors", DataTable))

    @on(DataTable.RowSelected, "#errors")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = str(event.row_key.value)
        group = self._groups.get(key)
        if group is not None:
            self.post_message(self.GroupChosen(group, key))
