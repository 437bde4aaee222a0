"""The dashboard's title line (batch, name, state, engine) and its progress line."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import var
from textual.widgets import ProgressBar, Static

from batchtui.engine.fmt import fmt_duration
from batchtui.engine.liveness import EngineStatus, Liveness
from batchtui.engine.models import ACTIVE_STATES, BatchState, LiveProgress, Manifest

from ..text import plain

__all__ = ["GONE", "ProgressLine", "TitleBar"]

#: No engine holds the batch (the status before the first check).
GONE = EngineStatus(Liveness.GONE, None, None)


class TitleBar(Static):
    """The batch id, its name and processor, and its state in a badge coloured by the theme.

    The state shows as INTERRUPTED when the files say running but no engine holds the batch,
    and as NOT RESPONDING when the engine holding it stopped writing.
    """

    live: var[LiveProgress | None] = var(None)
    manifest: var[Manifest | None] = var(None)
    engine: var[EngineStatus] = var(GONE)

    def __init__(self, batch_id: str, *, in_process: bool, id: str | None = None) -> None:
        super().__init__(plain(f"batch {batch_id}"), id=id)
        self.batch_id = batch_id
        self.in_process = in_process
        self._ready = False

    def on_mount(self) -> None:
        self._ready = True
        self.redraw()

    def on_resize(self, _event: events.Resize) -> None:
        self.redraw()

    def watch_live(self) -> None:
        self.redraw()

    def watch_manifest(self) -> None:
        self.redraw()

    def watch_engine(self) -> None:
        self.redraw()

    def state(self) -> BatchState | None:
        """The batch's state as this dashboard sees it; None: interrupted (an engine died)."""
        if self.live is not None:
            state = self.live.state
        elif self.manifest is not None:
            state = self.manifest.state
        else:
            return None
        if state in ACTIVE_STATES and not self.engine.held and not self.in_process:
            return None  # an engine died: the files still say running
        return state

    def redraw(self) -> None:
        if not self._ready:
            return
        state = self.state()
        live, engine = self.live, self.engine
        title = Text()
        title.append(f"{self.batch_id}", style="bold")
        about = Text()
        if self.manifest is not None:
            about.append("  ")
            about.append_text(plain(self.manifest.name, limit=60))
            proc = self.manifest.processor
            kind = str(proc.get("kind", ""))
            what = proc.get("command") or proc.get("call")
            about.append("  ")
            about.append_text(plain(f"{kind}: {what}" if what else f"{kind} processor", style="dim", limit=70))
        label = state.value if state is not None else "interrupted"
        stale = engine.liveness == Liveness.STALE
        self.set_class(label == "paused" and not stale, "paused")
        self.set_class(label in ("halted", "interrupted") and not stale, "halted")
        self.set_class(label == "finished" and not stale, "finished")
        self.set_class(stale, "stale")
        shown = engine.badge() if stale else label.upper()  # NOT RESPONDING 13s: frozen, hung or dead
        where = ""
        if stale and not self.in_process:
            where = f" pid {engine.pid}"
        elif live is not None and engine.held:
            where = " in this app" if self.in_process else f" pid {live.pid}"
            cluster = live.cluster
            if cluster is not None:  # where the items run: the title says it, not only the counts row
                where += " on a local dask cluster" if cluster.local else f" on dask {cluster.scheduler}"
        state_text = f"   [{shown}{where}]"
        # The state comes right after the id when the whole line would not fit (80 columns):
        # it is what an operator must see; the name and command may be cut.
        room = self.size.width or 136
        if len(title) + len(about) + len(state_text) <= room:
            title.append_text(about)
            title.append(state_text, style="bold")
        else:
            title.append(state_text, style="bold")
            title.append_text(about)
        if live is not None and live.halt_reason:
            title.append("  ")
            title.append_text(plain(live.halt_reason, limit=80))
        self.update(title)


class ProgressLine(Horizontal):
    """The progress bar, then done/total, rate, ETA, elapsed time and cost; when the engine
    stopped writing, how old these figures are comes first, and when items are marked, how many
    before anything else (what ``r``, ``s`` and ``+`` will act on)."""

    live: var[LiveProgress | None] = var(None)
    engine: var[EngineStatus] = var(GONE)
    marked: var[int] = var(0)
    """Items marked in the items table (0: none)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._ready = False

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=100, show_eta=False, show_percentage=True, id="progress")
        yield Static(id="progress-text")

    def on_mount(self) -> None:
        self._ready = True
        self.redraw()

    def watch_live(self) -> None:
        self.redraw()

    def watch_engine(self) -> None:
        self.redraw()

    def watch_marked(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        live = self.live
        if live is None or not self._ready:
            return
        self.query_one("#progress", ProgressBar).update(total=100, progress=live.percent)
        c = live.counts
        parts = [f"{c.finished:,}/{live.total:,}", f"{live.rate_per_s:.1f}/s"]
        stale = self.engine.liveness == Liveness.STALE
        if stale:  # the figures are the last the engine wrote: how old they are comes first
            parts.insert(0, f"no update {fmt_duration(self.engine.silent_s)}")
        elif live.state in (BatchState.RUNNING, BatchState.STOPPING):
            parts.append(f"ETA {fmt_duration(live.eta_s)}")
        elif live.state == BatchState.PAUSED:
            parts.append("ETA paused")
        parts.append(f"elapsed {fmt_duration(live.elapsed_s)}")
        if live.cost.spent or live.cost.budget is not None:
            budget = f" / {live.cost.budget:g}" if live.cost.budget is not None else ""
            parts.append(f"cost {live.cost.spent:.4g}{budget}")
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.marked:
            line.append(f"● {self.marked:,} marked", style="bold reverse")
            line.append("  ")
        line.append("  ·  ".join(parts))
        text = self.query_one("#progress-text", Static)
        text.set_class(stale, "stale")
        text.update(line)
