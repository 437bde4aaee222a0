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
from batchtui.engine.models import LiveProgress

from ..text import plain

__all__ = ["InFlightPanel"]


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

    def tick(self) -> None:
        """Redraw the running times (and the rows, when the items changed)."""
        live = self.live
        if live is None or not self._ready:
            return
        now = self.clock()
        rows = []
        # Running items first, the longest-running on top (a hung item shows there), their age
        # from their real start; then the queued ones (handed out, not started: no age yet).
        flights = sorted(live.in_flight, key=lambda f: (f.queued, _started(f.started_at)))
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
        table = self.query_one("#inflight", DataTable)
        if [r[:3] for r in rows] == [r[:3] for r in self._rows]:
            for seq, _key, _attempt, running in rows:
                table.update_cell(str(seq), "running", Text(running))
        else:
            table.clear()
            for seq, key, attempt, running in rows:
                table.add_row(Text(str(seq)), Text(str(attempt)), Text(running), plain(key, limit=120), key=str(seq))
        self._rows = rows
