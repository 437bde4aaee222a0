"""Our app, screens and widgets do not shadow Textual's own names.

Every screen and the event log can be recomposed: Textual's ``Widget.recompose()`` (also what
``refresh(recompose=True)`` and a ``recompose=True`` reactive run) does ``async with
self.batch():``, so no screen or widget of ours may shadow ``Widget.batch`` with an attribute
(they hold their batch dir as ``bdir``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.screen import Screen

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.screens.resume_dialog import ResumeDialog
from batchtui.tui.widgets.event_log import EventLog
from batchtui.tui.widgets.in_flight import InFlightPanel
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import FROZEN, make_batch

SIZE = (120, 40)


def _app(out: Path, batch: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


def test_app_recompose_on_each_batch_screen(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.HALTED, n=20)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            dashboard = app.screen
            assert isinstance(dashboard, DashboardScreen)
            log = dashboard.query_one("#events", EventLog)
            await log.recompose()
            dashboard.refresh(recompose=True)  # recomposed in the screen's own message loop
            await pilot.pause()
            assert dashboard.query_one("#events", EventLog) is not log  # composed anew
            screens: list[Screen[object]] = [ItemDetailScreen(batch, 0), ResumeDialog(batch)]
            for screen in screens:
                await app.push_screen(screen)
                await pilot.pause(0.2)
                assert app.screen is screen
                before = set(screen.query("*"))
                screen.refresh(recompose=True)
                # Recomposed in the screen's own loop: a loaded machine may need more than a pause.
                for _ in range(100):
                    await pilot.pause(0.02)
                    after = set(screen.query("*"))
                    if after and not before & after:
                        break
                assert app.screen is screen and after and not before & after
                assert screen.bdir.path == batch  # type: ignore[attr-defined]  # each screen class has bdir

    run(body)


def test_timers_and_live_updates_go_on_while_the_dashboard_recomposes(tmp_path: Path) -> None:
    """A recompose removes the screen's panels before it mounts the new ones. The dashboard's
    timer, its event lines and a live update that land in that moment skip the missing panels:
    in CI a tick met no InFlightPanel there, and the app (strict, as in tests) closed."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING, n=20)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            dashboard = app.screen
            assert isinstance(dashboard, DashboardScreen) and dashboard.live is not None
            for kind in (InFlightPanel, EventLog, ItemsTable):
                await dashboard.query_one(kind).remove()
            dashboard._tick()
            dashboard._event("an event while the panels are away")
            dashboard.live = dashboard.live  # a live update (the var always updates)
            await pilot.pause()
            assert app.is_running and app.screen is dashboard

    run(body)


def test_textual_logger_reaches_textuals_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``app.log(...)`` (Textual's logger, used by Textual itself when devtools are connected) calls
    ``App._log(group, verbosity, frame, *objects)``; the app's engine.log writer has its own name."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED, n=5)
    app = _app(tmp_path, batch)
    # Connected devtools as the logger sees them; App._log itself finds no client and returns.
    monkeypatch.setattr(BatchtuiApp, "_is_devtools_connected", property(lambda self: True))
    app.log("a line for the devtools console", batch=str(batch))
    app.log.warning("and a warning")  # raised TypeError when the app's own _log shadowed Textual's
