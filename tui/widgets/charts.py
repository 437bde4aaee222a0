"""The dashboard's charts: throughput and memory over the last samples, figures beside them.

The bars are scaled from zero to the highest value shown (a steady 3.9-4.0/s is a steady row
of full bars, not swings from nothing to the top as min-max scaling draws it), newest on the
right, one column a sample. The samples are live_progress.json's ``history`` (one a second,
kept by the engine), so a dashboard opened late shows what came before; a file without it (an
older engine) is sampled here, one sample per new write.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive, var
from textual.widget import Widget
from textual.widgets import Static

from batchtui.engine.models import LiveProgress

from ..glyphs import ASCII_BARS, ASCII_CLASS, UNICODE_BARS
from .counts import fmt_mb
from .labels import set_text

__all__ = ["HISTORY", "Charts", "ZeroSparkline", "bar_levels", "bar_rows"]

#: Samples kept: one per engine write (every --progress-interval).
HISTORY = 120


def bar_levels(values: Sequence[float], width: int, steps: int) -> list[int]:
    """The last ``width`` values as bar heights from 0 to ``steps``, scaled from zero to the
    highest of them: 0 only for a value of 0 (or less), a value above 0 at least 1."""
    shown = [max(0.0, v) for v in values[-width:]] if width > 0 else []
    top = max(shown, default=0.0)
    if top <= 0.0:
        return [0] * len(shown)
    return [0 if v <= 0.0 else max(1, min(steps, math.floor(v / top * steps + 0.5))) for v in shown]


def bar_rows(values: Sequence[float], width: int, height: int, bars: str = UNICODE_BARS) -> list[str]:
    """The chart's lines, top first: ``height`` rows of ``width`` cells, the newest value in
    the right-most column, empty columns on the left while there are fewer values than cells.
    ``bars`` is the fill of one cell from empty to full (9 characters)."""
    per_row = len(bars) - 1
    levels = bar_levels(values, width, per_row * height)
    levels = [0] * (width - len(levels)) + levels
    rows = []
    for row in reversed(range(height)):
        low = row * per_row
        rows.append("".join(bars[min(per_row, max(0, level - low))] for level in levels))
    return rows


class ZeroSparkline(Widget):
    """A sparkline scaled from zero (see :func:`bar_levels`); ASCII when the app says so."""

    DEFAULT_CSS = """
    ZeroSparkline { height: 1; }
    """

    data: reactive[tuple[float, ...]] = reactive(())

    def render(self) -> RenderResult:
        bars = ASCII_BARS if self.app.has_class(ASCII_CLASS) else UNICODE_BARS
        rows = bar_rows(self.data, self.size.width, max(1, self.size.height), bars)
        return Text("\n".join(rows), no_wrap=True, overflow="crop")


class Charts(Horizontal):
    """Two sparklines. The samples are the file's ``history``; without one, a sample is taken
    per new write of live_progress.json (its ``updated_at``), so the same file read twice does
    not count twice. Nothing is redrawn that did not change."""

    live: var[LiveProgress | None] = var(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rates: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.rss: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self._ready = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="chart"):
            yield Static(id="rate-label", classes="chart-label")
            yield ZeroSparkline(id="rate-spark")
        with Vertical(classes="chart"):
            yield Static(id="mem-label", classes="chart-label")
            yield ZeroSparkline(id="mem-spark")

    def on_mount(self) -> None:
        self._ready = True
        self.redraw()

    def watch_live(self, previous: LiveProgress | None, live: LiveProgress | None) -> None:
        if live is None:
            return
        history = live.history
        if history.rate_per_s:
            if list(self.rates) != history.rate_per_s or list(self.rss) != history.rss_mb:
                self.rates.clear()
                self.rates.extend(history.rate_per_s)
                self.rss.clear()
                self.rss.extend(history.rss_mb)
        elif previous is None or live.updated_at != previous.updated_at:
            self.rates.append(live.rate_per_s)
            self.rss.append(live.memory.rss_mb + live.memory.children_rss_mb)
        self.redraw()

    def redraw(self) -> None:
        live = self.live
        if live is None or not self._ready:
            return
        # Reactives compare: an unchanged chart or label is not repainted.
        self.query_one("#rate-spark", ZeroSparkline).data = tuple(self.rates)
        self.query_one("#mem-spark", ZeroSparkline).data = tuple(self.rss)
        # The history is sampled apart from the figure beside it (the final rate of a short run
        # comes after the last sample): the peak is never below the rate shown.
        peak_rate = max(max(self.rates, default=0.0), live.rate_per_s)
        m = live.memory
        self._label("#rate-label", f"throughput {live.rate_per_s:.1f}/s  (peak {peak_rate:.1f}/s)")
        self._label(
            "#mem-label",
            f"memory {fmt_mb(m.rss_mb + m.children_rss_mb)}  (peak {fmt_mb(m.peak_rss_mb)},"
            f" children {fmt_mb(m.children_rss_mb)}, available {fmt_mb(m.system_available_mb)})",
        )

    def _label(self, selector: str, text: str) -> None:
        set_text(self.query_one(selector, Static), Text(text))
