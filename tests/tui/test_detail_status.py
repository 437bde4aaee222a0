"""The item detail keeps the batch's status line in sight (tui/widgets/status.py ``follow``): an
operator reading one item while the run goes on saw no progress until back on the dashboard."""

from __future__ import annotations

from pathlib import Path

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.widgets.status import ProgressLine, StatusText

from .conftest import run
from .fixtures import FROZEN, make_batch


def _line(screen: ItemDetailScreen) -> str:
    return str(screen.query_one("#detail-progress", ProgressLine).query_one(StatusText).render())


def test_the_detail_shows_the_status_line_and_follows_the_dashboards(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "out", state=BatchState.PAUSED, n=300)

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=batch.parent, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
        )
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
