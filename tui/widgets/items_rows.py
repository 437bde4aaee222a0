"""The items table's rows as drawn: the row model, the column layout and the drawing of a line.

Pure: an item of the store in, a :class:`Row` of safe text out (every non-printable character
escaped by :func:`batchtui.engine.fmt.clean`, the one sanitizer); column widths from the width
and the view; a line as ``Segment`` text (never parsed as markup). The widget
(:mod:`.items_table`) decides which row goes on which line and with which styles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from batchtui.engine.fmt import clean, error_line, fmt_duration
from batchtui.engine.store.queries import ItemRow, shown_duration

from ..flight import Flight
from ..text import cap_middle, cut_middle

TEXT_CAP: Final = 1024
"""Key and error text kept per cached row; wider than any terminal column."""
_STATUS_WIDTH: Final = 10  # "processing"
_TRIES_WIDTH: Final = 6  # "tries↓"
_DURATION_WIDTH: Final = 9  # "duration↓"
_MIN_KEY_WIDTH: Final = 12
_MARK_WIDTH: Final = 1
MARK: Final = "●"
"""Drawn in the first column of a marked row."""
#: The column a click on the header sorts by (the others keep the order).
SORT_BY_COLUMN: Final = {1: "seq", 3: "tries", 4: "duration"}
ORDER_ARROW: Final = {"seq": "↑", "tries": "↓", "duration": "↓"}
STATUSES: Final = frozenset({"pending", "processing", "complete", "failed", "skipped"})
HEADER: Final = ("", "seq", "status", "tries", "duration", "key", "error")
COMPONENT_CLASSES: Final = {f"items-table--{name}" for name in ("header", "cursor", *STATUSES, "message", "marked")}
"""The table's component classes, each a style of :func:`make_paint`:

