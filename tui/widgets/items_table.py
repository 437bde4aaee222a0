"""The dashboard's items table: a virtual view over ``items.db``.

A ``ScrollView`` whose :meth:`ItemsTable.render_line` draws only the rows on screen, read from
the store a page at a time (at most :data:`MAX_PAGES` of :data:`PAGE_SIZE` rows kept), so a
1M-item batch costs the same as a 100-item one. Item keys and error messages are untrusted:
drawn as plain ``Segment`` text, every non-printable character escaped (:mod:`.items_rows`).

Its parts: the rows as drawn in :mod:`.items_rows`, the page cache and the connection in
:mod:`.items_pages`, the marks in :mod:`.items_marks`, the counting in :mod:`.items_counts`, the
messages in :mod:`.items_messages`. This module is the widget: its keys, filters, order and
cursor. A filter or order change drops the pages, recounts, resets the cursor and the scroll; a
count sizes the virtual height and clamps the cursor; a cursor move posts ``Highlighted``.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import ClassVar, Final, TypeAlias

from textual import events, on
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from batchtui.engine.store.queries import ORDERS, ItemFilter, Selection

from ..flight import Flight
from .items_counts import ViewCounts
from .items_flights import FlightRows
from .items_marks import ItemMarks
from .items_messages import CountReady, Highlighted, MarksChanged, Selected
from .items_pages import MAX_PAGES, PAGE_SIZE, RowPages
from .items_rows import (
    COMPONENT_CLASSES,
    ITEMS_TABLE_CSS,
    MARK,
    SORT_BY_COLUMN,
    Paint,
    Row,
    column_at,
    draw_message,
    draw_row,
    make_paint,
)

__all__ = ["MARK", "MAX_PAGES", "PAGE_SIZE", "ItemsTable"]


class _Keep(enum.Enum):
    KEEP = enum.auto()


_KEEP: Final = _Keep.KEEP


class ItemsTable(ScrollView, can_focus=True):
    """The items of one batch, read page by page from its ``items.db``.

    Line 0 is a fixed header; line ``1 + i`` shows row ``scroll_y + i`` of the filtered view
    (rows in :attr:`order`). ``virtual_size.height`` is :attr:`row_count` plus the header line.

    Marks are a :class:`~batchtui.engine.store.queries.Selection` (views and seq ranges, never
    a set of rows): marking every item of a 300k-item view adds one filter. Which rows on screen
    are marked is one query per paint; how many are marked is counted with the view's count.
    """

    DEFAULT_CSS = ITEMS_TABLE_CSS

    COMPONENT_CLASSES: ClassVar[set[str]] = COMPONENT_CLASSES

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False, id="items_table.cursor_up", tooltip="Previous item"),
        Binding("down", "cursor_down", "Down", show=False, id="items_table.cursor_down", tooltip="Next item"),
        Binding("pageup", "page_up", "Page up", show=False, id="items_table.page_up", tooltip="One page up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="items_table.page_down", tooltip="One page down"),
        Binding("home", "cursor_home", "First", show=False, id="items_table.home", tooltip="First item"),
        Binding("end", "cursor_end", "Last", show=False, id="items_table.end", tooltip="Last item"),
        Binding("enter", "select", "Details", id="items_table.select", tooltip="Show the highlighted item"),
        Binding("space", "toggle_mark", "Mark", id="items_table.mark", tooltip="Mark or unmark the item, go down"),
        Binding(
            "shift+down", "extend_marks(1)", "Mark down", show=False, id="items_table.mark_down", tooltip="Mark a range"
        ),
        Binding(
            "shift+up", "extend_marks(-1)", "Mark up", show=False, id="items_table.mark_up", tooltip="Mark a range"
        ),
    ]

    Highlighted: TypeAlias = Highlighted
    Selected: TypeAlias = Selected
    MarksChanged: TypeAlias = MarksChanged

    cursor_row: reactive[int] = reactive(0, repaint=False, init=False)
    """Index of the highlighted row in the filtered view."""
    status: reactive[str | None] = reactive(None, repaint=False, init=False)
    """Show only items with this status (None: all)."""
    error_type: reactive[str | None] = reactive(None, repaint=False, init=False)
    """Show only items with this error type (None: all)."""
    text: reactive[str | None] = reactive(None, repaint=False, init=False)
    """Show only items whose key or error message contains this text (None: all)."""
    error_group: reactive[str | None] = reactive(None, repaint=False, init=False)
    """Show only items of this error group (its id; None: all)."""
    order: reactive[str] = reactive("seq", repaint=False, init=False)
    """The order of the rows: a key of :data:`~batchtui.engine.store.queries.ORDERS`."""
    empty_text = "no items yet"
    """What the table says with no row and no filter (the dashboard's word for a finished batch)."""

    def __init__(
        self,
        db_path: Path,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        """A table over the ``items.db`` at ``db_path``; the store is opened on mount."""
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.db_path = db_path
        self._in_flight = FlightRows()  # live_progress.json's, shown (show_flights)
        self._pages = RowPages(db_path, self._log_warning, self._in_flight.running_times)
        self._marks = ItemMarks(self._pages, self._log_warning, self._marks_changed)
        self._counts = ViewCounts(db_path, self._log_warning, lambda: self._marks.selection, self.post_message)
        self._count = 0
        self._paint: Paint | None = None

    def _log_warning(self, text: str) -> None:
        self.log.warning(text)  # looked up when called: there is no app yet in __init__

    def _marks_changed(self, selection: Selection, count: int) -> None:
        self.post_message(self.MarksChanged(self, selection, count))

    # -- public API ------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        """Rows in the current (filtered) view."""
        return self._count

    @property
    def page_misses(self) -> int:
        """Queries issued for pages so far (for tests and benchmarks)."""
        return self._pages.misses

    @property
    def cached_pages(self) -> int:
        """Pages held in the cache right now (at most :data:`MAX_PAGES`)."""
        return len(self._pages)

    @property
    def selected_seq(self) -> int | None:
        """The seq of the item under the cursor, or None when the view is empty."""
        row = self._row_at(self.cursor_row)
        return None if row is None else row.seq

    @property
    def selection(self) -> Selection:
        """The marked items (empty: none)."""
        return self._marks.selection

    @property
    def marked_count(self) -> int:
        """How many items the marks hold (as of the last count)."""
        return self._marks.count

    def set_selection(self, selection: Selection) -> None:
        """Replace the marks (counted at once, one query) and repaint; posts :class:`MarksChanged`."""
        self._marks.selection = selection
        self._marks.set_count(self._marks.count_of(selection), force=True)
        self.refresh()

    def clear_marks(self) -> bool:
        """Unmark everything; False when nothing was marked."""
        if self._marks.selection.is_empty:
            return False
        self.set_selection(Selection())
        return True

    def mark_view(self) -> None:
        """Mark every item of the current view (see :meth:`ItemMarks.with_view`)."""
        self.set_selection(self._marks.with_view(self.item_filter))

    def set_order(self, order: str) -> None:
        """Show the rows in ``order`` (a key of ``ORDERS``), from the top."""
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}")
        self.order = order

    def next_order(self) -> str:
        """Cycle seq -> duration (slowest first) -> tries (most first) -> seq; the new order."""
        names = list(ORDERS)
        self.order = names[(names.index(self.order) + 1) % len(names)]
        return self.order

    def set_filter(
        self,
        *,
        status: str | _Keep | None = _KEEP,
        error_type: str | _Keep | None = _KEEP,
        text: str | _Keep | None = _KEEP,
        error_group: str | _Keep | None = _KEEP,
    ) -> None:
        """Change any of the filters (omitted ones are kept; None clears one) in a single recount.

        Recounts, scrolls back to the top, moves the cursor to the first row, drops the cache
        and repaints; posts :class:`Highlighted` for the new first row.
        """
        if not isinstance(status, _Keep):
            self.set_reactive(ItemsTable.status, status or None)
        if not isinstance(error_type, _Keep):
            self.set_reactive(ItemsTable.error_type, error_type or None)
        if not isinstance(text, _Keep):
            self.set_reactive(ItemsTable.text, text or None)
        if not isinstance(error_group, _Keep):
            self.set_reactive(ItemsTable.error_group, error_group or None)
        self._apply_filter()

    def refresh_data(self) -> None:
        """Pick up changes in ``items.db`` (call when live progress changes).

        Cheap on a 1M-row store: the unfiltered count is one index lookup, the page cache is
        dropped (rows are re-read only for the pages on screen, one query each), and a filtered
        count known to be slow runs in a worker thread on its own connection.
        """
        if self._pages.store is None and not self._pages.open():
            return
        seq = self.selected_seq
        count, pages = self._count, self._pages.snapshot()
        self._pages.clear()
        if self._is_filtered and self._counts.is_slow:
            self._count_in_background()
            self.refresh()
            return
        self._recount()
        # Repainted only when the rows on screen changed: a repaint of the table costs the
        # engine in this app's thread its time (GIL), 4 times a second while the rows at the
        # top are long done (issue 19, point 6).
        on_screen = (int(self.scroll_y), self.size.height, self._count)
        if self._pages.changed(pages, *on_screen, self.item_filter, self.order) or count != self._count:
            self.refresh()
            self._follow(seq)

    def _follow(self, seq: int | None) -> None:
        """Keep the cursor on item ``seq`` when rows above it came or went (in flight, items
        leave the view 4 times a second): a key then acts on the item the operator chose, not on
        one that slid under the cursor. One that left the view leaves the cursor on the next."""
        if seq is not None and self.selected_seq != seq and (index := self._pages.index_of(seq)) is not None:
            self.cursor_row = index

    def show_flights(self, flights: dict[int, Flight], now: float, *, reread: bool = True, engine: bool = True) -> None:
        """Show the items in flight as they are at ``now`` (running on try N for so long, or
        queued), not as the store's 'processing'; repaints only the lines on screen that
        changed (a running item's time: once a second). Sorted slowest first, the running
        items' places move with their times: the rows are read again (``reread`` False: the
        caller does it, :meth:`refresh_data`). ``engine`` False: no engine runs the batch."""
        listed = self._in_flight.listed
        if self._in_flight.set(flights, now, engine) and reread and self.order == "duration":
            self.refresh_data()
        elif reread and self.status == "processing" and self._in_flight.listed != listed:
            self.refresh_data()  # the In flight tab lists what is in flight: it changed
        top = int(self.scroll_y)
        rows = range(top, min(top + self._body_height, self._count)) if flights else ()
        for index in self._in_flight.changed_lines((index, self._row_at(index)) for index in rows):
            self.refresh_line(index + 1)  # the header is line 0

    # -- reactives -------------------------------------------------------------------------

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, self._count - 1))

    def watch_cursor_row(self, old: int, new: int) -> None:
        self.refresh_line(old + 1)
        self.refresh_line(new + 1)
        self._scroll_cursor_into_view()
        self.post_message(self.Highlighted(self, self.selected_seq))

    def watch_status(self) -> None:
        self._apply_filter()

    watch_error_type = watch_text = watch_error_group = watch_status

    def watch_order(self) -> None:
        self._paint = None  # the header shows the order
        self._apply_filter()

    # -- actions ---------------------------------------------------------------------------

    def action_cursor_up(self) -> None:
        """Move the cursor one row up."""
        self.cursor_row -= 1

    def action_cursor_down(self) -> None:
        """Move the cursor one row down."""
        self.cursor_row += 1

    def action_page_down(self) -> None:
        """Scroll one page down, the cursor keeping its place on screen."""
        page = self._body_height
        self.scroll_to(y=self.scroll_y + page, animate=False)
        self.cursor_row += page

    def action_page_up(self) -> None:
        """Scroll one page up, the cursor keeping its place on screen."""
        page = self._body_height
        self.scroll_to(y=self.scroll_y - page, animate=False)
        self.cursor_row -= page

    def action_cursor_home(self) -> None:
        """Go to the first row."""
        self.scroll_to(y=0, animate=False)
        self.cursor_row = 0

    def action_cursor_end(self) -> None:
        """Go to the last row."""
        self.cursor_row = self._count - 1

    def action_select(self) -> None:
        """Post :class:`Selected` for the row under the cursor."""
        seq = self.selected_seq
        if seq is not None:
            self.post_message(self.Selected(self, seq))

    def action_toggle_mark(self) -> None:
        """Mark or unmark the row under the cursor, then go down (as in mc, k9s)."""
        seq = self.selected_seq
        if seq is None:
            return
        self.set_selection(self._marks.selection.toggle(seq, self._marks.is_marked(seq)))
        self.cursor_row += 1

    def action_extend_marks(self, step: int) -> None:
        """Shift+down / shift+up: mark the row under the cursor and the next one (a range grows
        one row at a time, in the order shown)."""
        seq = self.selected_seq
        if seq is None:
            return
        selection = self._marks.selection.mark(seq)
        self.cursor_row += step
        after = self.selected_seq
        if after is not None:
            selection = selection.mark(after)
        self.set_selection(selection)

    # -- events ----------------------------------------------------------------------------

    def _on_mount(self, event: events.Mount) -> None:
        self._pages.open()
        self._recount()

    def _on_unmount(self) -> None:
        self._pages.close()

    def _on_resize(self, event: events.Resize) -> None:
        self._paint = None
        self._scroll_cursor_into_view()

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:  # the header: a click on seq, tries or duration sorts by it
            column = column_at(self._paint_context().widths, offset.x)
            if column in SORT_BY_COLUMN:
                event.stop()
                self.set_order(SORT_BY_COLUMN[column])
            return
        row = int(self.scroll_y) + offset.y - 1
        if row >= self._count:
            return
        event.stop()
        if row == self.cursor_row:
            self.action_select()
        else:
            self.cursor_row = row

    @on(CountReady)
    def _count_ready(self, message: CountReady) -> None:
        count, again = self._counts.end(message)
        if count is not None:
            self._set_count(count)
            if message.marked is not None:
                self._marks.set_count(message.marked)
            self.refresh()
        if again:
            self._count_in_background()

    # -- rendering -------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        """Paint ``crop``: styles and column widths are worked out once per paint, not per line."""
        self._paint = None  # Textual also drops its component-style cache on every refresh
        first = int(self.scroll_y) + max(0, crop.y - 1)
        rows = range(first, min(first + crop.height, self._count))
        self._marks.on_screen = self._marks.among_rows(self._row_at(i) for i in rows)  # one query a paint
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the widget: the header at 0, then row ``scroll_y + y - 1``."""
        paint = self._paint_context()
        if y == 0:
            return paint.header_strip
        index = int(self.scroll_y) + y - 1
        if index >= self._count:
            return self._message_line(paint) if index == 0 else Strip.blank(paint.width, paint.base)
        row = self._row_at(index)
        if row is None:  # the store shrank or could not be read: drawn on the next refresh
            return Strip.blank(paint.width, paint.base)
        row = self._in_flight.row(row)
        return draw_row(paint, row, on_cursor=index == self.cursor_row, marked=row.seq in self._marks.on_screen)

    def _message_line(self, paint: Paint) -> Strip:
        if self._pages.store is None:
            return draw_message(paint, f"items.db unavailable: {self._pages.store_error or 'not open'}")
        return draw_message(paint, "no items match" if self._is_filtered else self.empty_text)

    def _paint_context(self) -> Paint:
        if self._paint is None:
            self._paint = make_paint(
                self.size.width,
                self.scrollable_content_region.width,  # the scrollbar is drawn over the rest
                self._counts.total,
                self.order,
                failed=self.status == "failed",
                base=self.rich_style,
                component=lambda name: self.get_component_rich_style(f"items-table--{name}", partial=True),
            )
        return self._paint

    # -- data ------------------------------------------------------------------------------

    @property
    def _is_filtered(self) -> bool:
        return bool(self.status or self.error_type or self.text or self.error_group)

    @property
    def item_filter(self) -> ItemFilter:
        """The items this view shows, as the store's filter (what a bulk action applies to)."""
        status, seqs = self.status, None
        if status == "processing" and (listed := self._in_flight.listed) is not None:  # (FlightRows.listed)
            status, seqs = None, listed  # those handed out since a commit are 'pending' rows
        return ItemFilter(
            status=status, error_type=self.error_type, text=self.text, error_group=self.error_group, seqs=seqs
        )

    @property
    def _body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _row_at(self, index: int) -> Row | None:
        if index < 0 or index >= self._count:
            return None
        return self._pages.row(index, self.item_filter, self.order)

    def _recount(self) -> None:
        if self._pages.store is None:
            self._set_count(0)
            return
        counted = self._counts.now(self._pages.store, self.item_filter, self._marks.selection)
        if counted is not None:
            self._set_count(counted[0])
            self._marks.set_count(counted[1])

    def _count_in_background(self) -> None:
        work = self._counts.background(self.item_filter, self._marks.selection)
        if work is not None:
            self.run_worker(work, name="items-table count", group="items-table-count", thread=True, exit_on_error=False)

    def _set_count(self, count: int) -> None:
        if count != self._count or self.virtual_size.height != count + 1:
            self._count = count
            self._paint = None  # the scrollbar may come or go
            self.virtual_size = Size(0, count + 1)  # + the header line
        clamped = max(0, min(self.cursor_row, count - 1))
        if clamped != self.cursor_row:
            self.set_reactive(ItemsTable.cursor_row, clamped)

    def _apply_filter(self) -> None:
        self._counts.generation += 1
        self._pages.clear()
        if not self.is_mounted:  # _on_mount counts with whatever filters are set by then
            return
        if self._pages.store is None and not self._pages.open():
            return
        self._recount()
        self.scroll_to(y=0, animate=False)
        self.set_reactive(ItemsTable.cursor_row, 0)
        self.refresh()
        self.post_message(self.Highlighted(self, self.selected_seq))

    def _scroll_cursor_into_view(self) -> None:
        body = self._body_height
        top = round(self.scroll_y)
        row = self.cursor_row
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + body:
            self.scroll_to(y=row - body + 1, animate=False)
