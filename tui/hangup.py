"""Noticing that the terminal is gone, whatever the app is doing at that moment.

A terminal dies in several ways: SIGHUP (an SSH drop, a closed window, a killed tmux pane),
SIGTERM (a session manager ending the login), or a tty that simply hung up: reads give
end-of-file or EIO, writes EIO. Textual's Linux driver does not end the app on the last
three: its input thread reads end-of-file in a busy loop (Textual PR #6690) or dies on EIO and
asks the event loop to panic; its writer thread dies on EIO, after which the app's next frame
blocks on the writer's full queue, and the event loop with it. A signal handler installed with
``loop.add_signal_handler`` runs on that event loop, so it can hang with it: a TUI once
outlived its killed tmux session by 35 minutes, reparented to init.

So :class:`TerminalWatch` depends on nothing of the event loop: Python-level signal handlers
(they run between the main thread's bytecodes, whatever the loop does) and a thread that
polls the tty for a hang-up both call :meth:`TerminalWatch.trigger`, which runs the app's
callback once, on a thread of its own. Linux reports a hung-up tty to ``poll`` at once
(POLLHUP); elsewhere (macOS cannot ``poll`` a tty) a cheap ``tcgetattr`` probe twice a second
notices it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import select
import signal
import sys
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchtui.engine.interrupts import catch

WATCHED_SIGNALS = (signal.SIGHUP, signal.SIGTERM)
PROBE_INTERVAL_S = 0.5


def terminal_fd() -> int | None:
    """The fd of the controlling terminal the app draws on: stdin, else stderr, else stdout."""
    for fd in (0, 2, 1):
        with contextlib.suppress(OSError, ValueError):
            if os.isatty(fd):
                return fd
    return None


def tty_gone(fd: int | None) -> bool:
    """Whether the tty on ``fd`` hung up or closed (a live one answers ``tcgetattr``)."""
    if fd is None:
        return False
    try:
        termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):
        return True
    return False


def silence_terminal() -> None:
    """Point stdout and stderr at /dev/null once the tty is gone: writes there would fail with
    EIO (a traceback from a thread, Textual's writer dying, the exit report), and a writer that
    died leaves the next frame blocked. /dev/null takes everything."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                if not os.isatty(fd) or tty_gone(fd):
                    os.dup2(null, fd)
    finally:
        os.close(null)


class TerminalWatch:
    """Calls ``on_gone(reason)`` once, on a thread of its own, when the terminal goes away.

    ``start`` installs handlers for SIGHUP and SIGTERM, each unless it was ignored when the
    process started (from the main thread; the previous handlers come back on ``stop``) and starts the tty poll. ``trigger`` may be called by
    anyone who finds the terminal gone (the app after an input error, say).
    """

    def __init__(self, on_gone: Callable[[str], None], fd: int | None = None) -> None:
        self.on_gone = on_gone
        self.fd = terminal_fd() if fd is None else fd
        self.reason: str | None = None
        self.done = threading.Event()  # set when on_gone has returned
        # next() on a count is one C call: the first caller wins even when a second signal's
        # handler interrupts the first one's (a lock held by the main thread would deadlock).
        self._calls = itertools.count()
        self._stop = threading.Event()
        self._old: dict[signal.Signals, Any] = {}
        self._poller: threading.Thread | None = None
        # What the signal handlers noted, for the relay thread to trigger on (None: stop).
        self._noted: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    @property
    def fired(self) -> bool:
        return self.reason is not None

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread():
            # One ignored when this process started stays ignored (nohup's SIGHUP): the tty
            # poll below still sees the terminal go.
            with contextlib.suppress(OSError, ValueError):
                self._old.update(catch(WATCHED_SIGNALS, self._on_signal))
            if self._old:
                threading.Thread(target=self._relay, name="batchtui-signal-relay", daemon=True).start()
        if self.fd is not None:
            self._poller = threading.Thread(target=self._poll, name="batchtui-tty-watch", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        """Stop watching; the previous signal handlers are back (main thread only)."""
        self._stop.set()
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old.items():
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(sig, old)
            if self._old:
                self._noted.put(None)  # the relay ends
            self._old.clear()

    def trigger(self, reason: str) -> bool:
        """Run ``on_gone(reason)`` on a new thread, the first time only; True if this call did."""
        if next(self._calls):
            return False
        self.reason = reason
        # Not a daemon: an interpreter that is shutting down waits for the hand-off to finish.
        threading.Thread(target=self._run, args=(reason,), name="batchtui-terminal-gone").start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for ``on_gone`` to return (True), if it was triggered."""
        return self.done.wait(timeout) if self.fired else True

    def _run(self, reason: str) -> None:
        try:
            self.on_gone(reason)
        finally:
            self.done.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Noted for the relay thread, nothing more: a handler runs on the main thread between
        any two of its bytecodes, and the thread :meth:`trigger` starts takes threading's own
        lock, which the main thread may hold right then (starting a worker thread, say): the
        app would wait for itself. ``SimpleQueue.put`` takes no lock (it is reentrant)."""
        self._noted.put(f"{signal.Signals(signum).name} received")

    def _relay(self) -> None:
        while (reason := self._noted.get()) is not None:
            self.trigger(reason)

    def _poll(self) -> None:
        fd = self.fd
        assert fd is not None
        if sys.platform == "linux":
            poller = select.poll()
            poller.register(fd, 0)  # no events asked: only POLLHUP, POLLERR and POLLNVAL come back
            while not self._stop.is_set():
                try:
                    if poller.poll(250):
                        break
                except OSError:
                    break
        else:
            while not self._stop.wait(PROBE_INTERVAL_S):
                if tty_gone(fd):
                    break
        if not self._stop.is_set():
            self.trigger("the terminal hung up")


@dataclass(frozen=True)
class HandOff:
    """What became of the batch when this app's engine had to go.

    ``pid``: the background engine started for it (it may still be waiting for the lock);
    ``error``: why no background engine took it (said on the terminal, or in engine.log);
    ``note``: why none was needed (the engine finished or halted here meanwhile).
    """

    pid: int | None = None
    error: str | None = None
    note: str | None = None
