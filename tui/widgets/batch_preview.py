"""The browser's preview of the selected batch: what it is, how far it got, its top error
groups, its runs (when each began, how it ended, what each resume changed) and the exact
command that resumes it: what an operator needs to choose which batch to resume.

The figures come from :func:`batchtui.engine.preview.preview` (read in the browser's worker
thread); this widget only lays them out. Every text from the batch is plain text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from batchtui.engine.batchdir import parse_iso
from batchtui.engine.fmt import clean, fmt_ago, fmt_duration, fmt_percent
from batchtui.engine.preview import BatchPreview, RunLine
from batchtui.engine.summary import reading_text

from ..text import plain
from .labels import set_text

__all__ = ["BatchPreviewPane", "age_of", "local_time", "state_text"]


def local_time(iso: str | None) -> str:
    """``2026-11-18 09:00`` in the local time zone ('' when unknown)."""
    if not iso:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(parse_iso(iso)))
    except ValueError:
        return clean(iso)


def age_of(iso: str | None, now: float) -> str:
    """How long ago ``iso`` was: ``3 min ago`` ('' when unknown)."""
    if not iso:
        return ""
    try:
        return fmt_ago(now - parse_iso(iso))
    except ValueError:
        return ""


def state_text(state: str, halt_reason: str | None, error: str | None = None, doing: str = "") -> str:
    """A batch's state with why: ``halted: failure rate 23% over ...``, ``damaged: <why>``,
    ``gone: <where it was>``, or with what its engine does (``doing``): ``created: reading its
    source: 1,234,567 items so far`` (engine/summary.py's reading_text)."""
    if error:
        return f"{state}: {error}"
    if doing:
        return f"{state}: {doing}"
    if halt_reason and state in ("halted", "stopped", "stopping"):
        return f"{state}: {halt_reason}"
    return state


def _run_line(run: RunLine, *, width_action: int) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{run.action:<{width_action}} ", style="bold")
    line.append(f"{local_time(run.started_at)}  ")
    ended_style = "" if run.ended in ("finished", "running", "paused") else "bold"
    line.append(clean(run.ended), style=ended_style)
    if run.duration_s is not None:
        line.append(f" after {fmt_duration(run.duration_s)}", style="dim")
    line.append(f"  {clean(run.host)} pid {run.pid}", style="dim")
    if run.action == "resume":
        line.append("\n   changed: " if run.changes else "\n   no changes", style="dim")
        if run.changes:
            line.append(clean(run.changes))
    return line


class BatchPreviewPane(VerticalScroll):
    """The preview pane: :meth:`show` a :class:`BatchPreview` (None: nothing selected)."""

    DEFAULT_CSS = """
    BatchPreviewPane {
        border-left: tall $panel;
        padding: 0 1;
        background: $surface;
    }
    BatchPreviewPane .preview-section { color: $accent; text-style: bold; margin-top: 1; }
    BatchPreviewPane .oneline { text-wrap: nowrap; text-overflow: ellipsis; }
    BatchPreviewPane #preview-commands { color: $text; background: $boost; }
    """

    def __init__(self, *, clock: Callable[[], float], id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.preview: BatchPreview | None = None
        self.can_focus = False

    def compose(self) -> ComposeResult:
        yield Static(id="preview-head", classes="oneline")
        yield Static("Top errors", id="preview-errors-title", classes="preview-section")
        yield Static(id="preview-errors", classes="oneline")
        yield Static("Runs", id="preview-runs-title", classes="preview-section")
        yield Static(id="preview-runs", classes="oneline")
        yield Static("Resume", id="preview-commands-title", classes="preview-section")
        yield Static(id="preview-commands")
        yield Static("Batch", id="preview-details-title", classes="preview-section")
        yield Static(id="preview-details")

    def show(self, preview: BatchPreview | None) -> None:
        """Lay ``preview`` out (None: say that no batch is selected)."""
        self.preview = preview
        head = self.query_one("#preview-head", Static)
        if preview is None:
            set_text(head, Text("No batch selected.", style="dim"))
            for part in ("errors", "runs", "commands", "details"):
                self._section(part, None)
            return
        set_text(head, self._head(preview))
        self._section("errors", self._errors(preview))
        self._section("runs", self._runs(preview))
        self._section("commands", self._commands(preview))
        self._section("details", self._details(preview))

    def _section(self, part: str, body: Text | None) -> None:
        self.query_one(f"#preview-{part}-title", Static).display = body is not None
        widget = self.query_one(f"#preview-{part}", Static)
        widget.display = body is not None
        set_text(widget, body or Text(""))

    def _head(self, p: BatchPreview) -> Text:
        s = p.summary
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(clean(s.name) or "(no name)", style="bold")
        out.append(f"  {clean(s.batch_id)}\n", style="dim")
        doing = "" if s.stale else reading_text(s)  # still "created": what its engine does first
        out.append(clean(state_text(s.state, s.halt_reason, s.error, doing)), style="bold")
        if s.engine is not None:
            out.append(f"  pid {s.engine.pid} on {clean(s.engine.host)}")
            if s.engine.badge:
                out.append(f" {s.engine.badge}", style="bold")
        if s.error:
            return out
        c = s.totals
        out.append(
            f"\n{c.finished:,}/{c.total:,} done ({fmt_percent(s.percent, 1)}), {c.failed:,} failed, {c.skipped:,} skipped"
        )
        for label, value in (("Source", s.source_text), ("Command", s.command)):
            out.append(f"\n{label:<8} ", style="dim")
            out.append(clean(value) or "?")
        return out

    def _details(self, p: BatchPreview) -> Text | None:
        s = p.summary
        now = self.clock()
        out = Text(no_wrap=True, overflow="ellipsis")
        rows = [
            ("Created", f"{local_time(s.created_at)} ({age_of(s.created_at, now)})" if s.created_at else "?"),
            ("Updated", f"{local_time(s.updated_at)} ({age_of(s.updated_at, now)})" if s.updated_at else "?"),
            ("Folder", clean(s.path)),
        ]
        for label, value in rows:
            out.append(f"{label:<8} ", style="dim")
            out.append(value + "\n")
        out.rstrip()
        return out

    def _errors(self, p: BatchPreview) -> Text | None:
        if p.groups_problem:
            return plain(f"cannot read the errors: {p.groups_problem}")
        if not p.error_groups:
            return Text("no failed items", style="dim") if not p.summary.error else None
        out = Text(no_wrap=True, overflow="ellipsis")
        width = max(len(f"{g.count:,}") for g in p.error_groups)
        for g in p.error_groups:
            out.append(f"{g.id} ", style="dim")
            out.append(f"{g.count:>{width},} ", style="bold")
            out.append(clean(g.error_type) + ": ", style="bold")
            out.append(clean(g.example_message or g.message) + "\n")
        shown = sum(g.count for g in p.error_groups)
        if p.failed > shown:
            out.append(f"… {p.failed - shown:,} more in other groups (batchtui errors)", style="dim")
        out.rstrip()
        return out

    def _runs(self, p: BatchPreview) -> Text | None:
        if not p.runs:
            return Text("never run", style="dim") if not p.summary.error else None
        out = Text(no_wrap=True, overflow="ellipsis")
        width = max(len(r.action) for r in p.runs)
        for run in p.runs:
            out.append_text(_run_line(run, width_action=width))
            out.append("\n")
        out.rstrip()
        return out

    def _commands(self, p: BatchPreview) -> Text | None:
        s = p.summary
        if s.error:
            return None
        out = Text()  # wraps: the command is shown whole, to be copied exactly
        if s.engine is not None:
            out.append(f"an engine runs it (pid {s.engine.pid}): enter watches it", style="dim")
            return out
        if p.resume_command:
            out.append("$ " + clean(p.resume_command) + "\n")
        if p.retry_command:
            failed = f"the {p.failed:,} failed item" + ("s" if p.failed != 1 else "")
            out.append(f"{'and' if p.resume_command else 'to run'} {failed} again:\n", style="dim")
            out.append("$ " + clean(p.retry_command) + "\n")
        if not out.plain:
            out.append("finished: nothing to resume", style="dim")
        out.rstrip()
        return out
