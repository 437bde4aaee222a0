"""The dashboard's in-flight table: the items running now (longest-running first), their try and
for how long, then those queued behind them."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import DataTable, Static

from batchtui.engine.batchdir import parse_iso
from batchtui.engine.fmt import fmt_duration
from batchtui.engine.models import ACTIVE_STATES, LiveProgress

from ..text import cap_middle, cut_middle

__all__ = ["InFlightPanel"]


_COLUMNS = ("seq", "try", "running", "key")
#: The rows drawn before the table has a size (then: as many as it shows).
ROWS_UNSIZED = 32
#: A row left over when fewer items are in flight than rows (drawn empty).
_BLANK: tuple[int, str, int, str] = (-1, "", 0, "")


def _cells(row: tuple[int, str, int, str]) -> tuple[int, int, str, str]:
    """A row's values in the table's column order."""
    seq, key, attempt, running = row
    return seq, attempt, running, key


def _started(iso: str) -> float:
    try:
        return parse_iso(iso)
    except ValueError:
        return float("inf")


class InFlightPanel(Vertical):
    """The in-flight items of live_progress.json. Their running times follow ``clock`` (call
    :meth:`tick` every second); a row whose item did not change is updated in place."""

    live: var[LiveProgress | None] = var(None)

    def __init__(self, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self._rows: list[tuple[int, str, int, str]] = []
        #: The widest text each column has shown: a column is widened (and the screen laid out
        #: again) only for a wider one, never narrowed.
        self._widest: dict[str, int] = {}
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static("In flight", classes="box-title")
        yield DataTable(id="inflight", cursor_type="none")

    def on_mount(self) -> None:
        table = self.query_one("#inflight", DataTable)
        for label in ("Seq", "Try", "Running", "Key"):
            table.add_column(label, key=label.lower())
        self._ready = True
        self.tick()

    def watch_live(self) -> None:
        self.tick()

    def on_resize(self) -> None:
        # Shown again (the panel is hidden on a narrow terminal) or another height: the rows
        # that fit now, drawn anew.
        if self._ready and len(self._rows) > self._room():
            self.query_one("#inflight", DataTable).clear()
            self._rows = []
        self.tick()

    def _room(self) -> int:
        """The rows the panel shows (its title and the table's header aside; the table is as
        high as its rows); before it has a size, ROWS_UNSIZED."""
        height = self.size.height
        return max(1, height - 2) if height else ROWS_UNSIZED

    def tick(self) -> None:
        """Redraw the running times (and the rows, when the items changed). Only the rows that
        fit are drawn (the In flight tab lists every item): with fast items they all change on
        every write, and each changed cell is work for the app's thread, where an engine in
        the app needs the time; nothing is drawn while the panel is hidden."""
        live = self.live
        if live is None or not self._ready or not self.display:
            return
        now = self.clock()
        rows = []
        # Running items first, the longest-running on top (a hung item shows there), their age
        # from their real start; then the queued ones (handed out, not started: no age yet).
        flights = sorted(live.in_flight, key=lambda f: (f.queued, _started(f.started_at)))[: self._room()]
        for f in flights:
            if f.queued:
                running = "queued"
            else:
                try:
                    running = fmt_duration(now - parse_iso(f.started_at))
                except ValueError:
                    running = "?"
            rows.append((f.seq, f.key, f.attempt, running))
        if rows == self._rows:
            return
        # Rows are places (r0, r1...), updated in place cell by cell, only where a cell changed:
        # with fast items the whole set changes 4 times a second, and a cleared and refilled
        # table is measured again and repainted whole (time an engine in this app's thread
        # does not get). Rows are added at the end; when fewer items are in flight the rows
        # left over are blanked, not removed (a removed row lays the screen out again), while
        # the batch is active (none in flight for a moment between two chunks blanks them all);
        # they go once it is not.
        table = self.query_one("#inflight", DataTable)
        old = self._rows
        if not rows and (live.state not in ACTIVE_STATES or not old):
            table.clear()
            self._rows = rows
            self._widest.clear()
            return
        rows = rows + [_BLANK] * (len(old) - len(rows))
        for i, row in enumerate(rows):
            seq, key, attempt, running = row
            if row == _BLANK:
                cells = (Text(""), Text(""), Text(""), Text(""))
            else:
                # Keys differ at their end (.../documents/0031): cut in the middle to fit.
                shown = cut_middle(cap_middle(key, 400), max(12, (self.size.width or 64) - 24))
                cells = (Text(str(seq)), Text(str(attempt)), Text(running), Text(shown))
            if i >= len(old):
                table.add_row(*cells, key=f"r{i}")
                for column, cell in zip(_COLUMNS, cells, strict=True):
                    self._widest[column] = max(self._widest.get(column, 0), cell.cell_len)
                continue
            for column, before, after, cell in zip(_COLUMNS, _cells(old[i]), _cells(row), cells, strict=True):
                if before != after:  # only a text wider than any shown in its column widens it
                    wider = cell.cell_len > self._widest.get(column, 0)
                    if wider:
                        self._widest[column] = cell.cell_len
                    table.update_cell(f"r{i}", column, cell, update_width=wider)
        self._rows = rows
