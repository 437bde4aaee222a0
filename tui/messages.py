"""Messages the TUI's background threads post to the app (thread-safe via post_message)."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from batchtui.engine.models import LiveProgress, Manifest


class LiveUpdated(Message):
    """live_progress.json of the watched batch changed (stale ones are replaced, not queued)."""

    def __init__(self, batch: Path, live: LiveProgress) -> None:
        super().__init__()
        self.batch = batch
        self.live = live

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LiveUpdated) and message.batch == self.batch


class ManifestUpdated(Message):
    """manifest.json of the watched batch changed."""

    def __init__(self, batch: Path, manifest: Manifest) -> None:
        super().__init__()
        self.batch = batch
        self.manifest = manifest

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ManifestUpdated) and message.batch == self.batch


class EngineFinished(Message):
    """The engine running in this app's worker thread returned."""

    def __init__(self, batch: Path, exit_code: int, state: str) -> None:
        super().__init__()
        self.batch = batch
        self.exit_code = exit_code
        self.state = state
