"""Handing the batch of the app's engine to a background engine without cutting work short.

Items may be paid calls: one killed half-way is paid twice when the next engine runs it again.
So a hand-off (``q`` then Background, a terminal that hung up, an app that ended while its
engine ran) first *drains* the engine in the app: nothing more starts there (work handed out
and not started goes back to pending at once, as a stop does), the running items end on their
own (each within its ``--timeout`` if one is set), then a background engine takes the batch
and runs the rest. The app is gone meanwhile: the terminal gets one line saying what it waits
for, and a Ctrl-C there cuts the wait short (the running items are killed and run again by the
background engine). With no terminal the process drains the same way, silently.

A ``kill -9`` at any moment loses and doubles nothing: the batch's lock and the watchdog of
engine/reaper.py make the items die with this process, and ``batchtui resume`` runs them once
more; results.jsonl records each item once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable

from batchtui.engine.batchdir import BatchDir, now_iso
from batchtui.engine.fmt import clean, fmt_duration
from batchtui.engine.models import BatchState
from batchtui.engine.runner import BatchRunner

#: How long a hand-off waits for an operator's stop (or a halt) under way to end, past its grace.
HANDOFF_GRACE_S = 3.0
#: How long the hand-off engine waits for this app's engine (or any other) to let go of the batch.
HANDOFF_LOCK_WAIT_S = 30.0
#: How often the wait looks at the engine (to say what it waits for once the drain is under way).
POLL_S = 0.1


def engine_log(batch: BatchDir, line: str) -> None:
    """A line for engine.log (the hand-off's only witness once the terminal is gone)."""
    with contextlib.suppress(OSError):
        fd = os.open(batch.engine_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, f"[{now_iso()}] TUI pid {os.getpid()}: {clean(line)}\n".encode())
        finally:
            os.close(fd)


def drain_bound(runner: BatchRunner) -> str:
    """How long the drain may take, in words: each item's --timeout, else until they end."""
    timeout = runner.config.timeout
    if timeout is None:
        return "no --timeout: until they end"
    return f"each within --timeout {fmt_duration(timeout, fine=True)}"


class DrainFigure:
    """How many items were running when a hand-off's drain got under way (the engine
    STOPPING: nothing more starts there), counted once, by the first to ask: engine.log and
    the terminal say the same figure. Counted apart, they said 8 and then 3 (the items that
    ended in between): the terminal's line comes once the app has gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: int | None = None

    def running(self, runner: BatchRunner) -> int:
        """The figure (counted now if this is the first call)."""
        with self._lock:
            if self._running is None:
                self._running = runner.running_items
            return self._running


def wait_drain_under_way(runner: BatchRunner, engine_done: threading.Event) -> None:
    """Wait until the engine has taken a drain in (STOPPING: work handed out and not started is
    taken back, nothing more starts), or has ended."""
    while runner.state != BatchState.STOPPING and not engine_done.wait(POLL_S):
        pass


def drain_line(runner: BatchRunner, running: int) -> str:
    """What the terminal says while the running items end before the hand-off (``running``:
    the :class:`DrainFigure`)."""
    items = "item running at the hand-off finishes" if running == 1 else "items running at the hand-off finish"
    return (
        f"{running} {items} here first ({drain_bound(runner)}), then a background engine runs"
        f" the rest of batch {clean(runner.batch.batch_id)}.\n"
        "  Ctrl-C stops them now (they will be run again)."
    )


def wait_for_handoff(
    done: threading.Event, runner: BatchRunner | None, say: Callable[[str], None] | None, figure: DrainFigure
) -> None:
    """Wait for a hand-off under way (``done``) after the app has gone, however long the
    running items take. ``say`` (None with no terminal) gets the drain's line once (with the
    hand-off's ``figure``), and a Ctrl-C stops the running items now (once; further ones are
    ignored: the kill is under way)."""
    told = interrupted = False
    while True:
        try:
            if done.wait(POLL_S):
                return
            if told or say is None or runner is None or not (runner.draining and runner.state == BatchState.STOPPING):
                continue
            told = True
            running = figure.running(runner)
            if running:
                say(drain_line(runner, running))
        except KeyboardInterrupt:
            if interrupted or runner is None:
                continue
            interrupted = True
            runner.request_stop("Ctrl-C while the running items finished before the hand-off", grace=0.0)
            if say is not None:
                say("\nstopping the running items now: the background engine runs them again")


def say(line: str) -> None:
    """A line on the terminal the app has given back (stderr: stdout may be a pipe)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
