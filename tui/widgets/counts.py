"""The dashboard's counts row: items per status, then duplicates, workers and the cluster."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import var
from textual.widgets import Static

from batchtui.engine.adaptive import timeout_text
from batchtui.engine.models import ACTIVE_STATES, LiveProgress, Manifest

from .labels import set_text

__all__ = ["STATUSES", "CountsRow", "fmt_mb"]

STATUSES = ("pending", "processing", "complete", "failed", "skipped")


def fmt_mb(mb: float) -> str:
    """Megabytes as ``512 MB`` or ``1.5 GB``."""
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


#: The cells after each count (app.tcss: ``.count { padding-right: 3 }``).
PAD = 3


class CountsRow(Horizontal):
    """One count per status, each coloured by the theme, and what runs the items.

    A count is as wide as the widest text it has shown (a figure that grows by a digit widens
    it, one that shrinks leaves it as it is): a label that changes width lays the whole screen
    out again, time an engine in this app's worker thread does not get. When a count must
    widen, it takes at once the room of its status at the batch's total (``complete 200,000``),
    so it widens once a run, not at each new digit."""

    live: var[LiveProgress | None] = var(None)
    manifest: var[Manifest | None] = var(None)  # duplicates dropped come from the manifest

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._ready = False
        self._widths: dict[str, int] = {}

    def compose(self) -> ComposeResult:
        for status in STATUSES:
            yield Static(id=f"count-{status}", classes=f"count {status}")
        yield Static(id="count-extra", classes="count extra")

    def on_mount(self) -> None:
        self._ready = True
        self.redraw()

    def watch_live(self) -> None:
        self.redraw()

    def watch_manifest(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        live = self.live
        if live is None or not self._ready:
            return
        c = live.counts
        for status in STATUSES:
            if status == "processing" and live.state in ACTIVE_STATES:
                # What the engine has in flight: started in a worker, or handed out and waiting.
                shown = f"running {c.running:,}/{live.workers:,} · queued {c.queued:,}"
                if c.retrying:  # the rest of what is in flight: waiting to try again
                    shown += f" · retry wait {c.retrying:,}"
                widest = 0
            else:
                shown = f"{status} {getattr(c, status):,}"
                widest = len(f"{status} {live.total:,}")
            self._show(status, Text(shown), widest)
        extra = []
        if self.manifest is not None and self.manifest.duplicates_dropped:
            extra.append(f"duplicates dropped {self.manifest.duplicates_dropped:,}")
        extra.append(f"workers {live.workers}")
        if live.timeout is not None:  # --timeout P% follows the median success: what is in force now
            extra.append(timeout_text(live.timeout, short=True))
        cluster = live.cluster
        if cluster is not None:
            where = "local dask cluster" if cluster.local else f"dask {cluster.scheduler}"
            extra.append(
                f"{where}: {cluster.workers} workers, {fmt_mb(cluster.memory_used_mb)}"
                f" / {fmt_mb(cluster.memory_total_mb)}"
            )
        self._show("extra", Text("  ".join(extra)), 0)

    def _show(self, name: str, text: Text, widest: int) -> None:
        """``text`` in the count ``name``, widened first if it does not fit (to ``widest``
        cells of text, when more)."""
        label = self.query_one(f"#count-{name}", Static)
        width = self._widths.get(name)
        if width is None or text.cell_len + PAD > width:
            width = text.cell_len + PAD if width is None else max(text.cell_len, widest) + PAD
            self._widths[name] = width
            label.styles.width = width
        set_text(label, text)
