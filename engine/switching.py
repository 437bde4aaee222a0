"""The GIL switch interval while runs go on: shortened by the first run that starts, restored by
the last one that ends.

The interval is process-wide, and a library must not leave it changed. Runs may overlap in one
process (several runners on threads of one program, the TUI's own engine next to its app), so
one run's save and restore around its own life would leave the process with another run's value
once they end out of order. Here the first run saves the value and the last one restores it,
unless something else in the process changed it meanwhile: that value is then kept.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["release", "shorten"]

_lock = threading.Lock()
_runs = 0
_saved = 0.0  # the interval before the first run
_ours = 0.0  # the interval the first run set


def shorten(interval: float) -> None:
    """A run starts: the switch interval becomes at most ``interval`` until the last run ends.
    Pair each call with one :func:`release` (in a ``finally``)."""
    global _runs, _saved, _ours
    with _lock:
        if _runs == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved, interval))
            _ours = sys.getswitchinterval()
        _runs += 1


def release() -> None:
    """A run ended: the last one puts the interval back as it found it."""
    global _runs
    with _lock:
        _runs -= 1
        if _runs == 0 and sys.getswitchinterval() == _ours:
            sys.setswitchinterval(_saved)
