"""Messages of the TUI, as dataclasses: what a background thread or a widget tells the screens.

Threads post them (``post_message`` is thread-safe); a stale progress update is replaced by the
next one in the queue, never queued behind it (``can_replace``).

The queue's order is not always the order of the reads: a thread's post reaches the queue through
the event loop (``call_soon_threadsafe``), when it next runs its callbacks, while the UI thread's
(the dashboard's tick) goes in at once. A watch thread that read "running" and posted it, then a
tick that read the engine's last write, "finished", before the loop ran again: "running" came
last and stayed, for good (the watcher kept the new file's stamp). So a file's message carries
the order it was read in (:attr:`LiveUpdated.order`), a later read replaces an earlier one in the
queue and not the other way round, and a handler passes over a read older than one it handled
(:func:`on_latest`).
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from textual import on
from textual.message import Message

from batchtui.engine.fmt import clean
from batchtui.engine.models import LiveProgress, Manifest

__all__ = ["EngineFinished", "FileDamaged", "LiveUpdated", "ManifestUpdated", "on_latest"]

#: The order the files' messages are made in: the watcher makes each under its lock, right after
#: its read, so a later read has a higher number.
_reads = itertools.count(1)


def _next_read() -> int:
    return next(_reads)


@dataclass
class LiveUpdated(Message):
    """live_progress.json of the watched batch changed (stale ones are replaced, not queued)."""

    batch: Path
    live: LiveProgress
    order: int = field(default_factory=_next_read, compare=False)

    def can_replace(self, message: Message) -> bool:
        # Textual asks the message taken from the queue whether the next one may be handled
        # instead: only a later read may (an earlier one is passed over: on_latest).
        return isinstance(message, LiveUpdated) and message.batch == self.batch and message.order > self.order


@dataclass
class ManifestUpdated(Message):
    """manifest.json of the watched batch changed."""

    batch: Path
    manifest: Manifest
    order: int = field(default_factory=_next_read, compare=False)

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ManifestUpdated) and message.batch == self.batch and message.order > self.order


@dataclass
class FileDamaged(Message):
    """manifest.json (and its backup) or live_progress.json of the watched batch cannot be
    parsed: posted once for each damage (the watcher reads it again at every poll)."""

    batch: Path
    name: str
    reason: str

    def line(self, *, shown: bool) -> str:
        """The event log's line; ``shown``: figures read before are on the screen (and stay)."""
        return f"{self.name} is damaged ({clean(self.reason)})" + (": the last good figures stay" if shown else "")


@dataclass
class EngineFinished(Message):
    """The engine running in this app's worker thread returned."""

    batch: Path
    exit_code: int
    state: str
    #: Why it halted, when it did (a failure rate, a full disk, its folder moved away).
    halt_reason: str | None = None


_Receiver = TypeVar("_Receiver")
_Read = TypeVar("_Read", LiveUpdated, ManifestUpdated)
_Handler = Callable[[_Receiver, _Read], None]


def on_latest(message_type: type[_Read]) -> Callable[[_Handler[_Receiver, _Read]], _Handler[_Receiver, _Read]]:
    """Textual's ``@on(message_type)`` for a file's message, passing over a read older than one
    the handler handled: a watch thread's post can reach the queue after a later read's (the
    module's docstring)."""

    def decorate(handler: _Handler[_Receiver, _Read]) -> _Handler[_Receiver, _Read]:
        handled: weakref.WeakKeyDictionary[_Receiver, int] = weakref.WeakKeyDictionary()

        @functools.wraps(handler)
        def handle(receiver: _Receiver, message: _Read) -> None:
            if message.order < handled.get(receiver, 0):
                return
            handled[receiver] = message.order
            handler(receiver, message)

        return on(message_type)(handle)

    return decorate
