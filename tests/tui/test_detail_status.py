"""The item detail keeps the batch's status line in sight (tui/widgets/status.py ``follow``): an
operator reading one item while the run goes on saw no progress until back on the dashboard."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from textual.widgets import Static

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.widgets.status import ProgressLine, StatusText

from .conftest import run
from .fixtures import FROZEN, make_batch


def _line(screen: ItemDetailScreen) -> str:
    return str(screen.query_one("#detail-progress", ProgressLine).query_one(StatusText).render())


def _app(batch: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=batch.parent, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
    )


def test_the_detail_shows_the_status_line_and_follows_the_dashboards(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "out", state=BatchState.PAUSED, n=300)

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            dashboard = app.screen
            assert isinstance(dashboard, DashboardScreen) and dashboard.live is not None
            await pilot.press("i", "enter")
            await pilot.pause()
            detail = app.screen
            assert isinstance(detail, ItemDetailScreen)
            before = dashboard.live
            assert f"{before.counts.finished:,}/{before.total:,}" in _line(detail)
            # The dashboard reads a newer live_progress.json (running, with no engine holding the
            # batch: INTERRUPTED): the detail's line follows at once.
            counts = before.counts.model_copy(update={"complete": before.counts.complete + 7})
            dashboard.live = before.model_copy(update={"counts": counts, "state": BatchState.RUNNING})
            await pilot.pause()
            text = _line(detail)
            assert f"{before.counts.finished + 7:,}/{before.total:,}" in text and "INTERRUPTED" in text
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is dashboard

    run(body)


def test_a_pending_item_shown_is_read_again_once_the_store_says_it_ran(tmp_path: Path) -> None:
    """The detail of a pending item stayed "[PENDING] not run yet" after it ran (only f5 read it
    again), under a status line that said the batch had finished."""
    batch = make_batch(tmp_path / "out", state=BatchState.RUNNING, n=300)

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await app.push_screen(ItemDetailScreen(batch, 299))
            await pilot.pause()
            detail = app.screen
            assert isinstance(detail, ItemDetailScreen) and detail.row is not None
            assert detail.row.status == "pending"
            assert "not run yet" in str(detail.query_one("#detail-run", Static).render())
            detail._tick()  # nothing changed: nothing read again
            assert detail.row.status == "pending"
            db = sqlite3.connect(batch / "items.db")
            with db:
                db.execute(
                    "UPDATE items SET status='complete', attempts=1, finished_at=?, duration_s=0.5 WHERE seq=299",
                    ("2026-11-18T09:10:00+00:00",),
                )
            db.close()
            detail._tick()
            await pilot.pause()
            assert detail.row.status == "complete"
            assert "[COMPLETE]" in str(detail.query_one("#detail-title", Static).render())
            # One left 'processing' by an engine that is gone (no lock held): said so, not "running".
            with sqlite3.connect(batch / "items.db") as db:
                db.execute("UPDATE items SET status='processing' WHERE seq=299")
            detail._tick()
            await pilot.pause()
            assert "cut short: no engine runs the batch" in str(detail.query_one("#detail-run", Static).render())

    run(body)
