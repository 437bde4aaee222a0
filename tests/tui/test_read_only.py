"""The app as `batchtui serve` runs it: read-only (no key changes a batch) unless control is
allowed, and served (no engine in the app, nothing run on the server's terminal).

Each "nothing happened" is read after a later key's visible effect (the app handles keys in
order), and after the app's workers have ended, never after a pause."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import RadioButton, Tabs

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.screens.modals import ConfirmScreen
from batchtui.tui.screens.resume_dialog import ResumeDialog
from batchtui.tui.widgets.items_table import ItemsTable
from batchtui.tui.widgets.status import TitleBar

from .conftest import run
from .fixtures import FROZEN, make_batch
from .test_app import _text, _until

SIZE = (140, 48)
STEERING = ("toggle_pause", "stop", "bulk", "retry_group", "resume_batch")


def _app(out: Path, batch: Path | None, *, read_only: bool, served: bool = True) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out,
        batch=batch,
        watch_files=False,
        clock=lambda: FROZEN,
        handle_hangup=False,
        strict_display=True,
        read_only=read_only,
        served=served,
    )


def _items(batch: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(batch / "items.db")
    try:
        return db.execute("SELECT seq, status, attempts, error_type FROM items ORDER BY seq").fetchall()
    finally:
        db.close()


async def _on_failed_item(pilot: Pilot[Any], app: BatchtuiApp) -> ItemsTable:
    await pilot.press("3")  # the Failed tab
    table = app.screen.query_one(ItemsTable)
    table.focus()
    await _until(pilot, lambda: table.status == "failed" and table.selected_seq is not None)
    return table


async def _tab_shown(pilot: Pilot[Any], app: BatchtuiApp, key: str, tab: str) -> None:
    """Press ``key`` and wait until its tab is active: every key pressed before it was handled."""
    await pilot.press(key)
    await _until(pilot, lambda: app.screen.query_one("#tabs", Tabs).active == tab)


def test_read_only_keys_change_nothing_and_open_nothing(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.HALTED, halt_reason="failure rate 40% over 20%")
    before = _items(batch)

    async def body() -> None:
        app = _app(tmp_path, batch, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            await _on_failed_item(pilot, app)
            assert "[HALTED] [read-only]" in _text(screen.query_one(TitleBar))  # said where the state is
            for action in STEERING:
                assert screen.check_action(action, ()) is False, action  # refused, hidden from the footer
                assert "read-only" in (screen.unavailable(action) or ""), action
            assert screen.check_action("filter", ()) is True  # watching keys still work
            shown = {b.binding.action for b in screen.active_bindings.values()}
            assert not {a for a in shown if a.partition("(")[0] in STEERING}, shown
            # retry and skip the item under the cursor, retry its error group, resume, stop, pause:
            # each would ask (a confirm or the resume dialog) or send at once.
            await pilot.press("r", "y", "s", "y", "R", "y", "u", "x", "y", "p", "a", "r", "y")
            await _tab_shown(pilot, app, "1", "tab-all")
            assert app.screen is screen  # no confirm, no dialog
            await app.workers.wait_for_complete()
            # The detail screen's retry and skip too.
            await _tab_shown(pilot, app, "3", "tab-failed")
            await pilot.press("enter")
            await _until(pilot, lambda: isinstance(app.screen, ItemDetailScreen))
            detail = app.screen
            assert detail.check_action("retry", ()) is False and detail.check_action("skip", ()) is False
            await pilot.press("r", "s", "escape")
            await _until(pilot, lambda: app.screen is screen)
            await app.workers.wait_for_complete()
        assert _items(batch) == before
        assert not (batch / "control.jsonl").exists()

    run(body)


def test_with_control_the_same_keys_act_but_no_engine_runs_in_the_app(tmp_path: Path) -> None:
    """The counterpart: served with --allow-control, `r` then `y` retries the item (offline,
    under the lock); `u` opens the resume dialog, which can only start a background engine."""
    batch = make_batch(tmp_path, state=BatchState.HALTED, halt_reason="failure rate 40% over 20%")

    async def body() -> None:
        app = _app(tmp_path, batch, read_only=False)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            table = await _on_failed_item(pilot, app)
            seq = table.selected_seq
            assert "read-only" not in _text(screen.query_one(TitleBar))
            assert seq is not None and all(screen.check_action(a, ()) is not False for a in STEERING)
            await pilot.press("r")
            await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await _until(pilot, lambda: {s: st for s, st, *_ in _items(batch)}[seq] == "pending")
            await pilot.press("u")
            await _until(pilot, lambda: isinstance(app.screen, ResumeDialog))
            dialog = app.screen
            here = dialog.query_one("#here", RadioButton)
            assert here.disabled and not here.value and dialog.query_one("#background", RadioButton).value
            await pilot.press("escape")
            await _until(pilot, lambda: app.screen is screen)
            # The app refuses an engine of its own however it is asked.
            app.resume_batch(batch)
            assert not app.engine_running

    run(body)


def test_served_detail_runs_no_pager_on_the_server(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.HALTED, halt_reason="failure rate 40% over 20%")

    async def body() -> None:
        for served in (True, False):
            app = _app(tmp_path, batch, read_only=False, served=served)
            async with app.run_test(size=SIZE) as pilot:
                await _on_failed_item(pilot, app)
                await pilot.press("enter")
                await _until(pilot, lambda app=app: isinstance(app.screen, ItemDetailScreen))
                for action in ("pager", "pager_detail"):
                    assert app.screen.check_action(action, ()) is (not served), (served, action)

    run(body)


def test_read_only_browser_deletes_nothing(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, None, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            browser = app.screen
            assert isinstance(browser, BrowserScreen)
            await _until(pilot, lambda: browser.selected is not None)
            assert browser.check_action("delete", ()) is False and browser.check_action("resume", ()) is False
            await pilot.press("d", "y", "r")
            await pilot.press("enter")  # opening a batch is watching: allowed
            await _until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert (batch / "items.db").exists() and (batch / "manifest.json").exists()

    run(body)


def test_served_browser_resumes_through_the_dialog_in_the_background(tmp_path: Path) -> None:
    make_batch(tmp_path, state=BatchState.HALTED, halt_reason="failure rate 40% over 20%")

    async def body() -> None:
        app = _app(tmp_path, None, read_only=False)
        async with app.run_test(size=SIZE) as pilot:
            browser = app.screen
            assert isinstance(browser, BrowserScreen)
            await _until(pilot, lambda: browser.selected is not None and browser.selected.resumable)
            await pilot.press("r")
            await _until(pilot, lambda: isinstance(app.screen, ResumeDialog))
            assert app.screen.query_one("#here", RadioButton).disabled
            assert not app.engine_running

    run(body)


def test_a_phone_width_still_shows_the_failures(tmp_path: Path) -> None:
    """A phone shows the served page 40-45 columns wide: the status line drops the percent and
    the bar before the failures (at 40 columns, rank 6 as before dropped them first)."""
    batch = make_batch(tmp_path, state=BatchState.HALTED, halt_reason="failure rate 40% over 20%")
    failed = sum(1 for _seq, status, *_ in _items(batch) if status == "failed")
    assert failed

    async def body() -> None:
        app = _app(tmp_path, batch, read_only=True)
        async with app.run_test(size=(40, 40)) as pilot:
            line = app.screen.query_one("#progress-text")
            await _until(pilot, lambda: "/300" in _text(line))
            assert f"failed {failed}" in _text(line), _text(line)

    run(body)
