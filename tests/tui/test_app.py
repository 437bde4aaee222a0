"""Pilot tests: every screen and key of the app, on real batch directories."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from textual.pilot import Pilot

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.commands import palette_entries
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.screens.modals import ConfirmScreen, HelpScreen
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import FROZEN, hold_lock, make_batch
from .test_snapshots import settle

SIZE = (140, 48)


def _app(out: Path, batch: Path | None = None) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


def _commands(batch: Path) -> list[dict[str, object]]:
    path = batch / "control.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def _status(batch: Path, seq: int) -> str:
    db = sqlite3.connect(batch / "items.db")
    try:
        return str(db.execute("SELECT status FROM items WHERE seq=?", (seq,)).fetchone()[0])
    finally:
        db.close()


async def _until(pilot: Pilot[Any], done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``done()`` (a change its worker makes), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await pilot.pause(0.02)


def _text(widget: object) -> str:
    """The plain text a Static shows."""
    content = getattr(widget, "content", None)
    return str(getattr(content, "plain", content))


def test_browser_lists_batches_and_opens_one(tmp_path: Path) -> None:
    for state in (BatchState.RUNNING, BatchState.PAUSED, BatchState.HALTED, BatchState.FINISHED):
        make_batch(tmp_path, state=state)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            ids = [r.batch_id for r in screen.rows]
            assert ids == sorted(ids, reverse=True) and len(ids) == 4
            states = {r.batch_id[-1]: r.state for r in screen.rows}
            # No engine holds the running/paused ones: they show as interrupted (resumable).
            assert states == {"1": "interrupted", "2": "interrupted", "3": "halted", "4": "finished"}
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert isinstance(app.screen, DashboardScreen)
            assert app.screen.bdir.batch_id == ids[0]
            await pilot.press("b")
            await pilot.pause(0.2)
            assert isinstance(app.screen, BrowserScreen)

    run(body)


def test_browser_delete_asks_first(tmp_path: Path) -> None:
    make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("d")
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            await pilot.pause(0.1)
            assert any(tmp_path.iterdir())
            await pilot.press("d")
            await pilot.pause(0.1)
            await pilot.press("y")
            await settle(pilot)
            assert not any(p.is_dir() for p in tmp_path.iterdir())

    run(body)


def test_dashboard_running_pause_and_stop_go_through_control(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = _app(tmp_path, batch)
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                assert screen.engine_live
                title = _text(screen.query_one("#title"))
                assert batch.name in title and "RUNNING" in title
                progress = _text(screen.query_one("#progress-text"))
                assert "ETA 10s" in progress and "12.5/s" in progress
                assert screen.query_one("#errors").row_count == 3  # type: ignore[attr-defined]
                assert screen.query_one("#inflight").row_count == 4  # type: ignore[attr-defined]
                await pilot.press("p")
                await pilot.pause(0.1)
                assert [c["op"] for c in _commands(batch)] == ["pause"]
                await pilot.press("x")
                await pilot.pause(0.1)
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("y")
                await pilot.pause(0.1)
                assert [c["op"] for c in _commands(batch)] == ["pause", "stop"]

    run(body)


def test_dashboard_title_says_where_a_dask_run_runs(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = json.loads((batch / "live_progress.json").read_text())
    live["cluster"] = {
        "scheduler": "tcp://10.0.0.5:8786",
        "local": False,
        "workers": 3,
        "threads": 6,
        "memory_used_mb": 512.0,
        "memory_total_mb": 4096.0,
    }
    (batch / "live_progress.json").write_text(json.dumps(live))

    async def body() -> None:
        with hold_lock(batch):
            app = _app(tmp_path, batch)
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                title = _text(app.screen.query_one("#title"))
                assert "RUNNING" in title and "on dask tcp://10.0.0.5:8786" in title, title

    run(body)


def test_dashboard_paused_p_resumes(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.PAUSED)

    async def body() -> None:
        with hold_lock(batch):
            app = _app(tmp_path, batch)
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                assert "ETA paused" in _text(app.screen.query_one("#progress-text"))
                await pilot.press("p")
                await pilot.pause(0.1)
                assert [c["op"] for c in _commands(batch)] == ["resume"]

    run(body)


def test_finished_batch_greys_out_engine_actions(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            assert screen.check_action("toggle_pause", ()) is None
            assert screen.check_action("stop", ()) is None
            await pilot.press("p", "x")
            await pilot.pause(0.1)
            assert _commands(batch) == []
            assert isinstance(app.screen, DashboardScreen)

    run(body)


def test_tabs_filter_and_error_selection(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one(ItemsTable)
            await pilot.press("3")
            await pilot.pause(0.1)
            assert table.status == "failed"
            await pilot.press("4")
            await pilot.pause(0.1)
            assert table.status == "complete"
            await pilot.press("5")
            await pilot.pause(0.1)
            assert table.status == "skipped"
            await pilot.press("1")
            await pilot.pause(0.1)
            assert table.status is None
            # Selecting an error row filters the items to that error group.
            errors = app.screen.query_one("#errors")
            errors.focus()
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert table.status == "failed" and table.error_group is not None
            # / filters by text; escape clears.
            await pilot.press("slash")
            for ch in "00020":
                await pilot.press(ch)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert table.text == "00020"
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert table.text is None and table.error_group is None

    run(body)


def test_item_detail_and_offline_retry_and_skip(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.HALTED, halt_reason="failure rate 40% over 20%")

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one(ItemsTable)
            table.focus()
            # seq 3 is a failed TimeoutError item in the fixture
            await pilot.press("down", "down", "down")
            await pilot.pause(0.1)
            assert table.selected_seq == 3
            await pilot.press("enter")
            await pilot.pause(0.2)
            detail = app.screen
            assert isinstance(detail, ItemDetailScreen) and detail.row is not None
            assert detail.row.status == "failed" and len(detail.attempt_rows) == 1
            assert "upstream timed out" in _text(detail.query_one("#detail-stderr"))
            await pilot.press("r")  # asked first, as on the dashboard
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen) and _status(batch, 3) == "failed"
            assert "Retry item #3?" in _text(app.screen.query_one(".dialog-title"))
            await pilot.press("y")  # no engine: the store is changed under the lock
            await _until(pilot, lambda: _status(batch, 3) == "pending")
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert isinstance(app.screen, DashboardScreen)
            # skip a pending item from the dashboard
            table.focus()
            await pilot.press("end")
            await pilot.pause(0.1)
            last = table.selected_seq
            assert last == 299
            await pilot.press("s", "y")  # asks first
            await _until(pilot, lambda: _status(batch, 299) == "skipped")

    run(body)


def test_item_text_is_plain_never_markup_or_escapes(tmp_path: Path) -> None:
    keys = ["[bold red]evil[/]", "\x1b[2J\x1b[31mred", "plain"]
    batch = make_batch(tmp_path, state=BatchState.FINISHED, n=3, keys=keys)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one(ItemsTable)
            lines = [table.render_line(y).text for y in range(table.size.height)]
            joined = "\n".join(lines)
            assert "[bold red]evil[/]" in joined
            assert "\x1b" not in joined and "\\x1b[2J" in joined
            table.focus()
            await pilot.press("down", "enter")
            await pilot.pause(0.2)
            title = _text(app.screen.query_one("#detail-title"))
            assert "\\x1b[2J" in title and "\x1b" not in title

    run(body)


def test_theme_help_and_palette(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            first = app.theme
            await pilot.press("t")
            await pilot.pause(0.1)
            assert app.theme != first
            await pilot.press("question_mark")
            await pilot.pause(0.1)
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            await pilot.pause(0.1)
            entries = {e.title: e for e in palette_entries(app, app.screen)}
            for wanted in ("Retry", "Skip", "Filter", "Theme", "Help"):
                assert entries[wanted].why_not is None, wanted
            assert entries["Pause/Resume"].why_not == "no engine runs this batch"  # greyed: finished

    run(body)


def test_browser_r_resumes_a_batch_with_its_engine_in_the_app(tmp_path: Path) -> None:
    from batchtui.engine.config import load_config
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import shell_spec
    from batchtui.engine.sources import build_spec

    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(30)))
    out = tmp_path / "out"
    config = load_config({"output_dir": str(out), "workers": 2}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec("true"))

    async def body() -> None:
        app = _app(out)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, BrowserScreen)
            assert app.screen.check_action("resume", ()) is True
            await pilot.press("r")
            await settle(pilot)
            assert isinstance(app.screen, DashboardScreen) and app.screen.in_process
            for _ in range(100):
                await pilot.pause(0.1)
                if app.engine_result is not None:
                    break
            assert app.engine_result is not None and app.engine_result.exit_code == 0

    run(body)
    manifest = orjson.loads((batch.path / "manifest.json").read_bytes())
    assert manifest["state"] == "finished" and manifest["history"][0]["action"] == "resume"


def test_the_detail_of_a_skipped_item_says_why_it_was_skipped(tmp_path: Path) -> None:
    """Its Error section said "(none)" while the table said "skipped while running"."""
    batch = make_batch(tmp_path, state=BatchState.HALTED)
    db = sqlite3.connect(batch / "items.db")
    with db:
        db.execute("UPDATE items SET status='skipped', error_message='skipped while running' WHERE seq=250")
    db.close()

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await app.push_screen(ItemDetailScreen(batch, 250))
            await pilot.pause(0.2)
            assert _text(app.screen.query_one("#detail-error")).strip() == "(none: skipped while running)"

    run(body)
