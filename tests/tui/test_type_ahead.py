"""Keys typed ahead: a terminal hands the app a burst of keys at once (a fast typist, a paste,
a slow SSH link). What follows a key that opens a field, a dialog or a menu goes there, never to
the screen under it: ``/retry`` typed in one go retried the item under the cursor (``r``) and
asked to stop the batch (``x``), because the field took the focus only a turn later; ``u8⏎``
lost the 8 and the enter, ``ck`` in the item detail left the copy menu open, nothing copied.

The bursts are posted to the driver all at once (:func:`_burst`), as a terminal's read hands them
over: ``pilot.press`` waits for the app to be idle after each key, so with it every key comes
after the last one was handled, and the old bindings pass."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from textual import events
from textual.widgets import Input

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.screens.resume_dialog import ResumeDialog
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import make_batch
from .test_snapshots import dashboard_open, settle


def _statuses(batch: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT seq, status FROM items ORDER BY seq"))


def _burst(app: BatchtuiApp, keys: list[tuple[str, str | None]]) -> None:
    """Keys as the driver posts them from one read of the terminal: all queued before any is handled."""
    driver = app._driver
    assert driver is not None
    for key, char in keys:
        event = events.Key(key, char)
        event.set_sender(app)
        driver.send_message(event)


def test_text_typed_right_after_slash_goes_into_the_filter(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.HALTED)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, screen):
            app = pilot.app
            screen.query_one(ItemsTable).focus()
            await settle(pilot)
            before = _statuses(batch)
            typed = "rx0"
            _burst(app, [("slash", "/"), *((ch, ch) for ch in typed), ("enter", "\r")])
            await settle(pilot)
            assert app.screen is screen  # no stop dialog, no item detail (enter)
            assert screen.query_one(ItemsTable).text == typed
            assert _statuses(batch) == before  # nothing retried
            assert not (batch / "control.jsonl").exists()

    run(body)


def test_a_slash_in_the_filter_is_text(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, screen):
            await pilot.press("slash", *"v1/documents/0001", "enter")
            await settle(pilot)
            assert screen.query_one(ItemsTable).text == "v1/documents/0001"

    run(body)


def _keys(typed: str) -> list[tuple[str, str | None]]:
    return [(ch, ch) for ch in typed]


def test_text_typed_right_after_u_goes_into_the_resume_dialog(tmp_path: Path, monkeypatch: Any) -> None:
    """``u8⏎``: the dialog opens with 8 in its workers field, and the enter typed before the
    dialog had read the batch resumes it once it has (the 8 was lost, the enter too)."""
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.HALTED)
    started: list[list[str]] = []

    def start(self: ResumeDialog, *args: Any) -> None:  # where the confirm hands over to the engine
        started.append(self.argv())

    monkeypatch.setattr(ResumeDialog, "_start", start)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, screen):
            screen.query_one(ItemsTable).focus()
            await settle(pilot)
            _burst(pilot.app, [*_keys("u8"), ("enter", "\r")])
            await settle(pilot)
            dialog = pilot.app.screen
            assert isinstance(dialog, ResumeDialog)
            assert dialog.query_one("#field-workers", Input).value == "8"
            assert started == [dialog.argv()] and started[0][-2:] == ["--workers", "8"]

    run(body)


def test_u_typed_in_the_filter_is_text(tmp_path: Path) -> None:
    """``u`` opens the resume dialog at once (a priority binding), but not from the filter field:
    there it is text, as ``/`` is (Textual leaves out a priority binding whose key the focused
    field takes as a character)."""
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.HALTED)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, screen):
            _burst(pilot.app, [("slash", "/"), *_keys("u8/u"), ("enter", "\r")])
            await settle(pilot)
            assert pilot.app.screen is screen
            assert screen.query_one(ItemsTable).text == "u8/u"

    run(body)


def test_the_letter_typed_right_after_c_picks_from_the_copy_menu(tmp_path: Path) -> None:
    """``ck`` in the item detail copies the key (the menu opened a turn late: k was lost)."""
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=40)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, _screen):
            app = pilot.app
            await app.push_screen(ItemDetailScreen(batch, 3))
            await settle(pilot)
            _burst(app, _keys("ck"))
            await settle(pilot)
            assert isinstance(app.screen, ItemDetailScreen)  # the menu chose and closed
            assert app.clipboard == "https://api.example.com/v1/documents/00003"

    run(body)


def test_text_typed_right_after_r_in_the_served_browser_goes_into_the_resume_dialog(tmp_path: Path) -> None:
    """Served, the browser's ``r`` opens the resume dialog: ``r3`` is 3 workers."""
    out = tmp_path / "out"
    make_batch(out, state=BatchState.HALTED)
    app = BatchtuiApp(output_dir=out, watch_files=False, handle_hangup=False, served=True)

    async def body() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, BrowserScreen)
            _burst(app, _keys("r3"))
            await settle(pilot)
            dialog = app.screen
            assert isinstance(dialog, ResumeDialog)
            assert dialog.query_one("#field-workers", Input).value == "3"

    run(body)
