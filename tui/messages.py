"""Messages of the TUI, as dataclasses: what a background thread or a widget tells the screens.

Threads post them (``post_message`` is thread-safe); a stale progress update is replaced by the
next one in the queue, never queued behind it (``can_replace``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from batchtui.engine.fmt import clean
from batchtui.engine.models import LiveProgress, Manifest

__all__ = ["EngineFinished", "FileDamaged", "LiveUpdated", "ManifestUpdated"]


@dataclass
class LiveUpdated(Message):
    """live_progress.json of the watched batch changed (stale ones are replaced, not queued)."""

    batch: Path
    live: LiveProgress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LiveUpdated) and message.batch == self.batch


@dataclass
class ManifestUpdated(Message):
    """manifest.json of the watched batch changed."""

    batch: Path
    manifest: Manifest

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ManifestUpdated) and message.batch == self.batch


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
