"""The dashboard's event log: state changes, warnings, new errors, and what became of each
command sent to the engine (acknowledged, not acknowledged in time, acknowledged late).

In the dashboard each line is one row, cut at the panel's edge; maximized (``l``), the lines
are wrapped to the screen's width, so a long one is read whole without scrolling sideways."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Self

from rich.console import Console
from rich.text import Text
from textual import events
from textual.reactive import var
from textual.widgets import Log

from batchtui.engine.batchdir import BatchDir, parse_iso
from batchtui.engine.client import NotAcknowledged, Sent
from batchtui.engine.fmt import clean, error_line
from batchtui.engine.liveness import EngineStatus, Liveness
from batchtui.engine.models import ACTIVE_STATES, BatchState, LiveProgress

from .status import GONE

__all__ = ["EventLog", "wrap_line"]

MAX_LINES: Final = 500
#: A line's time stamp (write_event): a wrapped line's next rows are indented past it.
_STAMP: Final = re.compile(r"\d\d:\d\d:\d\d ")


@dataclass(frozen=True, slots=True)
class _Pending:
    sent: Sent
    what: str
    at: float  # time.monotonic() when it was sent


class EventLog(Log):
    """Lines stamped with the app's clock, or with the time an event read from
    live_progress.json happened (its state, warnings and errors, in the order they happened;
    what the first read replays before what this dashboard said since it opened). It follows
    the live progress and the engine's liveness (``data_bind``), and the commands :meth:`sent`
    to the engine until their acknowledgement shows in live_progress.json; one not
    acknowledged within the timeout given to :meth:`check_acks` is reported once, and again if
    it is acknowledged late.

    The view stays on the newest line, through resizes too, until the operator scrolls up to
    read; scrolled back to the end, it follows again (:meth:`write_lines`). Maximized, its
    lines are wrapped to its width (:func:`wrap_line`); :attr:`lines` are the lines as written."""

    live: var[LiveProgress | None] = var(None)
    engine: var[EngineStatus] = var(GONE)

    def __init__(self, batch: BatchDir, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=MAX_LINES)
        self._written: deque[str] = deque(maxlen=MAX_LINES)  # the lines, each whole
        self._wrap_width: int | None = None  # the width the rows are wrapped to (maximized)
        self.bdir = batch
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self._late: dict[str, _Pending] = {}
        self._seen_errors: set[tuple[int, int, str]] = set()
        self._seen_warnings: set[str] = set()
        self._follow = True  # the view is on the newest line: keep it there

    def write_event(self, text: str, at: float | None = None) -> None:
        """One line, untrusted text escaped and cut, stamped with ``at`` (an epoch time) or the
        app's clock."""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.clock() if at is None else at))
        self.write_line(f"{stamp} {clean(text, limit=300)}")

    @property
    def lines(self) -> Sequence[str]:
        """The lines as written, each whole (however many rows it is drawn on)."""
        return list(self._written)

    def clear(self) -> Self:
        self._written.clear()
        return super().clear()

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> Self:
        """As :meth:`Log.write_lines`, with two differences that keep the newest line in view.

        Log scrolls to a new line only if the view is at the end just before the write, and a
        resize leaves it short of the end (a shorter pane raises the end, the offset stays):
        here the view follows while ``_follow`` holds (:meth:`watch_scroll_y`,
        :meth:`on_resize`), until the operator scrolls up.

        Every row is repainted: past ``max_lines`` a write drops the first line and the offset
        stays, so every row shown changes, while Log's auto-scroll repaints only the new line's
        row, below the view (the log looked frozen from its 500th line on)."""
        new = [piece for line in lines for piece in line.splitlines()]
        self._written.extend(new)
        super().write_lines(self._rows(new), scroll_end=False)  # False: Log refreshes the whole view
        if self._wrap_width is not None and self.line_count > 4 * MAX_LINES:
            # Wrapped, rows are not pruned line by line: the rows of the lines no longer kept go
            # now and then (a rewrap at each write past MAX_LINES would cost every write).
            self._rows_again()
        follow = self.auto_scroll if scroll_end is None else scroll_end
        if follow and self._follow and not self.is_vertical_scrollbar_grabbed:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        return self

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # The offset moves when the operator scrolls, and when the view follows or a taller pane
        # clamps it (both at the end); a shorter pane or a write leaves it: on_resize follows.
        self._follow = new_value >= self.max_scroll_y

    def on_resize(self, event: events.Resize) -> None:
        # Maximized (the screen's class on it): wrapped to the width; else a row a line.
        width = self.content_region.width - self.styles.scrollbar_size_vertical
        wrap_width = max(width, 1) if self.has_class("-maximized") else None
        if wrap_width != self._wrap_width:
            self._wrap_width = wrap_width
            self.max_lines = MAX_LINES if wrap_width is None else None  # _written keeps the last lines
            self._rows_again()
        if self._follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _rows(self, lines: Iterable[str]) -> list[str]:
        if self._wrap_width is None:
            return list(lines)
        return [row for line in lines for row in wrap_line(line, self._wrap_width, self.app.console)]

    def _rows_again(self) -> None:
        """Every row drawn anew from the lines (the wrap width changed, or lines went)."""
        super().clear()
        Log.write_lines(self, self._rows(self._written), scroll_end=False)

    def toggle_whole_screen(self) -> bool:
        """The log on the whole screen (its lines whole, scrolled with the keys), or back in its
        panel; whether it is on the whole screen now."""
        if self.screen.maximized is self:
            self.screen.minimize()
            return False
        self.screen.maximize(self, container=False)
        return True

    def watch_engine(self, before: EngineStatus, after: EngineStatus) -> None:
        if before.liveness != Liveness.STALE and after.liveness == Liveness.STALE:
            self.write_event(f"engine not responding: {after.explain()}")
        elif before.liveness == Liveness.STALE and after.liveness == Liveness.ALIVE:
            self.write_event("engine responding again")
        elif before.held and not after.held and self.live is not None and self.live.state in ACTIVE_STATES:
            # Its lock went while its files say it runs: it died (a kill -9, a crash, a reboot).
            who = f"pid {before.pid}" if before.pid is not None else "its process"
            self.write_event(f"engine gone ({who}) while the batch was {self.live.state.value}: nothing runs it now")

    def watch_live(self, previous: LiveProgress | None, live: LiveProgress | None) -> None:
        if live is None:
            return
        # Each line at the time it happened, not when it was read (a dashboard opened late
        # replays them), and in that order: the last items' errors before the end they led to
        # (the state last of the lines of one instant: its write carried them).
        lines: list[tuple[float | None, str]] = []
        for w in live.warnings:
            if w not in self._seen_warnings:
                self._seen_warnings.add(w)
                at, text = _warning(w)
                lines.append((at, f"warning: {text}"))
        for e in live.recent_errors:
            ident = (e.seq, e.attempt, e.error_type)
            if ident not in self._seen_errors:
                self._seen_errors.add(ident)
                lines.append(
                    (_epoch(e.at), f"#{e.seq} try {e.attempt} {e.category} {error_line(e.error_type, e.message)}")
                )
        if previous is None or previous.state != live.state:
            why = f": {live.halt_reason}" if live.halt_reason else ""
            lines.append((_state_since(live, replayed=previous is None), f"state {live.state.value}{why}"))
        # The first read replays what happened before the lines written since the dashboard
        # opened ("watching batch", the engine's liveness): those go after it.
        since = list(self.lines) if previous is None else []
        if since:
            self.clear()
        now = self.clock()
        for at, text in sorted(lines, key=lambda line: now if line[0] is None else line[0]):
            self.write_event(text, at=at)
        if since:
            self.write_lines(since)
        self._acked(live)

    def sent(self, sent: Sent, what: str) -> None:
        """``what`` (``pause``, ``retry #3``) was appended to control.jsonl: await its ack."""
        cmd_id = sent.cmd.id
        self._pending[cmd_id] = _Pending(sent, what, time.monotonic())
        note = ""
        if sent.status.liveness == Liveness.STALE:
            note = f"; the engine is not responding ({sent.status.badge().lower()}): it applies it if it wakes"
        self.write_event(f"sent {what} ({cmd_id}){note}")
        if self.live is not None:
            self._acked(self.live)  # it may have been acknowledged before we got here

    def check_acks(self, timeout: float) -> None:
        """Report once each command with no acknowledgement after ``timeout`` seconds."""
        now = time.monotonic()
        for cmd_id, pending in list(self._pending.items()):
            waited = now - pending.at
            if waited < timeout:
                continue
            self._pending.pop(cmd_id)
            self._late[cmd_id] = pending
            text = NotAcknowledged(self.bdir, pending.sent.cmd, self.engine, waited).describe(pending.what, brief=True)
            self.write_event(text)
            self.notify(clean(text), severity="warning", timeout=6)

    def _acked(self, live: LiveProgress) -> None:
        for cmd_id, pending in list(self._pending.items()):
            if cmd_id in live.acked:
                result = live.control_results.get(cmd_id, "done")
                self._pending.pop(cmd_id)
                self.write_event(f"{pending.what}: {result}")
                self.notify(clean(f"{pending.what}: {result}"), timeout=3)
        for cmd_id, pending in list(self._late.items()):
            if cmd_id in live.acked:
                result = live.control_results.get(cmd_id, "done")
                self._late.pop(cmd_id)
                late = f"{pending.what}: {result} (acknowledged late, after {time.monotonic() - pending.at:.0f}s)"
                self.write_event(late)
                self.notify(clean(late), timeout=4)


