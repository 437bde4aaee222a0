"""A watched batch whose manifest.json (and its backup) or live_progress.json is damaged: the
dashboard says so, by name and reason, instead of showing INTERRUPTED with no figures (opened
on it) or keeping the last figures without a word (damaged while watched)."""

from __future__ import annotations

from pathlib import Path

from batchtui.engine.models import BatchState
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.watch import BatchWatcher
from batchtui.tui.widgets.event_log import EventLog
from batchtui.tui.widgets.status import TitleBar

from .conftest import run
from .fixtures import make_batch
from .test_snapshots import dashboard_open, settle


def _damage(batch: Path, name: str) -> None:
    (batch / name).write_text('{"version": 1, "batch_id": [')
    (batch / f"{name}.bak").unlink(missing_ok=True)


def _events(screen: DashboardScreen) -> str:
    return "\n".join(str(line) for line in screen.query_one(EventLog).lines)


def test_a_dashboard_opened_on_a_damaged_manifest_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED)
    _damage(batch, "manifest.json")
    _damage(batch, "live_progress.json")

    async def body() -> None:
        async with dashboard_open(out, batch) as (_pilot, screen):
            title = str(screen.query_one(TitleBar).render())
            assert "UNREADABLE" in title and "INTERRUPTED" not in title, title
            events = _events(screen)
            assert "manifest.json is damaged (unexpected end of data" in events, events
            assert "live_progress.json is damaged" in events, events

    run(body)


def test_a_manifest_damaged_while_watched_is_said_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, screen):
            _damage(batch, "manifest.json")
            watcher = BatchWatcher(batch, screen.post_message)
            watcher.read_all(force=True)
            watcher.read_all(force=True)  # the next poll: no second line for the same damage
            await settle(pilot)
            assert _events(screen).count("manifest.json is damaged") == 1
            title = str(screen.query_one(TitleBar).render())
            assert "FINISHED" in title, title  # the last good figures stay, said to be the last

    run(body)
