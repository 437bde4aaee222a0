"""What the dashboard's items table shows: its tab (a status), its text filter and its error group.

The tabs name each status with its live count, and the active tab names the filter and the
group it shows, cut to the room the tabs leave (no tab runs off an 80-column screen).

:class:`ItemFilters` is a plain object the :class:`~.dashboard.DashboardScreen` owns: the screen
routes the tab, filter and error-group events here; this keeps the group chosen and sets the
table's filters from the three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from textual.content import Content
from textual.widgets import Input, Tab, Tabs

from batchtui.engine.fmt import clean
from batchtui.engine.models import Counts, ErrorGroup

from ..text import cut_middle
from ..widgets.errors_panel import ErrorsPanel, group_label
from ..widgets.event_log import EventLog
from ..widgets.items_table import ItemsTable
from ..widgets.labels import FigureTab

if TYPE_CHECKING:
    from .dashboard import DashboardScreen

#: The tabs: (id, label, the status it shows; None: all).
TABS: Final[tuple[tuple[str, str, str | None], ...]] = (
    ("tab-all", "1 All", None),
    # Handed out: running in a worker, queued behind them, or waiting out a retry's backoff (the
    # status line says how many of them run): "Running" counted the queued ones as running.
    ("tab-processing", "2 In flight", "processing"),
    ("tab-failed", "3 Failed", "failed"),
    ("tab-complete", "4 Complete", "complete"),
    ("tab-skipped", "5 Skipped", "skipped"),
)


class ItemFilters:
    """The tab, text filter and error group of one dashboard's items (see the module's docstring)."""

    def __init__(self, screen: DashboardScreen) -> None:
        self.screen = screen
        self.group: tuple[str, str] | None = None
        """The error group the items show: (id, label)."""
        self.shown: str | None = None
        """The tab whose items the table shows (its TabActivated may come a turn later)."""

    def chosen_group(self) -> tuple[str, str] | None:
        """The error group ``R`` acts on: the errors table's row when it has the focus, else the
        group the items are filtered to, else the errors table's row."""
        panel = self.screen.query_one(ErrorsPanel)
        under = panel.cursor_group()
        if under is not None and panel.has_focus_within:
            return under[0], group_label(under[1])
        if self.group is not None:
            return self.group
        return None if under is None else (under[0], group_label(under[1]))

    def show_group(self, group_id: str, group: ErrorGroup) -> None:
        """Show the failed items of one error group (chosen in the errors table)."""
        screen = self.screen
        self.group = (group_id, group_label(group))
        tabs = screen.query_one("#tabs", Tabs)
        table = screen.query_one(ItemsTable)
        table.set_filter(status="failed", error_type=None, error_group=group_id, text=self.text())
        self.shown = "tab-failed"
        if tabs.active != "tab-failed":
            tabs.active = "tab-failed"  # its TabActivated keeps the group
        self.label_tabs()
        screen.set_focus(table)  # at once: keys typed ahead go to it (focus() waits a turn)
        screen.query_one(EventLog).write_event(clean(f"items filtered to group {group_id} ({self.group[1]})", 200))

    def show_tab(self, tab_id: str | None) -> None:
        """The tab ``tab_id`` became active: show its status (a group stays on the failed tab)."""
        status = {tab_id: st for tab_id, _label, st in TABS}.get(tab_id or "")
        if status != "failed":
            self.group = None
        group = self.group[0] if self.group is not None else None
        self.screen.query_one(ItemsTable).set_filter(
            status=status, error_type=None, error_group=group, text=self.text()
        )
        self.shown = tab_id
        self.label_tabs()

    def label_tabs(self) -> None:
        """Each tab with its count (the live counts), the active one with its filter or group."""
        screen = self.screen
        tabs = screen.query_one("#tabs", Tabs)
        live, manifest = screen.live, screen.manifest
        counts: Counts | None = live.counts if live is not None else manifest.totals if manifest else None
        if live is None and screen.reading is not None:  # its source is being read: all pending
            counts = Counts(total=screen.reading.items, pending=screen.reading.items)
        text = self.text()
        bases = {
            tab_id: label
            if counts is None
            else f"{label} {counts.total if status is None else getattr(counts, status, 0):,}"
            for tab_id, label, status in TABS
        }
        if (text or self.group is not None) and tabs.active in bases and counts is not None:
            # Filtered: the rows it leaves of the tab's items ("Failed 1/15"), not the tab's count
            # alone, read as the filter's.
            label, status = next((label, st) for tab_id, label, st in TABS if tab_id == tabs.active)
            of = counts.total if status is None else getattr(counts, status, 0)
            bases[tabs.active] = f"{label} {screen.query_one(ItemsTable).row_count:,}/{of:,}"
        # The active tab names its group and filter in the room the tabs leave (each tab is its
        # label with a cell of padding on each side, as wide as its widest figure so far): no tab
        # runs off an 80-column screen.
        shown_tabs = {tab.id: tab for tab in tabs.query(FigureTab)}
        taken = sum(
            shown_tabs[tab_id].cells_for(base) if tab_id in shown_tabs and tab_id != tabs.active else len(base) + 2
            for tab_id, base in bases.items()
        )
        room = (screen.size.width or screen.app.size.width) - taken - 1
        # The filter's text in what is left (half of it with a group), else none: the count
        # ("All 12/200") says a filter is on, and a tab must not run off the screen.
        width = min(16, (room // 2 if self.group is not None else room) - 4)
        filtered = f" · /{cut_middle(clean(text), width)}" if text and width >= 3 else ""
        group = ""
        if self.group is not None and (fits := min(40, room - len(filtered) - 3)) >= 6:  # type, message's start
            group = f" · {clean(self.group[1], fits)}"
        for tab_id, _label, _status in TABS:
            shown = bases[tab_id] + (group + filtered if tab_id == tabs.active else "")
            try:
                tab = tabs.query_one(f"#{tab_id}", Tab)
            except Exception:
                continue
            if tab.label_text != shown:
                tab.label = Content(shown)  # Content: never parsed as markup (a filter may hold [)

    def text(self) -> str | None:
        """The text filter (None: none)."""
        value = self.screen.query_one("#filter", Input).value.strip()
        return value or None

    def apply_text(self, value: str) -> None:
        """The filter field was submitted: show the items whose key or error holds ``value``."""
        table = self.screen.query_one(ItemsTable)
        table.set_filter(text=value.strip() or None)
        self.label_tabs()
        self.screen.set_focus(table)  # at once: keys typed ahead go to it (focus() waits a turn)

    def open_field(self) -> None:
        """Show the filter field and type into it."""
        field = self.screen.query_one("#filter", Input)
        field.display = True
        # At once, not a turn later as focus() does: keys typed right after "/" (a burst from
        # the terminal) are the filter's text, not dashboard keys ("/retry" must not retry).
        self.screen.set_focus(field)

    def clear(self) -> None:
        """Drop the text filter and the group (the tab stays), back to the table."""
        screen = self.screen
        table = screen.query_one(ItemsTable)
        field = screen.query_one("#filter", Input)
        field.value = ""
        field.display = False
        self.group = None
        table.set_filter(error_type=None, error_group=None, text=None)
        self.label_tabs()
        screen.set_focus(table)  # at once: keys typed ahead go to it (focus() waits a turn)
