"""Which of the dashboard's keys apply now, and why not: the screen asks here for its
``check_action``, the command palette's greyed entries, the footer's order and the toast of a
key that does nothing now.

While an engine reads the batch's source (the state stays ``created``: nothing runs before the
whole source is read, engine/reading.py), there is nothing to pause, stop or resume: those keys
leave the footer and answer with a toast that says why. A retry, skip or run first is queued in
control.jsonl and applied once the items run, as the event log says.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from batchtui.engine.batchdir import HOST
from batchtui.engine.fmt import shell_line
from batchtui.engine.models import ACTIVE_STATES, BatchState, LiveProgress
from batchtui.engine.reading import SourceReading, source_reading

from .dashboard_layout import TINY_BELOW
from .resume_dialog import rescannable, resumable

if TYPE_CHECKING:
    from .dashboard import DashboardScreen

__all__ = ["DashboardGates"]

#: Keys that do nothing while the engine reads the source (binding ids: footer; actions: keys).
_IDLE_WHILE_READING = {"pause": "toggle_pause", "stop": "stop", "resume_batch": "resume_batch"}
#: The keys of the items and the errors tables: hidden while the event log has the whole screen
#: (``l``): they acted on a table no one could see (enter opened an item, s skipped it, / opened
#: a filter field that took the keys typed next).
_ON_THE_TABLES = frozenset(
    {"bulk", "retry_group", "mark_all", "mark", "mark_range", "sort", "details", "filter", "tab"}
    | {"focus_errors", "focus_items"}
)


class DashboardGates:
    """The key rules of one :class:`~.dashboard.DashboardScreen` (a plain object it owns)."""

    def __init__(self, screen: DashboardScreen) -> None:
        self.screen = screen

    def held_text(self) -> str:
        """Why the batch cannot be resumed while its lock is held, and by whom."""
        s = self.screen
        holder = s.engine.holder
        if not s.in_process_engine and holder is not None and (holder.pid, holder.host) == (os.getpid(), HOST):
            # This app's engine ended, but Python calls it could not stop (a stop's, or timed-out
            # ones given up) still run in its threads: the lock stays with this process.
            again = shell_line("batchtui", "resume", s.bdir.batch_id, "--output-dir", s.bdir.path.parent)
            return (
                "this app still runs Python calls its engine could not stop (a thread cannot be"
                " stopped): the batch stays locked until they return, so that none of them runs twice;"
                f" or quit the app (they end with it), then: {again}"
            )
        where = "this app" if s.in_process_engine else f"pid {s.engine.pid}"
        return f"an engine ({where}) runs this batch: nothing to resume"

    @property
    def engine_live(self) -> bool:
        """An engine holds the batch and runs it (running, paused, stopping)."""
        s = self.screen
        return s.engine.held and s.live is not None and s.live.state in ACTIVE_STATES

    @property
    def reading(self) -> bool:
        """An engine (this app's or another) reads the batch's source: nothing runs yet."""
        reading = self.screen.reading
        return reading is not None and reading.engine

    @property
    def resumable(self) -> bool:
        """No engine holds the batch and a resume has something to do (resume_dialog.py)."""
        s = self.screen
        state = s.live.state if s.live is not None else s.manifest.state if s.manifest else None
        counts = s.live.counts if s.live is not None else s.manifest.totals if s.manifest else None
        held = s.engine.held or s.in_process_engine
        again = s.manifest is not None and rescannable(s.manifest.source, s.manifest.added_sources)
        return counts is not None and not s.gone and resumable(state, counts, held, again)

    def source_reading(self, live: LiveProgress | None) -> SourceReading | None:
        """What the screen shows of the batch's enqueue (engine/reading.py), read now: None
        unless the batch is still ``created``."""
        s = self.screen
        if s.manifest is None or s.manifest.state != BatchState.CREATED or s.gone:
            return None
        reading = source_reading(s.bdir, s.engine, live)
        if reading is not None and not reading.engine and s.in_process_engine:
            return reading._replace(engine=True)  # this app's engine, its lock not taken yet
        return reading

    def idle(self, action: str) -> bool:
        """Whether ``action``'s key does nothing now (the engine reads the source): if so, a
        toast says why."""
        why = self.while_reading(action)
        if why is not None:
            self.screen.notify(why, severity="warning", timeout=6)
        return why is not None

    def while_reading(self, action: str) -> str | None:
        """The toast of a key that does nothing while the engine reads the source, or None."""
        if action not in _IDLE_WHILE_READING.values() or not self.reading:
            return None
        s = self.screen
        who = "this app's engine" if s.in_process_engine else f"the engine (pid {s.engine.pid})"
        what = {"toggle_pause": "nothing runs yet to pause", "stop": "nothing runs yet to stop"}
        reading = s.reading
        when = reading.note() if reading is not None else "its items run once the whole source is read"
        return f"{who} is reading the batch's source: {what.get(action, 'nothing to resume')}; {when}"

    def may(self, action: str) -> bool | None:
        """``check_action`` for the batch's state: True runs, None greys."""
        if self.while_reading(action) is not None:
            return True  # the key answers why it does nothing
        if action == "filter" and self.screen.focused is not None and self.screen.focused.id == "filter":
            return False  # "/" typed in the field is text (its binding has priority)
        if action in _ON_THE_TABLES and self.screen.maximized is not None:
            return False
        if action in ("toggle_pause", "stop"):
            if not self.engine_live:
                return None  # greyed out: nothing to pause or stop
            live = self.screen.live
            if live is not None and live.state == BatchState.STOPPING:
                return None
        return True

    def footer_first(self, first: tuple[str, ...]) -> tuple[str, ...]:
        """``first`` (the screen's FOOTER_FIRST) with pause and stop after quit when an engine
        runs the batch, resume when none holds it, neither while one reads its source."""
        steer = () if self.reading else ("pause", "stop") if self.engine_live else ("resume_batch",)
        return (*first[:2], *steer, *first[2:])

    def footer_hidden(self) -> frozenset[str]:
        """Binding ids the footer leaves out now (their keys still answer)."""
        return frozenset(_IDLE_WHILE_READING) if self.reading else frozenset()

    def unavailable(self, action: str) -> str | None:
        """Why ``action`` cannot apply now (the palette greys it with this), or None."""
        s = self.screen
        reading = self.while_reading(action)
        if reading is not None:
            return reading
        if action in ("toggle_pause", "stop"):
            if not self.engine_live:
                return "no engine runs this batch"
            if s.live is not None and s.live.state == BatchState.STOPPING:
                return "the batch is stopping"
        if action == "focus_errors" and s.has_class("tiny"):
            return f"the errors need {TINY_BELOW} rows, the terminal has {s.size.height}"
        if action == "resume_batch" and s.gone:
            return "the batch folder is gone"
        if action == "resume_batch" and not self.resumable:
            if s.engine.held or s.in_process_engine:
                return "an engine runs this batch"
            return "the batch is finished: nothing to resume"
        return None