def wrap_line(line: str, width: int, console: Console) -> list[str]:
    """``line`` in rows of at most ``width`` cells, broken between words where it can be; the
    rows after the first are indented past its time stamp, if it has one and there is room."""
    indent = 9 if _STAMP.match(line) and width >= 29 else 0
    body = Text(line[indent:]).wrap(console, width - indent, overflow="fold")
    rows = [row.plain.rstrip() for row in body] or [""]
    return [line[:indent] + rows[0]] + [" " * indent + row for row in rows[1:]]


def _epoch(iso: str) -> float | None:
    """An event's time from live_progress.json; None (the app's clock) if unreadable."""
    try:
        return parse_iso(iso)
    except ValueError:
        return None


def _state_since(live: LiveProgress, *, replayed: bool) -> float | None:
    """When the batch came to ``live.state``: the write that first shows a new state was made
    when it changed. A state read as the dashboard opens is older: a running batch has run
    since its run began (``run_elapsed_s`` before the write); an ended one ended at its last
    write; any other (paused, stopping) is known to hold as of the write, no earlier."""
    at = _epoch(live.updated_at)
    if at is not None and replayed and live.state == BatchState.RUNNING and live.run_elapsed_s is not None:
        return at - live.run_elapsed_s
    return at


def _warning(line: str) -> tuple[float | None, str]:
    """A warning of live_progress.json, ``"<ISO time> text"`` (engine/runstate.py): its time
    and its text; a line with no time is all text (the app's clock stamps it)."""
    stamp, _, text = line.partition(" ")
    at = _epoch(stamp) if text else None
    return (at, text) if at is not None else (None, line)
