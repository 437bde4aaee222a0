"""The dashboard's errors table: one row per error group (a type and a normalized message), with
its category, count and message. A type with one message is one row; a type with several shows
each, so "disk full" and "permission denied" of the same ``exit 1`` are two rows to act on.

live_progress.json carries only the biggest groups (engine/publish.py LIVE_ERROR_GROUPS) and how
many there are (``error_groups_total``). When there are more, the panel reads them from items.db
(read-only, off the UI thread, one read at a time), so every group has a row to scroll to, to
filter the items by and to retry with ``R``; past :data:`MOST_ROWS` the title says how many are
not listed and where they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Final

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import var
from textual.widgets import DataTable, Static

from batchtui.engine.adaptive import timeout_text
from batchtui.engine.fmt import count as plural
from batchtui.engine.fmt import error_line
from batchtui.engine.grouping import group_id
from batchtui.engine.models import ErrorGroup, LiveProgress
from batchtui.engine.store.queries import ItemQueries, StoreError

from ..text import plain
from .labels import set_text

__all__ = ["MOST_ROWS", "ErrorsPanel", "ErrorsTable", "group_label", "row_key_at_cursor"]

#: The most groups the table lists (a DataTable holds its rows; `batchtui errors` lists them all).
MOST_ROWS: Final = 500


def _id(group: ErrorGroup) -> str:
    # A live_progress.json of an older engine has no ids: the same function gives the same id.
    return group.id or group_id(group.error_type, group.message)


def group_label(group: ErrorGroup) -> str:
    """``type: message`` of a group, for a line that names it (the tab, a dialog)."""
    return error_line(group.error_type, group.message or group.example_message)


class ErrorsTable(DataTable[Any]):
    """The error groups' table: Home and End go to the first and the last group, as in the
    items table (a DataTable's own scroll sideways, which showed nothing here)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First", id="errors_first", show=False, tooltip="The first error group"),
        Binding("end", "scroll_bottom", "Last", id="errors_last", show=False, tooltip="The last error group"),
    ]


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

    class _StoredGroups(Message):
        """The groups read from items.db (``groups`` None: it could not be read), for the
        failures ``seen`` (failed count, groups)."""

        def __init__(self, seen: tuple[int, int], groups: list[ErrorGroup] | None) -> None:
            self.seen = seen
            self.groups = groups
            super().__init__()

    DEFAULT_CSS = """
    ErrorsPanel { border-left: tall $panel; }
    ErrorsPanel:focus-within { border-left: tall $accent; }
    """

    live: var[LiveProgress | None] = var(None)

    def __init__(self, items_db: Path | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._items_db = items_db
        self._rows: list[tuple[str, str, str, int, str]] = []
        self._groups: dict[str, ErrorGroup] = {}
        self._ready = False
        #: Every group (up to MOST_ROWS), read from items.db when the live file holds fewer than
        #: there are; the failures they were read for; whether a read is under way.
        self._stored: list[ErrorGroup] | None = None
        self._stored_for: tuple[int, int] | None = None
        self._reading = False

    def compose(self) -> ComposeResult:
        yield Static("Errors", classes="box-title", id="errors-title")
        yield ErrorsTable(id="errors", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#errors", DataTable)
        for label in ("Type", "Category", "Count", "Message"):
            table.add_column(label, key=label.lower())
        self._ready = True
        self.redraw()

    def watch_live(self) -> None:
        self._read_if_due()
        self.redraw()

    def _more_than_live(self) -> tuple[int, int] | None:
        """(failed, groups) when there are more groups than live_progress.json carries."""
        live = self.live
        if live is None or self._items_db is None:
            return None
        total = live.error_groups_total
        return None if total is None or total <= len(live.error_groups) else (live.counts.failed, total)

    def _read_if_due(self) -> None:
        """Read every group from items.db if the failures changed since the last read."""
        seen = self._more_than_live()
        if seen is None:
            self._stored = self._stored_for = None
            return
        if self._reading or seen == self._stored_for:
            return
        self._reading = True
        path = self._items_db
        assert path is not None

        def read() -> None:
            try:
                with ItemQueries(path) as store:
                    groups: list[ErrorGroup] | None = store.error_groups(MOST_ROWS)
            except StoreError:
                groups = None  # the live file's groups stay shown
            self.post_message(self._StoredGroups(seen, groups))

        self.run_worker(read, name="error groups", group="error-groups", thread=True, exit_on_error=False)

    @on(_StoredGroups)
    def _stored_groups(self, message: _StoredGroups) -> None:
        self._reading = False
        self._stored_for = message.seen
        if message.groups is not None:
            self._stored = message.groups
        if self._more_than_live() is None:
            self._stored = None  # a retry left no more groups than the live file holds
        self.redraw()
        self._read_if_due()  # the failures moved on while it read

    def redraw(self) -> None:
        live = self.live
        if live is None or not self._ready:
            return
        # The timeout in force (an adaptive one follows the median success) rides on the
        # title: the counts row that also says it is hidden on a terminal under 30 rows.
        listed = live.error_groups if self._stored is None else self._stored
        groups = {_id(g): g for g in listed}
        # How many groups there are: a short terminal shows three rows of them, and the ones
        # below must not pass for none; those not listed say where they are.
        total = len(groups) if self._stored is not None and len(groups) < MOST_ROWS else live.error_groups_total
        total = max(total or 0, len(groups))
        title = Text("Errors")
        if total:
            title.append(f"  {plural(total, 'group')}")
        if total > len(groups):
            title.append(f" ({len(groups):,} listed: batchtui errors {live.batch_id})", style="dim")
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
