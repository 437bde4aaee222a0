"""The dashboard's charts: throughput and memory over the last samples, figures beside them."""

from __future__ import annotations

import collections

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.widgets import Sparkline, Static

from batchtui.engine.models import LiveProgress

from .counts import fmt_mb

__all__ = ["HISTORY", "Charts"]

#: Samples kept: one per engine write (every --progress-interval).
HISTORY = 120


class Charts(Horizontal):
    """Two sparklines. A sample is taken per new write of live_progress.json (its
    ``updated_at``), so the same file read twice does not count twice."""

    live: var[LiveProgress | None] = var(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rates: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.rss: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self._ready = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="chart"):
            yield Static(id="rate-label", classes="chart-label")
            yield Sparkline([], id="rate-spark")
        with Vertical(classes="chart"):
            yield Static(id="mem-label", classes="chart-label")
            yield Sparkline([], id="mem-spark")

    def on_mount(self) -> None:
        self._ready = True
        self.redraw()

    def watch_live(self, previous: LiveProgress | None, live: LiveProgress | None) -> None:
        if live is not None and (previous is None or live.updated_at != previous.updated_at):
            self.rates.append(live.rate_per_s)
            self.rss.append(live.memory.rss_mb + live.memory.children_rss_mb)
        self.redraw()

    def redraw(self) -> None:
        live = self.live
        if live is None or not self._ready:
            return
        self.query_one("#rate-spark", Sparkline).data = list(self.rates) or [0.0]
        self.query_one("#mem-spark", Sparkline).data = list(self.rss) or [0.0]
        peak_rate = max(self.rates, default=0.0)
        self.query_one("#rate-label", Static).update(
            Text(f"throughput {live.rate_per_s:.1f}/s  (peak {peak_rate:.1f}/s)")
        )
        m = live.memory
        self.query_one("#mem-label", Static).update(
            Text(
                f"memory {fmt_mb(m.rss_mb + m.children_rss_mb)}  (peak {fmt_mb(m.peak_rss_mb)},"
                f" children {fmt_mb(m.children_rss_mb)}, available {fmt_mb(m.system_available_mb)})"
            )
        )
