"""An exception's traceback as text, as :class:`traceback.TracebackException` writes it, with
the frames of a place that already failed written once.

A failing item's detail is its traceback, and formatting one costs more than many items do:
about 40 us on Python 3.11, most of it finding each frame's line and its ``^^^^`` marks (an
``ast.parse`` of the line). A batch that fails, fails at the same few places over and over
(60,000 quick calls of which 60% failed spent a third of their worker time here), and the
frames' text of a place is the same each time: it depends only on each frame's code and the
instruction it was at. So that text is kept by those, and only the exception's own lines (its
type and message, which differ from item to item) are written each time.
A ``sys.tracebacklimit`` set (by a callable) also takes the whole path.

Only a lone exception takes this path: one with a cause or a context shown, or an exception
group, is written whole by the traceback module each time (the chain's texts would need their
own keys). A source file edited while the run goes on keeps its first text for a place, the
code that runs being the code that was loaded; the traceback module would show the new line.
"""

from __future__ import annotations

import sys
import threading
import traceback
from types import CodeType, TracebackType
from typing import Final

#: Places kept (a batch fails at a few): past this many, the texts start over.
PLACES: Final = 512
#: Deeper stacks are not kept (a runaway recursion, each one different): written whole.
DEPTH: Final = 100
HEADER: Final = "Traceback (most recent call last):\n"

_frames: dict[tuple[tuple[CodeType, int], ...], str] = {}
_lock = threading.Lock()


def format_traceback(exc: BaseException, tb: TracebackType | None) -> str:
    """``exc`` with the traceback ``tb`` (its own, or a later part of it), as
    ``"".join(traceback.TracebackException(type(exc), exc, tb).format())`` writes it."""
    if tb is None or not _lone(exc) or hasattr(sys, "tracebacklimit"):
        return "".join(traceback.TracebackException(type(exc), exc, tb).format())
    key = _place(tb)
    frames = _frames.get(key) if key is not None else None
    if frames is None:
        whole = traceback.TracebackException(type(exc), exc, tb)
        frames = "".join(whole.stack.format())
        if key is not None:
            with _lock:
                if len(_frames) >= PLACES:
                    _frames.clear()
                _frames[key] = frames
        return HEADER + frames + "".join(whole.format_exception_only())
    return HEADER + frames + "".join(traceback.format_exception_only(type(exc), exc))


def _lone(exc: BaseException) -> bool:
    """No cause nor context shown with it, and not a group (whose members are shown too)."""
    if exc.__cause__ is not None or isinstance(exc, BaseExceptionGroup):
        return False
    return exc.__context__ is None or exc.__suppress_context__


def _place(tb: TracebackType) -> tuple[tuple[CodeType, int], ...] | None:
    """Each frame's code and instruction, from ``tb`` on (None: too deep to keep)."""
    place: list[tuple[CodeType, int]] = []
    at: TracebackType | None = tb
    while at is not None:
        if len(place) == DEPTH:
            return None
        place.append((at.tb_frame.f_code, at.tb_lasti))
        at = at.tb_next
    return tuple(place)