| Class | Description |
| :- | :- |
| `items-table--header` | The fixed header line. |
| `items-table--cursor` | The highlighted row (`ItemsTable:focus > …` when focused). |
| `items-table--pending` … `items-table--skipped` | Status column (and error column) per status. |
| `items-table--message` | "no items" / "items.db unavailable" line. |
| `items-table--marked` | Added to a marked row (its first column shows ●). |
"""
#: The table's look: a component class for each part of a line (the paint reads them).
ITEMS_TABLE_CSS: Final = """
ItemsTable {
    width: 1fr;
    height: 1fr;
    overflow-x: hidden;
    overflow-y: auto;
    background: $surface;
    color: $foreground;
    border-left: tall $panel;  /* $accent when focused: where the keys go */
}
ItemsTable:focus {
    background-tint: $foreground 5%;
    border-left: tall $accent;
}
ItemsTable > .items-table--header {
    background: $panel;
    color: $foreground;
    text-style: bold;
}
ItemsTable > .items-table--cursor {
    background: $block-cursor-blurred-background;
    color: $block-cursor-blurred-foreground;
    text-style: $block-cursor-blurred-text-style;
}
ItemsTable:focus > .items-table--cursor {
    background: $block-cursor-background;
    color: $block-cursor-foreground;
    text-style: $block-cursor-text-style;
}
ItemsTable > .items-table--pending { color: $text-muted; }
ItemsTable > .items-table--processing { color: $warning; }
ItemsTable > .items-table--complete { color: $success; }
ItemsTable > .items-table--failed { color: $error; }
ItemsTable > .items-table--skipped { color: $text-disabled; }
ItemsTable > .items-table--message { color: $text-muted; text-style: italic; }
ItemsTable > .items-table--marked { background: $accent-muted; text-style: bold; }
"""
_RIGHT_ALIGNED: Final = (False, True, False, True, True, False, False)
_MIDDLE_CUT: Final = (False, False, False, False, False, True, False)


def fit(text: str, width: int, *, right: bool = False, middle: bool = False) -> str:
    """Pad or truncate ``text`` to exactly ``width`` cells; an ellipsis marks truncation (in the
    middle with ``middle``: a key's end tells rows apart)."""
    if width <= 0:
        return ""
    length = cell_len(text)
    if length > width:
        if middle:
            return set_cell_size(cut_middle(text, width), width)
        return set_cell_size(text, width - 1) + "…"
    pad = " " * (width - length)
    return pad + text if right else text + pad


@dataclass(frozen=True, slots=True)
class Row:
    """One row as drawn: already formatted and made safe, so the cache stays small."""

    seq: int
    status: str
    tries: str
    duration: str
    key: str
    error: str

    @classmethod
    def from_item(cls, item: ItemRow) -> Row:
        error = error_line(item.error_type, item.error_message)
        return cls(
            seq=item.seq,
            status=clean(item.status, 32),
            tries=str(item.attempts) if item.attempts else "",
            duration=""
            if (shown := shown_duration(item.status, item.duration_s)) is None
            else fmt_duration(shown, fine=True),
            key=cap_middle(item.key, TEXT_CAP),  # start and end: the column keeps the end
            error=clean(error, TEXT_CAP),
        )


def in_flight(row: Row, flight: Flight, now: float) -> Row:
    """``row`` of an item the store says is 'processing' as it is now (``flight``): running,
    with the try it is on and how long it has run at ``now``, or queued (handed out, not
    started: its tries are the finished ones, it has no duration yet). The time is as fine as a
    finished item's (``350ms``, ``4.2s``): "slowest first" puts a running item among them by it."""
    if flight.queued:
        return replace(row, status="queued", duration="")
    running = fmt_duration(flight.running_s(now), fine=True)
    return replace(row, status="running", tries=str(flight.attempt), duration=running)


@dataclass(slots=True)
class Paint:
    """What every line of one paint shares."""

    width: int  # cells per line, the scrollbar's included
    widths: tuple[int, ...]  # the seven columns (the mark first)
    used: int  # cells the columns and their separators take
    base: Style
    cursor: Style
    status: dict[str, tuple[Style, Style]]  # status -> (style, style under the cursor)
    message: Style
    marked: Style  # added to a marked row's style
    header_strip: Strip


def column_widths(content_width: int, total: int, *, failed: bool) -> tuple[tuple[int, ...], int]:
    """The seven columns' widths (the mark first) in ``content_width`` cells for a store of
    ``total`` rows, and the cells they take with their separators. The key and the error share
    what the fixed columns leave; in the failed items (``failed``) the error gets two thirds."""
    seq_width = max(4, len(str(max(total - 1, 0))))  # "seq" and the order's arrow
    fixed = 1 + _MARK_WIDTH + 1 + seq_width + 1 + _STATUS_WIDTH + 1 + _TRIES_WIDTH + 1 + _DURATION_WIDTH + 1 + 1
    rest = max(0, content_width - fixed)
    share = rest // 3 if failed else rest // 2
    key = max(min(rest, _MIN_KEY_WIDTH), share)
    return (_MARK_WIDTH, seq_width, _STATUS_WIDTH, _TRIES_WIDTH, _DURATION_WIDTH, key, rest - key), fixed + rest


def column_at(widths: tuple[int, ...], x: int) -> int | None:
    """The column under content offset ``x`` (None: a separator or past the last)."""
    left = 1
    for n, width in enumerate(widths):
        if left <= x < left + width:
            return n
        left += width + 1
    return None


def draw(paint: Paint, cells: tuple[str, ...], styles: tuple[Style, ...], fill: Style) -> Strip:
    """One line of ``paint.width`` cells: ``cells`` in their columns, each in its style."""
    space = Segment(" ", fill)
    segments = [space]
    for n, cell in enumerate(cells):
        if n:
            segments.append(space)
        segments.append(Segment(fit(cell, paint.widths[n], right=_RIGHT_ALIGNED[n], middle=_MIDDLE_CUT[n]), styles[n]))
    strip = Strip(segments, paint.used)
    if paint.used < paint.width:
        return Strip([*segments, Segment(" " * (paint.width - paint.used), fill)], paint.width)
    return strip.crop(0, paint.width) if paint.used > paint.width else strip


def make_paint(
    width: int,
    content_width: int,
    total: int,
    order: str,
    *,
    failed: bool,
    base: Style,
    component: Callable[[str], Style],
) -> Paint:
    """What every line of one paint shares: the columns in ``content_width`` of the ``width``
    cells (see :func:`column_widths`), the styles on ``base`` (``component`` gives the style of
    a component class by its name's end: "cursor", "failed"...), the header line for ``order``."""
    widths, used = column_widths(content_width, total, failed=failed)
    cursor = base + component("cursor")
    header = base + component("header")
    status = {name: (base + component(name), base + component(name) + component("cursor")) for name in STATUSES}
    status["running"], status["queued"] = status["processing"], status["pending"]  # in_flight's words
    message = base + component("message")
    paint = Paint(width, widths, used, base, cursor, status, message, component("marked"), Strip([]))
    # The column the rows are sorted by, when it is not seq, says so with an arrow.
    names = tuple(f"{name}{ORDER_ARROW[name]}" if name == order != "seq" else name for name in HEADER)
    paint.header_strip = draw(paint, names, (header,) * len(HEADER), header)
    return paint


def draw_row(paint: Paint, row: Row, *, on_cursor: bool, marked: bool) -> Strip:
    """The line of ``row``, under the cursor or not, marked or not (its status in its colour)."""
    row_style = paint.cursor if on_cursor else paint.base
    status_style = paint.status.get(row.status, (paint.base, paint.cursor))[on_cursor]
    if marked:
        row_style, status_style = row_style + paint.marked, status_style + paint.marked
    cells = (MARK if marked else "", str(row.seq), row.status, row.tries, row.duration, row.key, row.error)
    styles = (row_style, row_style, status_style, row_style, row_style, row_style, status_style)
    return draw(paint, cells, styles, row_style)


def draw_message(paint: Paint, text: str) -> Strip:
    """The line that says why no row is shown ("no items yet")."""
    return Strip([Segment(fit(f" {text}", paint.width), paint.message)], paint.width)
