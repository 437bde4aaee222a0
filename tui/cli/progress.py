"""The headless progress line of the contract (DESIGN section 8) and the printer that repeats it.

``Progress: 15/26 (15 ok, 0 failed, 0 skipped) | 4.2/s | elapsed 5s | ETA 3s | RSS 120 MB``,
made from live_progress.json (the one source every view reads): a line a refresh on a
terminal, a line every ``--progress-interval`` seconds in a log. The ETA reads as the
dashboard's (engine/eta.py's eta_text): ``ETA 3s``, a range ``ETA 4-6 min``, or ``stalled 1m30s``.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import sys
import time
from collections.abc import Callable
from typing import Final, TextIO

from batchtui.engine.eta import eta_text
from batchtui.engine.fmt import fmt_duration
from batchtui.engine.models import BatchState, LiveProgress


def progress_line(live: LiveProgress) -> str:
    """The headless progress line of the contract, from live_progress (the one source)."""
    c = live.counts
    rss = live.memory.rss_mb + live.memory.children_rss_mb
    line = (
        f"Progress: {c.finished}/{live.total} ({c.complete} ok, {c.failed} failed, {c.skipped} skipped)"
        f" | {live.rate_per_s:.1f}/s | elapsed {fmt_duration(live.elapsed_s)} | {eta_text(live)}"
        f" | RSS {rss:.0f} MB"
    )
    if live.state not in (BatchState.RUNNING, BatchState.FINISHED):
        line += f" | {live.state.value}"
    if live.start_hold and live.state is not BatchState.FINISHED:
        line += " | commands cannot start: waiting for room"  # the warning said why; `show` too
    return line


#: A write that says the reader is gone: a closed pipe (``| head``), a hung-up terminal.
_GONE_ERRNOS: Final = frozenset({errno.EPIPE, errno.EIO, errno.ENXIO})


class ProgressPrinter:
    """Prints a progress line every ``interval`` seconds (and on state changes): rewritten in
    place on a terminal, one line each time elsewhere.

    When the lines' reader goes away (``batchtui run ... 2>&1 | head``, a terminal hung up)
    nothing more is printed and ``on_gone`` is called once: the engine stops as on SIGHUP,
    gracefully, its files whole and the batch resumable. The error used to escape into the
    engine's loop, which ended without its report and with its counts half written."""

    def __init__(
        self, interval: float, stream: TextIO | None = None, on_gone: Callable[[], None] | None = None
    ) -> None:
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.on_gone = on_gone
        self.gone = False
        self._last = 0.0
        self._state: BatchState | None = None
        self._pending_newline = False

    def __call__(self, live: LiveProgress) -> None:
        if self.gone:
            return
        try:
            self._print(live)
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError) and exc.errno not in _GONE_ERRNOS:
                raise
            self.gone = True
            if self.on_gone is not None:
                self.on_gone()

    def _print(self, live: LiveProgress) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and live.state == self._state:
            return
        self._last = now
        self._state = live.state
        line = progress_line(live)
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r" + line[: width - 1].ljust(width - 1))
            self._pending_newline = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._pending_newline and not self.gone:
            self._pending_newline = False
            with contextlib.suppress(OSError):  # gone since: the summary's write will say so
                self.stream.write("\n")
                self.stream.flush()


class EnqueueNote:
    """``  enqueued 1,400,000 items...`` while ``run`` reads a big source: on a terminal one line
    rewritten in place, at most four times a second, and ended before the next line; in a log a
    line at most every ``log_every`` seconds (a 20M-line source printed 200 lines, 60 on a
    terminal, before the dashboard's first frame). Called with the items read so far."""

    def __init__(
        self, stream: TextIO | None = None, *, log_every: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._every = 0.25 if self.tty else log_every
        self._clock = clock
        self._next = 0.0
        self._pending_newline = False

    def __call__(self, n: int) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._every
        with contextlib.suppress(OSError):  # a hung-up terminal: the read goes on, said or not
            if self.tty:
                self.stream.write(f"\r  enqueued {n:,} items...\x1b[K")
                self._pending_newline = True
            else:
                self.stream.write(f"  enqueued {n:,} items...\n")
            self.stream.flush()

    def close(self) -> None:
        """The line ended (the source is read, or its reading failed)."""
        if self._pending_newline:
            self._pending_newline = False
            with contextlib.suppress(OSError):
                self.stream.write("\n")
                self.stream.flush()


__all__ = ["EnqueueNote", "ProgressPrinter", "progress_line"]
