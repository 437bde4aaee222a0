"""Signals held back over the few lines a KeyboardInterrupt must not cut in two.

The CLI turns Ctrl-C, SIGTERM and SIGHUP into a KeyboardInterrupt (tui/cli/group.py), raised in
the main thread wherever it is. Raised inside ``threading.Thread.start`` or a ``queue.Queue.put``
that waits, it can land between a lock's acquire and its release in :class:`threading.Condition`
(CPython's lock dance there is not safe against an asynchronous exception), and the verb died with
``RuntimeError: release unlocked lock`` and exit 1, not 130, or left a writer thread that was
never joined. Such steps run inside :func:`held_signals`: a signal that comes meanwhile is noted
and given to the handler it would have reached once the step is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["HELD", "held_signals"]

#: The signals the CLI ends a verb by (DESIGN: exit 130 for the three).
HELD: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def held_signals(signals: tuple[signal.Signals, ...] = HELD) -> Iterator[None]:
    """Run the body whole: ``signals`` that come meanwhile reach their handlers at its end (the
    first one that came; a KeyboardInterrupt is then raised there, after the body). Outside the
    main thread (where Python runs no signal handler) this holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[tuple[int, FrameType | None]] = []

    def note(signum: int, frame: FrameType | None) -> None:
        came.append((signum, frame))

    before: dict[signal.Signals, signal.Handlers | object] = {}
    try:
        for sig in signals:
            before[sig] = signal.signal(sig, note)
    except ValueError:  # an embedding program's thread that calls itself main: nothing held
        pass
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]  # what getsignal gave back
        if came:
            signum, frame = came[0]
            handler = before.get(signal.Signals(signum))
            if callable(handler):
                handler(signum, frame)  # the CLI's: raises KeyboardInterrupt here
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)  # its default action, now that it is back in place
