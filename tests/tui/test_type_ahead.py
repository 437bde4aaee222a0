"""Keys typed ahead: a terminal hands the app a burst of keys at once (a fast typist, a paste,
a slow SSH link). What follows ``/`` is the filter's text, never dashboard keys: ``/retry``
typed in one go retried the item under the cursor (``r``) and asked to stop the batch
(``x``), because the field took the focus only a turn later."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from textual import events

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
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
