"""The browser's columns: which fit a width (:func:`fit_columns`) and the text of each cell.

Kept apart from :mod:`.browser` (the screen) because this part is pure: a width and a
:class:`~batchtui.engine.summary.BatchSummary` in, widths and plain ``Text`` out, tested without
an app. Nothing of a batch is drawn as markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from batchtui.engine.fmt import bar_cells, clean, fmt_percent
from batchtui.engine.models import Counts
from batchtui.engine.summary import BatchSummary

from ..text import cut_middle
from ..widgets.batch_preview import age_of, state_text


def progress_bar(percent: float, width: int) -> str:
    filled = bar_cells(percent, width)
    return "█" * filled + "░" * (width - filled)


def engine_label(row: BatchSummary) -> str:
    """The Engine column: the lock holder's pid, and NOT RESPONDING when it stopped writing."""
    if row.engine is None:
        return ""
    return f"pid {row.engine.pid}" + (f" {row.engine.badge}" if row.engine.badge else "")


def _short(n: int) -> str:
    """``n`` in a few cells: ``950``, ``31.5k``, ``1M``, ``2.5G``; rounded down (a batch is never
    shown done when it is not)."""
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            tenths = n * 10 // size
            return f"{tenths // 10}{unit}" if tenths % 10 == 0 else f"{tenths // 10}.{tenths % 10}{unit}"
    return str(n)


def short_id(batch_id: str) -> str:
    """The 8-hex suffix of a batch id (what ``batchtui`` verbs accept as a short id)."""
    return batch_id.rsplit("_", 1)[-1]


def cut_end(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut at its end with an ellipsis."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return set_cell_size(text, width - 1).rstrip(" ") + "…"


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the browser: ``least`` cells or it is left out; it grows to ``comfort``
    cells, then (when every column has its comfort) to ``most``."""

    key: str
    label: str
    least: int
    comfort: int
    most: int


#: The columns in the order they are shown.
COLUMNS: tuple[Column, ...] = (
    Column("name", "Name", 14, 30, 40),
    Column("state", "State", 11, 22, 48),
    Column("progress", "Progress", 8, 8, 16),
    Column("done", "Done", 9, 11, 15),
    Column("failed", "Failed", 6, 6, 8),
    Column("age", "Updated", 10, 10, 10),
    Column("source", "Source", 16, 24, 48),
    Column("command", "Command", 16, 24, 48),
    Column("engine", "Engine", 9, 32, 40),  # last taken: it may have the room left whole
)
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}
#: Which columns stay as the width shrinks, the first kept longest (the name always).
PRIORITY: tuple[str, ...] = ("name", "state", "progress", "age", "failed", "source", "command", "done", "engine")
#: Cells around each cell (the table's cell padding, one each side).
PADDING = 2


def fit_columns(width: int, natural: Mapping[str, int] | None = None) -> dict[str, int]:
    """The columns that fit in ``width`` cells and their widths, in display order.

    Strictly by :data:`PRIORITY`: each column is taken at its comfortable width, or its least
    when that is all the room left, and the first that does not fit ends the list (a column
    of less priority never squeezes one of more: the name is never cut for a pid). The room
    left goes to the columns taken, in the same order, up to their most. The name is always
    there, cut to the width on a very narrow terminal.

    ``natural``: the cells each column's widest text takes (its label included); a column
    never gets more, and one whose natural width is 0 is left out (no engine in any row).
    """
    chosen: dict[str, int] = {}
    used = 0
    for key in PRIORITY:
        col = COLUMN_BY_KEY[key]
        need = col.most if natural is None else natural.get(key, col.most)
        if need <= 0 and key != "name":
            continue
        room = width - used - PADDING
        if room < min(col.least, need):
            break
        chosen[key] = min(col.comfort, need, room)
        used += chosen[key] + PADDING
    if not chosen:
        return {"name": max(1, width - PADDING)}
    spare = width - used
    for key in PRIORITY:
        if key in chosen and spare > 0:
            col = COLUMN_BY_KEY[key]
            most = col.most if natural is None else min(col.most, natural.get(key, col.most))
            grow = max(0, min(spare, most - chosen[key]))
            chosen[key] += grow
            spare -= grow
    return {c.key: chosen[c.key] for c in COLUMNS if c.key in chosen}


def cell_text(key: str, row: BatchSummary, width: int, now: float, warning: str, error: str) -> Text:
    """The text of one cell, cut to ``width`` (plain text: nothing of the batch is markup)."""
    c: Counts = row.totals
    unreadable = row.error is not None  # damaged, or its folder is gone
    if key == "name":
        sid = short_id(row.batch_id)
        name = clean(row.name)
        if not name or width < len(sid) + 4:
            return Text(cut_end(name or row.batch_id, width), no_wrap=True)
        text = Text(cut_end(name, width - len(sid) - 1) + " ", no_wrap=True)
        text.append(sid, style="dim")
        return text
    if key == "state":
        state = state_text(row.state, row.halt_reason, row.error)
        if row.engine is not None and row.stale:
            state += f" {row.engine.badge}"
        elif row.engine is not None and row.reading_source:  # still "created": what it does first
            doing = "waiting for source" if row.engine.waiting_for_source_s is not None else "reading source"
            state = f"{doing}, {row.totals.total:,} so far"
        colour = warning if row.stale else (error if unreadable or row.state in ("halted", "interrupted") else "")
        return Text(cut_end(clean(state), width), style=f"bold {colour}".strip())
    if unreadable:
        return Text("")
    if key == "progress":
        pct = fmt_percent(row.percent)
        room = width - len("100%") - 1
        return Text(f"{progress_bar(row.percent, room)} {pct:>4}" if room >= 3 else pct.rjust(width))
    if key == "done":
        whole = f"{c.finished:,}/{c.total:,}"
        short = f"{_short(c.finished)}/{_short(c.total)}"  # the total kept where the figures do not fit
        return Text(cut_end(whole if cell_len(whole) <= width else short, width))
    if key == "failed":
        return Text(f"{c.failed:,}", style=f"bold {error}" if c.failed else "")
    if key == "age":
        return Text(cut_end(age_of(row.updated_at, now), width))
    if key == "engine":
        return Text(cut_end(engine_label(row), width), style=f"bold {warning}" if row.stale else "")
    if key == "source":
        return Text(cut_middle(clean(row.source_text), width))
    if key == "command":
        return Text(cut_middle(clean(row.command), width))
    raise ValueError(f"no column {key!r}")
