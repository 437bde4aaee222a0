"""Slowest first on a batch an engine runs asks that engine, once, for the index the order is
read from (engine/store/slowest.py); a store that has it, or a batch no engine runs, is not asked."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from batchtui.engine.models import BatchState
from batchtui.engine.store.schema import SLOWEST_INDEX
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import frozen_app, hold_lock, make_batch, until

SIZE = (140, 48)


def _sent(batch: Path) -> list[tuple[str, object]]:
    """The ops (and values) in control.jsonl."""
    path = batch / "control.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [(cmd["op"], cmd.get("value")) for cmd in map(orjson.loads, lines)]


def _sort_slowest_first(tmp_path: Path, batch: Path, *, engine: bool) -> list[tuple[str, object]]:
    """Show the batch, sort it slowest first, let the dashboard's clock tick a few times: the
    commands sent."""

    async def body() -> list[tuple[str, object]]:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            table = screen.query_one(ItemsTable)
            await until(pilot, lambda: table.row_count == 300, "the items")
            screen._tick()
            assert _sent(batch) == []  # in seq order: nothing asked
            await pilot.press("o")
            assert table.order == "duration"
            for _ in range(3):
                screen._tick()
                await pilot.pause()
            assert screen.engine_live == engine
            await app.workers.wait_for_complete()  # the command goes out from a worker thread
            return _sent(batch)

    if not engine:
        return run(body)
    with hold_lock(batch):
        return run(body)


def test_slowest_first_asks_the_engine_to_index_its_store_once(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    assert _sort_slowest_first(tmp_path, batch, engine=True) == [("index", "duration")]


def test_a_store_with_the_index_is_not_asked_again(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    with sqlite3.connect(batch / "items.db") as db:
        db.execute(SLOWEST_INDEX)
    assert _sort_slowest_first(tmp_path, batch, engine=True) == []


def test_a_batch_no_engine_runs_is_not_asked(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)
    assert _sort_slowest_first(tmp_path, batch, engine=False) == []
