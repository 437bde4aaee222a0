"""Messages of the TUI, as dataclasses: what a background thread or a widget tells the screens.

Threads post them (``post_message`` is thread-safe); a stale progress update is replaced by the
next one in the queue, never queued behind it (``can_replace``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from batchtui.engine.models import LiveProgress, Manifest

__all__ = ["EngineFinished", "LiveUpdated", "ManifestUpdated"]


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
class EngineFinished(Message):
    """The engine running in this app's worker thread returned."""

    batch: Path
    exit_code: int
    state: str
    #: Why it halted, when it did (a failure rate, a full disk, its folder moved away).
    halt_reason: str | None = None
