"""The dashboard fed by a real engine run (in the app's worker thread), checked against items.db:
each status tab shows exactly the rows the store holds in that status, read from what the items
table draws, not from its filter attribute."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run

TABS = {"1": None, "2": "processing", "3": "failed", "4": "complete", "5": "skipped"}


def _store(batch: Path) -> dict[int, str]:
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT seq, status FROM items"))
    finally:
        db.close()


#: What an item in flight (the store's 'processing') shows: running, or queued behind them.
IN_FLIGHT = {"running": "processing", "queued": "processing"}


def _shown(table: ItemsTable) -> dict[int, str]:
    """seq -> status of every row the table draws (line 0 is the header), as the store says it."""
    rows: dict[int, str] = {}
    for y in range(1, table.size.height):
        cells = table.render_line(y).text.split()
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = IN_FLIGHT.get(cells[1], cells[1])
    return rows


async def _wait_for(
    pilot: Any, pred: Callable[[], object], what: str, timeout: float = 60.0, detail: Callable[[], object] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s ({detail() if detail else ''})")
        await pilot.pause(0.05)


async def _tabs_match(pilot: Any, table: ItemsTable, store: dict[int, str]) -> None:
    """Each tab key shows the store's rows of its status, no more, no fewer (those that fit)."""
    for key, status in TABS.items():
        await pilot.press(key)
        rows = sorted((seq, st) for seq, st in store.items() if status is None or st == status)
        want = dict(rows[: table.size.height - 1])  # the rows that fit under the header, in seq order

        def shows(status: str | None = status, want: dict[int, str] = want) -> bool:
            return table.status == status and _shown(table) == want

        await _wait_for(pilot, shows, f"tab {key} showing {want}", timeout=10, detail=lambda: _shown(table))


def test_each_tab_shows_the_rows_the_store_holds_in_its_status(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(60)))
    # 0-5 complete, 6-7 fail, 8-9 run until the gate opens (both workers busy); the engine hands out
    # items behind them (processing in the store, not started) and the rest wait pending.
    cmd = f"[ {{seq}} -lt 6 ] && exit 0; [ {{seq}} -lt 8 ] && exit 3; while [ ! -e {gate} ]; do sleep 0.05; done"
    # A window of 4 in flight: 8 and 9 running, two handed out behind them, 12-59 pending for sure.
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2, "window": 4, "grace": 2}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec(cmd))
    runner = BatchRunner(batch, config=config)
    # Every item in flight is marked processing once it has been out for a second, started or
    # not: 8 and 9 (running) and the two handed out behind them, 10 and 11. Waiting for all four
    # is waiting for the state to settle (a read with only 8 and 9 marked raced the next commit).
    settled = {**dict.fromkeys(range(6), "complete"), 6: "failed", 7: "failed"}
    settled |= dict.fromkeys(range(8, 12), "processing")

    def held() -> bool:
        store = _store(batch.path)
        return all(store[seq] == st for seq, st in settled.items()) and store[12] == store[59] == "pending"

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, runner=runner, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(140, 100)) as pilot:
            try:
                table = app.screen.query_one(ItemsTable)
                # items.db marks a running item processing once it has run for a second.
                await _wait_for(
                    pilot, held, "0-7 done, 8-11 in flight, the rest pending", detail=lambda: _store(batch.path)
                )
                store = _store(batch.path)
                table.refresh_data()
                await _tabs_match(pilot, table, store)
                assert _store(batch.path) == store  # nothing moved while the tabs were read
                gate.touch()
                await _wait_for(pilot, lambda: not app.engine_running, "the run's end")
                final = _store(batch.path)
                assert final == {**settled, **dict.fromkeys(range(8, 60), "complete")}
                table.refresh_data()
                await _tabs_match(pilot, table, final)
            finally:
                gate.touch()

    run(body)


def test_a_finished_empty_batch_says_it_has_no_items_not_that_they_are_to_come(tmp_path: Path) -> None:
    """An empty source run by a real engine in the app: once it has finished, the items table
    says the batch has no items ("no items yet" promised some that will never come)."""
    items = tmp_path / "items.txt"
    items.write_text("")
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec("echo {}"))
    runner = BatchRunner(batch, config=config)

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, runner=runner, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.screen.query_one(ItemsTable)

            def first_line() -> str:
                return table.render_line(1).text.strip()

            await _wait_for(pilot, lambda: not app.engine_running, "the run's end")
            await _wait_for(
                pilot,
                lambda: first_line() == "this batch has no items",
                "the finished batch's word",
                timeout=10,
                detail=first_line,
            )
            await pilot.press("3")  # a tab with a filter of its own still says why it is empty
            await _wait_for(pilot, lambda: first_line() == "no items match", "the tab's word", timeout=10)

    run(body)
