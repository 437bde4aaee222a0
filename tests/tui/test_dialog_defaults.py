"""A dialog's stray enter does what its safe button says: the confirm dialog's ``y``
confirms (never enter), the quit dialog's stop or hand-off is a key of its own. The first button
had the focus: ``a r`` then enter retried every marked item, and ``q`` then enter stopped the
engine."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from batchtui.engine.models import BatchState
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.modals import ConfirmScreen, QuitScreen
from batchtui.tui.widgets.batch_table import BatchTable

from .conftest import run
from .fixtures import make_batch
from .test_snapshots import app_for, settle


def _statuses(batch: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT seq, status FROM items ORDER BY seq"))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@pytest.mark.parametrize("key", ["enter", "space"])
def test_enter_or_space_on_the_confirm_dialog_cancels(tmp_path: Path, size: tuple[int, int], key: str) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.HALTED)
    before = _statuses(batch)
    assert any(status == "failed" for _seq, status in before)

    async def body() -> None:
        app = app_for(out, batch)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await pilot.press("3", "a", "r")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press(key)
            await settle(pilot)
            assert _statuses(batch) == before
            # enter presses the button with the focus (No); a space presses none
            assert isinstance(app.screen, DashboardScreen if key == "enter" else ConfirmScreen)

    run(body)


def test_enter_on_the_quit_dialog_stays(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED)
    chosen: list[str | None] = []

    async def body() -> None:
        app = app_for(out, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            app.push_screen(QuitScreen(), chosen.append)
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)

    run(body)
    assert chosen == ["cancel"]


def test_enter_on_the_browsers_delete_dialog_keeps_the_batch(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED)

    async def body() -> None:
        app = app_for(out)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, BrowserScreen)
            await pilot.press("d")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen) and app.screen.question.startswith("Delete batch")
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, BrowserScreen)

    run(body)
    assert (batch / "items.db").is_file()


def test_end_and_home_in_the_browser_move_to_the_last_and_first_batch(tmp_path: Path) -> None:
    # end scrolled the DataTable sideways (nothing to see), so enter then opened the first batch
    out = tmp_path / "out"
    for state in (BatchState.RUNNING, BatchState.PAUSED, BatchState.HALTED, BatchState.FINISHED):
        make_batch(out, state=state)

    async def body() -> None:
        app = app_for(out)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            table = screen.query_one(BatchTable)
            table.focus()
            await pilot.press("end")
            assert table.cursor_row == table.row_count - 1 > 0
            await pilot.press("home")
            assert table.cursor_row == 0

    run(body)
