"""The dashboard's title line (batch, name, state, engine) and its progress line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.dom import DOMNode
from textual.reactive import var
from textual.widgets import Static

from batchtui.engine.eta import eta_text
from batchtui.engine.fmt import bar_cells, clean, fmt_duration, fmt_percent
from batchtui.engine.liveness import EngineStatus, Liveness
from batchtui.engine.models import ACTIVE_STATES, BatchState, LiveProgress, Manifest
from batchtui.engine.reading import SourceReading

from ..glyphs import ASCII_CLASS
from ..host import Host
from ..text import cut_middle, plain
from .labels import set_text

__all__ = ["GONE", "ProgressLine", "StatusPart", "StatusText", "TitleBar", "fit_parts", "render_parts"]

#: Cells the batch id keeps at least when the title is cut (its start and its end).
_ID_MIN = 16

#: No engine holds the batch (the status before the first check).
GONE = EngineStatus(Liveness.GONE, None, None)


class TitleBar(Static):
    """The batch id, its name and processor, and its state in a badge coloured by the theme.

    The state shows as INTERRUPTED when the files say running but no engine holds the batch
    (or its enqueue was cut short), as NOT RESPONDING when the engine holding it stopped
    writing, and as READING SOURCE or WAITING FOR SOURCE while an engine reads the batch's
    source (its state stays ``created``), STARTING until that engine's first write.
    """

    live: var[LiveProgress | None] = var(None)
    manifest: var[Manifest | None] = var(None)
    engine: var[EngineStatus] = var(GONE)
    #: The batch folder went (moved or deleted): what is shown is what it last said.
    gone: var[bool] = var(False)
    #: This app's engine runs the batch (its lock may not be taken yet); False once it ended,
    #: whoever runs the batch since (bound to the dashboard's ``here``).
    in_process: var[bool] = var(False)
    #: The batch's enqueue is not done: an engine reads its source, or it was cut short.
    reading: var[SourceReading | None] = var(None)
    #: manifest.json (and its backup) is damaged and none was read before: no state to show.
    unreadable: var[bool] = var(False)

    def __init__(self, batch_id: str, *, in_process: bool, id: str | None = None) -> None:
        super().__init__(plain(f"batch {batch_id}"), id=id)
        self.batch_id = batch_id
        self.set_reactive(TitleBar.in_process, in_process)
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

    def watch_gone(self) -> None:
        self.redraw()

    def watch_in_process(self) -> None:
        self.redraw()

    def watch_reading(self) -> None:
        self.redraw()

    def watch_unreadable(self) -> None:
        self.redraw()

    def label(self) -> str:
        """The state as the badge says it (lower case)."""
        state, reading, held = self.state(), self.reading, self.engine.held or self.in_process
        if self.gone:
            return "gone"
        if reading is not None:  # the state is "created" until the source is read
            if not reading.engine:
                return "interrupted"  # its enqueue cut short: its engine died
            return "reading source" if reading.waiting_s is None else "waiting for source"
        if state == BatchState.CREATED and held and self.manifest is not None:
            return "starting"  # an engine took the batch, its first write to come
        if self.unreadable and self.live is None and self.manifest is None:
            return "unreadable"  # the manifest does not parse (the event log says why): no state to show
        return state.value if state is not None else "interrupted"

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
        live, engine = self.live, self.engine
        title = Text()
        title.append(clean(self.batch_id), style="bold")  # a folder given by path: any name
        about = Text()
        if self.manifest is not None:
            about.append("  ")
            about.append_text(plain(self.manifest.name, limit=60))
            proc = self.manifest.processor
            kind = str(proc.get("kind", ""))
            what = proc.get("command") or proc.get("call")
            about.append("  ")
            about.append_text(plain(f"{kind}: {what}" if what else f"{kind} processor", style="dim", limit=70))
        label = self.label()
        stale = engine.liveness == Liveness.STALE and not self.gone
        self.set_class(label == "paused" and not stale, "paused")
        self.set_class(label in ("halted", "interrupted", "gone", "unreadable") and not stale, "halted")
        self.set_class(label == "finished" and not stale, "finished")
        self.set_class(stale, "stale")
        shown = engine.badge() if stale else label.upper()  # NOT RESPONDING 13s: frozen, hung or dead
        where = ""
        if stale and not self.in_process:  # (never when gone)
            where = f" pid {engine.pid}"
        elif label in ("reading source", "waiting for source", "starting"):
            where = " in this app" if self.in_process else f" pid {engine.pid}" if engine.pid else ""
        elif live is not None and engine.held and not self.gone:  # a holder of the folder that went
            where = " in this app" if self.in_process else f" pid {live.pid}"
            cluster = live.cluster
            if cluster is not None:  # where the items run: the title says it, not only the counts row
                where += " on a local dask cluster" if cluster.local else f" on dask {cluster.scheduler}"
        state_text = Text(f"   [{shown}{where}]", style="bold")
        app = self.app
        if isinstance(app, Host) and app.read_only:  # `batchtui serve` without --allow-control
            state_text.append(" [read-only]", style="bold")
        badge = state_text.cell_len  # never cut
        if live is not None and live.halt_reason:
            state_text.append("  ")
            state_text.append_text(plain(live.halt_reason, limit=80))
        # The state and why it halted come right after the id when the whole line would not
        # fit (80 columns): they are what an operator must see; the name and command may be cut.
        room = self.size.width or 136
        if title.cell_len + about.cell_len + state_text.cell_len <= room:
            title.append_text(about)
            title.append_text(state_text)
        else:
            # An id too long for the badge beside it (a folder given by path: any name) keeps
            # both its ends (ids differ at their end), so that the badge is whole (a cell is left
            # for the ellipsis that says more was cut after it); in a pane too narrow for both
            # at _ID_MIN, the id stays whole and the badge is cut.
            id_room = room - badge - 1
            if _ID_MIN <= id_room < title.cell_len:
                title = Text(cut_middle(title.plain, id_room), style="bold")
            title.append_text(state_text)
            title.append_text(about)
        # A line cut to the width ends with an ellipsis (it wrapped onto a hidden second line,
        # cut at a word with no sign of it).
        title.no_wrap = True
        title.truncate(room, overflow="ellipsis")
        set_text(self, title)


def elapsed_text(live: LiveProgress) -> str:
    """The batch's active time (the sum of its runs), this run's apart after a resume:
    ``elapsed 3m12s (this run 40s)``."""
    text = f"elapsed {fmt_duration(live.elapsed_s)}"
    run = live.run_elapsed_s
    if run is not None and live.elapsed_s - run >= 1.0:  # earlier runs of a second or more
        text += f" (this run {fmt_duration(run)})"
    return text


@dataclass(frozen=True)
class StatusPart:
    """One figure of the status line: its text, how long it stays as the line narrows (a lower
    ``rank`` stays longer) and what comes before it when a part precedes it."""

    text: Text
    rank: int
    sep: str = " · "
    bar: bool = False
    """The progress bar: drawn at whatever width is left (BAR_MIN to BAR_MAX cells)."""


BAR_MIN, BAR_MAX = 10, 40


def fit_parts(parts: Sequence[StatusPart], width: int) -> list[StatusPart]:
    """The parts that fit in ``width`` cells, in their order: the highest ``rank`` goes first
    while the line is too wide (a part is never cut, the line never wraps). The bar counts
    at BAR_MIN."""

    def need(kept: list[StatusPart]) -> int:
        return sum((BAR_MIN if p.bar else p.text.cell_len) + (len(p.sep) if i else 0) for i, p in enumerate(kept))

    kept = list(parts)
    while len(kept) > 1 and need(kept) > width:
        kept.remove(max(reversed(kept), key=lambda p: p.rank))  # of equal ranks the rightmost
    return kept


def render_parts(
    parts: Sequence[StatusPart],
    width: int,
    percent: float,
    bar_styles: tuple[Style, Style],
    bar_chars: tuple[str, str] = ("━", "━"),
) -> Text:
    """The status line at ``width`` cells: the parts that fit, the bar given the room left
    (``bar_chars``: its done and its remaining cells; an ASCII terminal has them apart)."""
    kept = fit_parts(parts, width)
    room = width - sum(p.text.cell_len + (len(p.sep) if i else 0) for i, p in enumerate(kept) if not p.bar)
    line = Text(no_wrap=True, overflow="crop", end="")
    for i, part in enumerate(kept):
        if i:
            line.append(part.sep)
        if part.bar:
            cells = max(BAR_MIN, min(BAR_MAX, room - (len(part.sep) if i else 0)))
            done = bar_cells(percent, cells)
            line.append(bar_chars[0] * done, style=bar_styles[0])
            line.append(bar_chars[1] * (cells - done), style=bar_styles[1])
        else:
            line.append_text(part.text)
    return line


class StatusText(Static):
    """The status line's text, drawn again for its width (see :func:`fit_parts`)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "status--running",
        "status--paused",
        "status--halted",
        "status--finished",
        "status--stale",
        "status--stalled",
        "status--bar",
        "status--bar-back",
        "status--failed",
        "status--skipped",
        "status--in-flight",
        "status--marked",
        "status--muted",
    }
    DEFAULT_CSS = """
    StatusText {
        width: 1fr;
        height: 1;
        .status--running { color: $text; background: $primary 40%; text-style: bold; }
        .status--paused { color: $text; background: $warning 40%; text-style: bold; }
        .status--halted { color: $text; background: $error 40%; text-style: bold; }
        .status--finished { color: $text; background: $success 35%; text-style: bold; }
        .status--stale { color: $text; background: $warning 70%; text-style: bold; }
        .status--stalled { color: $warning; text-style: bold; }
        .status--bar { color: $success; }
        .status--bar-back { color: $foreground 15%; }
        .status--failed { color: $error; }
        .status--skipped { color: $warning; }
        .status--in-flight { color: $accent; }
        .status--marked { color: $text; background: $accent 50%; text-style: bold; }
        .status--muted { color: $text-muted; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.parts: list[StatusPart] = []
        self.percent = 0.0

    def style_of(self, name: str) -> Style:
        return self.get_component_rich_style(f"status--{name}")

    def show(self, parts: list[StatusPart], percent: float) -> None:
        self.parts, self.percent = parts, percent
        self.draw()

    def on_resize(self, _event: events.Resize) -> None:
        self.draw()

    def draw(self) -> None:
        width = self.size.width or self.app.size.width - 2
        bar = (self.style_of("bar"), self.style_of("bar-back"))
        chars = ("#", "-") if self.app.has_class(ASCII_CLASS) else ("━", "━")
        set_text(self, render_parts(self.parts, width, self.percent, bar, chars))


class ProgressLine(Horizontal):
    """The status line, pinned at any size: state, progress bar, percent, done/total, rate,
    ETA, what is running and queued (as the engine writes it), failed, skipped, pending,
    elapsed time and cost; the marked items when there are any (what ``r``, ``s`` and ``+``
    act on). As the terminal narrows, the least needed figures drop out whole (``rank``):
    at 80 columns state, done/total, marks, rate and ETA stay. When the engine stopped
    writing, how old the figures are replaces the state."""

    live: var[LiveProgress | None] = var(None)
    engine: var[EngineStatus] = var(GONE)
    marked: var[int] = var(0)
    """Items marked in the items table (0: none)."""
    gone: var[bool] = var(False)
    """The batch folder went: the figures are its last, nothing runs there."""
    in_process: var[bool] = var(False)
    """This app's engine runs the batch (as :attr:`TitleBar.in_process`)."""
    reading: var[SourceReading | None] = var(None)
    """The batch's enqueue is not done (as :attr:`TitleBar.reading`): what it has read."""

    def __init__(self, *, in_process: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_reactive(ProgressLine.in_process, in_process)
        self._ready = False

    def compose(self) -> ComposeResult:
        yield StatusText(id="progress-text")

    def follow(self, source: DOMNode) -> None:
        """Show what ``source`` shows (a dashboard: its live, engine, gone and reading, and its
        ``here`` as :attr:`in_process`), as it changes: a screen over it (the item detail) keeps
        the batch's status line in sight."""

        def mirror(name: str) -> Callable[[object], None]:
            def set_value(value: object) -> None:
                setattr(self, name, value)

            return set_value

        for name in ("live", "engine", "gone", "reading"):
            self.watch(source, name, mirror(name))
        self.watch(source, "here", mirror("in_process"))

    def on_mount(self) -> None:
        self._ready = True
        self.redraw()

    def watch_live(self) -> None:
        self.redraw()

    def watch_engine(self) -> None:
        self.redraw()

    def watch_marked(self) -> None:
        self.redraw()

    def watch_gone(self) -> None:
        self.redraw()

    def watch_in_process(self) -> None:
        self.redraw()

    def watch_reading(self) -> None:
        self.redraw()

    def reading_parts(self, reading: SourceReading, text: StatusText) -> list[StatusPart]:
        """The status line while the batch's source is read (nothing runs yet), or after its
        reading was cut short: what it has read."""
        style, muted = text.style_of, text.style_of("muted")
        stale = self.engine.liveness == Liveness.STALE
        if self.gone:
            state = Text(" GONE ", style=style("halted"))
        elif stale:
            state = Text(f" no update {fmt_duration(self.engine.silent_s)} ", style=style("stale"))
        elif not reading.engine:
            state = Text(" INTERRUPTED ", style=style("halted"))
        elif reading.waiting_s is not None:
            state = Text(" WAITING FOR SOURCE ", style=style("paused"))
        else:
            state = Text(" READING SOURCE ", style=style("running"))
        parts = [StatusPart(state, 0), StatusPart(Text(f"{reading.items:,} items so far"), 1)]
        if not reading.engine:
            parts[1] = StatusPart(Text(f"its enqueue was cut short: {reading.items:,} items read"), 1)
        elif reading.waiting_s is not None and not stale:
            parts.append(StatusPart(Text(f"nothing new for {fmt_duration(reading.waiting_s)}"), 2))
        if reading.engine and not stale and not self.gone:
            parts.append(StatusPart(Text(reading.note(), style=muted), 3))
        return parts

    def parts(self, live: LiveProgress, text: StatusText) -> list[StatusPart]:
        """The status line's figures in their order, each with its rank."""
        style = text.style_of
        c = live.counts
        stale = self.engine.liveness == Liveness.STALE
        held = self.engine.held or self.in_process
        active = live.state in ACTIVE_STATES and not self.gone and held  # not held: its engine died
        if self.gone:
            state = Text(" GONE ", style=style("halted"))  # moved or deleted: these are its last figures
        elif stale:  # the figures are the last the engine wrote: how old they are comes first
            state = Text(f" no update {fmt_duration(self.engine.silent_s)} ", style=style("stale"))
        elif live.state in ACTIVE_STATES and not held:
            state = Text(" INTERRUPTED ", style=style("halted"))  # an engine died: the files say running
        else:
            look = {BatchState.PAUSED: "paused", BatchState.HALTED: "halted", BatchState.FINISHED: "finished"}
            state = Text(f" {live.state.value.upper()} ", style=style(look.get(live.state, "running")))
        parts = [
            StatusPart(state, 0),
            StatusPart(Text(""), 8, sep=" ", bar=True),
            StatusPart(Text(fmt_percent(live.percent)), 5, sep=" "),
            StatusPart(Text(f"{c.finished:,}/{live.total:,}"), 1, sep="  "),
            StatusPart(Text(f"{live.rate_per_s:.1f}/s"), 3),
        ]
        if live.state in (BatchState.RUNNING, BatchState.STOPPING) and active and not stale:
            eta_style = style("stalled") if live.stalled_s is not None else ""
            parts.append(StatusPart(Text(eta_text(live), style=eta_style), 4))
        elif live.state == BatchState.PAUSED and active:
            parts.append(StatusPart(Text(eta_text(live)), 4))  # "ETA paused", as every view says it
        if active:
            parts.append(StatusPart(Text(f"running {c.running:,}/{live.workers:,}", style=style("in-flight")), 7))
            parts.append(StatusPart(Text(f"queued {c.queued:,}", style=style("in-flight")), 9))
            if c.retrying:  # in flight too, waiting out a backoff: the three add up to the tab's
                parts.append(StatusPart(Text(f"retry wait {c.retrying:,}", style=style("in-flight")), 9))
            # Dispatch held (the warning in the log says why, `show` says it whole): as long as
            # it lasts, not only in the one log line that scrolls away.
            if live.start_hold:
                parts.append(StatusPart(Text("commands cannot start", style=style("stalled")), 2))
            if live.memory_hold:
                parts.append(StatusPart(Text("held for memory", style=style("stalled")), 2))
        # Failures stay longer than the rate, the ETA and the percent: on a phone's 45 columns too.
        parts.append(StatusPart(Text(f"failed {c.failed:,}", style=style("failed") if c.failed else ""), 2))
        if c.skipped:
            parts.append(StatusPart(Text(f"skipped {c.skipped:,}", style=style("skipped")), 10))
        if c.pending and not active:
            parts.append(StatusPart(Text(f"pending {c.pending:,}", style=style("muted")), 11))
        parts.append(StatusPart(Text(elapsed_text(live), style=style("muted")), 12))
        if live.cost.spent or live.cost.budget is not None:
            budget = f" / {live.cost.budget:g}" if live.cost.budget is not None else ""
            parts.append(StatusPart(Text(f"cost {live.cost.spent:.4g}{budget}", style=style("muted")), 13))
        if self.marked:
            parts.append(StatusPart(Text(f" ● {self.marked:,} marked ", style=style("marked")), 2, sep="  "))
        return parts

    def redraw(self) -> None:
        live, reading = self.live, self.reading
        if (live is None and reading is None) or not self._ready:
            return
        text = self.query_one(StatusText)
        text.set_class(self.engine.liveness == Liveness.STALE, "stale")
        if reading is not None:  # no engine has run the batch yet: nothing in live progress
            text.show(self.reading_parts(reading, text), 0.0)
        elif live is not None:
            text.show(self.parts(live, text), live.percent)
