"""The garbage collector while the ``batchtui`` process starts: off, then back with what the
start made frozen.

A verb's start is imports (click, pydantic, the engine's modules and models: some 4*10^4
objects, nearly all of them alive until the process ends). Each 700 new objects set off a
collection, and the older generations are gone through again and again: about 80 collections,
10 ms of a 1-item run's 210 ms on one core here, and for 3,000 short commands that start is most
of what a run loses to xargs (issue 22).

So :func:`pause` (the console script's first step) turns the collector off, and :func:`resume`
(the group's own callback, which every invocation passes once the verb's module is imported,
and before the batch browser starts when no verb is given) freezes what exists then, which
later collections leave out, and turns it back on, before any work of the verb (a ``--call``
function of the user's included) runs. Only ``--help``, ``--version`` and a usage error end the
process before it, at once. A process whose collector was already off (a host that set its own
policy) is left as it is; so is a program that calls the click group in-process (tests,
scripts): only :func:`pause` makes :func:`resume` do anything.

What the start left as garbage in cycles is frozen with the rest and never freed: about 530
objects, 140 KB, once (mostly the classes ``@dataclass(slots=True)`` builds twice, dropping
one). A collection to free them first would cost 12 ms, more than all the start's collections.
"""

from __future__ import annotations

import gc

__all__ = ["pause", "resume"]

_paused = False


def pause() -> None:
    """Turn the collector off while the process starts (if it is on)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """The start is over: freeze what it made and turn the collector back on (only if
    :func:`pause` turned it off)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
