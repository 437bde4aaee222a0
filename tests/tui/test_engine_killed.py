"""An engine killed (kill -9) while the dashboard watches its batch from another process: the
dashboard says INTERRUPTED and shows nothing running. live_progress.json still says what was
in flight when the engine died, and the dashboard showed it as running: "INTERRUPTED ... ETA
32-75 s · running 3/3", the counts row "running 3/3 · queued 9", and the in-flight panel's
items running 17s, 18s, 19s... on a batch nothing ran."""

from __future__ import annotations

import contextlib
from pathlib import Path

from textual.widgets import DataTable

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.models import BatchState
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.widgets.in_flight import InFlightPanel
from batchtui.tui.widgets.status import ProgressLine, TitleBar

from .conftest import run
from .fixtures import frozen_app, hold_lock, make_batch


def _status(screen: DashboardScreen) -> str:
    return str(screen.query_one(ProgressLine).query_one("#progress-text").render())


def _counts(screen: DashboardScreen) -> str:
    return " ".join(str(w.render()) for w in screen.query("#counts Static"))


def _in_flight_rows(screen: DashboardScreen) -> int:
    """The rows of the in-flight panel that show an item (rows left over are blanked)."""
    table = screen.query_one(InFlightPanel).query_one("#inflight", DataTable)
    return sum(1 for i in range(table.row_count) if str(table.get_row_at(i)[0]).strip())


def test_an_engine_killed_while_watched_leaves_nothing_shown_running(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def watched() -> None:
        app = frozen_app(tmp_path, batch)
        lock: contextlib.AbstractContextManager[None] | None = hold_lock(batch)
        assert lock is not None
        lock.__enter__()
        try:
            async with app.run_test(size=(140, 48)) as pilot:
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                await pilot.pause()
                assert "running 4/4" in _status(screen) and _in_flight_rows(screen) > 0
                lock.__exit__(None, None, None)  # kill -9: the lock goes with the engine
                lock = None
                screen._check_alive(force=True)
                await pilot.pause()
                shown = _status(screen)
                assert shown.lstrip().startswith("INTERRUPTED"), shown
                assert "ETA" not in shown and "running" not in shown and "queued" not in shown, shown
                assert "pending" in shown, shown
                # What was handed out runs again on resume: pending, as `show` counts it.
                live = BatchDir(batch).read_live()
                assert live is not None and live.counts.processing > 0
                assert f"pending {live.counts.pending + live.counts.processing}" in _counts(screen), _counts(screen)
                assert "running 0/" in _counts(screen) and "queued 0" in _counts(screen), _counts(screen)
                assert _in_flight_rows(screen) == 0
                assert "[INTERRUPTED]" in str(screen.query_one(TitleBar).render())
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)

    run(watched)


def test_a_batch_whose_engine_was_killed_opens_with_nothing_running(tmp_path: Path) -> None:
    """Opened after the kill: live_progress.json says running, no engine holds the batch."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(140, 48)) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            await pilot.pause()
            shown = _status(screen)
            assert shown.lstrip().startswith("INTERRUPTED"), shown
            assert "ETA" not in shown and "running" not in shown, shown
            assert "running 0/" in _counts(screen), _counts(screen)
            assert _in_flight_rows(screen) == 0

    run(body)


def test_the_counts_of_a_killed_engine_are_the_stores_not_its_last_write(tmp_path: Path) -> None:
    """The engine commits, then writes live_progress.json: killed between the two, its last
    write is a commit behind. The dashboard showed 36/200 where `show`, `ls` and its own table
    said 44 (and a Complete tab of 18 over a table of 20 rows)."""
    import sqlite3

    from batchtui.engine.summary import summarize

    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = BatchDir(batch).read_live()
    assert live is not None
    db = sqlite3.connect(batch / "items.db")
    with db:  # the commit the dead engine made after its last write
        db.execute(
            "UPDATE items SET status='complete', attempts=1 WHERE seq IN"
            " (SELECT seq FROM items WHERE status='pending' ORDER BY seq LIMIT 8)"
        )
    db.close()
    complete = live.counts.complete + 8
    assert summarize(batch).totals.complete == complete  # what `show` and `ls` say

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(140, 48)) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            await pilot.pause()
            shown = _status(screen)
            assert shown.lstrip().startswith("INTERRUPTED"), shown
            finished = complete + live.counts.failed + live.counts.skipped
            assert f"{finished}/{live.counts.total}" in shown, shown
            assert f"complete {complete}" in _counts(screen), _counts(screen)
            tabs = " ".join(str(tab.label) for tab in screen.query("#tabs Tab"))
            assert f"Complete {complete}" in tabs, tabs

    run(body)
