"""Signals held back over the few lines a KeyboardInterrupt must not cut in two.

The CLI turns Ctrl-C, SIGTERM and SIGHUP into a KeyboardInterrupt (tui/cli/group.py), raised in
the main thread wherever it is. Raised inside ``threading.Thread.start`` or a ``queue.Queue.put``
that waits, it can land between a lock's acquire and its release in :class:`threading.Condition`
(CPython's lock dance there is not safe against an asynchronous exception), and the verb died with
``RuntimeError: release unlocked lock`` and exit 1, not 130, or left a writer thread that was
never joined. Such steps run inside :func:`held_signals`: a signal that comes meanwhile is noted
and given to the handler it would have reached once the step is done.

A signal that was ignored when this process started stays ignored (:func:`catch`): ``nohup``
ignores SIGHUP so that a closed terminal does not end the command, and a non-interactive shell
ignores SIGINT (and SIGQUIT) for what it starts with ``&``, so that a Ctrl-C meant for the script
does not reach its background jobs. A handler of batchtui's in their place undid that: a
``nohup batchtui run ... &`` over SSH stopped as the session closed ("SIGHUP received").
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["HELD", "catch", "held_signals", "ignored"]

#: The signals the CLI ends a verb by (DESIGN: exit 130 for the three).
HELD: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def ignored(sig: signal.Signals) -> bool:
    """Whether ``sig`` is ignored in this process (``SIG_IGN``): by whoever started it (batchtui
    never ignores one itself; its pool workers start with some blocked: engine/warmstart.py)."""
    try:
        return signal.getsignal(sig) == signal.SIG_IGN
    except ValueError:  # not a signal this platform has
        return False


def catch(
    signals: tuple[signal.Signals, ...], handler: Callable[[int, FrameType | None], Any]
) -> dict[signal.Signals, Any]:
    """Install ``handler`` for each of ``signals`` that is not :func:`ignored`; the handlers it
    replaced, by signal (give them back with ``signal.signal``). An ignored signal stays ignored:
    the caller of batchtui asked for that (``nohup``, a shell's ``&``). Main thread only
    (``ValueError`` elsewhere, as ``signal.signal`` raises)."""
    return {sig: signal.signal(sig, handler) for sig in signals if not ignored(sig)}


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
        before = catch(signals, note)  # an ignored one stays so: nothing comes to hold
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
