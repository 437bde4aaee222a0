"""A kernel timer one thread waits on and others set, without waking it (Linux timerfd, ctypes).

The outbox's flusher (.outbox) must hand over a group of outcomes that waited
:data:`.outbox.REPORT_EVERY_S` for the item after it. With a condition variable, each group
woke the flusher twice: once to say when (the flusher slept with nothing to watch), then at the
deadline, though the chunk had mostly ended by then and the group had left. In a pool worker
each wake-up asks the GIL of the thread that runs the items, a switch both ways: 2,000 items of
5 ms on 2 processes made 2,000-2,800 voluntary switches in each worker, about 30 with this
timer. Armed by the worker's own thread (a system call, the GIL kept: it does not block) and
disarmed when the group leaves, the timer wakes the flusher only for a group that really waited
its time.

Python has ``os.timerfd_create`` from 3.13 on; this is the same system call for 3.11 and 3.12.
Elsewhere (macOS, the BSDs), or when the system refuses a timer, :func:`make` gives None and the
outbox keeps its condition variable.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Final

__all__ = ["Timer", "make"]

_CLOCK_MONOTONIC: Final = 1  # time.monotonic's and time.perf_counter's clock on Linux
_TFD_CLOEXEC: Final = os.O_CLOEXEC
_NS: Final = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc: ctypes.PyDLL | None = None
_loaded = False


def _load() -> ctypes.PyDLL | None:
    # PyDLL: the GIL is kept through the call. timerfd_settime never blocks, and letting the GIL
    # go would hand it to another thread (the point is to switch to none).
    global _libc, _loaded
    if not _loaded:
        _loaded = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.PyDLL(None, use_errno=True)
                libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            except (OSError, AttributeError):
                return None
            _libc = libc
    return _libc


class Timer:
    """A one-shot timer on the monotonic clock: :meth:`arm` and :meth:`disarm` from any thread,
    :meth:`wait` in one. Setting it again replaces what it was set to, and forgets an expiry
    not yet waited for."""

    def __init__(self, libc: ctypes.PyDLL) -> None:
        self._settime = libc.timerfd_settime
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_create: {os.strerror(code)}")
        self.fd: int = fd
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)

    def arm(self, delay: float) -> None:
        """Expire ``delay`` seconds from now (at once, if not positive)."""
        ns = max(1, int(delay * _NS))  # 0 would disarm it
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(ns, _NS)
        self._set()

    def disarm(self) -> None:
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        self._set()

    def _set(self) -> None:
        # The callers hold one lock around each call: the shared spec is not raced over.
        if self._settime(self.fd, 0, self._ref, None) < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_settime: {os.strerror(code)}")

    def wait(self) -> None:
        """Block until the timer expires (it may have already: then at once)."""
        os.read(self.fd, 8)


def make() -> Timer | None:
    """A new timer, or None where there is none (not Linux, or the system refused one:
    out of descriptors)."""
    libc = _load()
    if libc is None:
        return None
    try:
        return Timer(libc)
    except OSError:
        return None
