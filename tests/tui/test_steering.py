"""Every screen steers through engine/client.py, and an error in a screen's thread worker is
said in a notification: the app (and an engine in it) goes on."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import FROZEN, hold_lock, make_batch

SIZE = (140, 48)
TUI = Path(__file__).resolve().parents[2] / "tui"


def _app(out: Path, batch: Path | None = None) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


async def _until(pilot: Any, pred: Any, timeout: float = 10.0) -> None:
    waited = 0.0
    while not pred():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)
        waited += 0.05


def _status(batch: Path, seq: int) -> str:
    db = sqlite3.connect(batch / "items.db")
    try:
        return str(db.execute("SELECT status FROM items WHERE seq=?", (seq,)).fetchone()[0])
    finally:
        db.close()


def test_no_screen_or_widget_holds_its_own_control_logic() -> None:
    """Appending to control.jsonl, waiting for the ack, applying offline: engine/client.py only."""
    own = {"append_command", "apply_offline", "wait_for_ack", "unacked_message", "new_command"}
    offenders = []
    for path in sorted([*TUI.glob("screens/*.py"), *TUI.glob("widgets/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {alias.name for alias in node.names}
                if node.module.endswith("engine.control") or names & own:
                    offenders.append(f"{path.name}:{node.lineno} imports {sorted(names)} from {node.module}")
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            if call and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "app":  # type: ignore[attr-defined]
                offenders.append(f"{path.name}:{node.lineno} getattr(self.app, ...)")
    assert offenders == []


def test_a_skip_after_the_engine_went_is_applied_offline_not_queued(tmp_path: Path) -> None:
    """The dashboard asks who holds the batch when it sends, not what it saw a second ago: an
    engine that ended since leaves no one to apply a queued skip."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            await _until(pilot, lambda: screen.engine_live)
            table = screen.query_one(ItemsTable)
            table.focus()
            await pilot.press("end")
            await _until(pilot, lambda: table.selected_seq == 299)
            assert _status(batch, 299) == "pending"
            hold.__exit__(None, None, None)  # the engine ends
            await pilot.press("s", "y")  # asks first
            await _until(pilot, lambda: _status(batch, 299) == "skipped")
            assert not (batch / "control.jsonl").exists()
            log = screen.query_one("#events")
            await _until(pilot, lambda: "skip 1 item (#299): 1 skipped" in "\n".join(str(line) for line in log.lines))

    hold = hold_lock(batch)
    hold.__enter__()
    try:
        run(body)
    finally:
        hold.__exit__(None, None, None)


def test_an_error_in_the_browser_worker_is_notified_and_the_app_goes_on(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "out"
    not_a_dir.write_text("a file where the output dir should be\n")
    said: list[tuple[str, str]] = []

    async def body() -> None:
        app = _app(not_a_dir)
        app.notify = lambda message, **kw: said.append((str(message), kw.get("severity", "")))  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: any("cannot list the output dir" in m for m, _ in said))
            assert app.is_running and app.return_code is None
            assert isinstance(app.screen, BrowserScreen)
            message, severity = next((m, s) for m, s in said if "cannot list" in m)
            assert message.startswith("reading the batches failed: cannot list the output dir") and severity == "error"
            await pilot.press("f5")  # and again: still running
            await _until(pilot, lambda: sum("cannot list" in m for m, _ in said) >= 2)
            assert app.is_running and app.return_code is None

    run(body)


def test_an_os_error_in_the_detail_worker_is_notified_and_the_app_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    said: list[tuple[str, str]] = []

    def broken_send(*_args: Any, **_kw: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(batch / "control.jsonl"))

    monkeypatch.setattr("batchtui.tui.screens.detail.send", broken_send)

    async def body() -> None:
        with hold_lock(batch):
            app = _app(tmp_path, batch)
            async with app.run_test(size=SIZE) as pilot:
                app.notify = lambda message, **kw: said.append((str(message), kw.get("severity", "")))  # type: ignore[method-assign]
                await app.push_screen(ItemDetailScreen(batch, 250))
                await pilot.pause(0.1)
                await pilot.press("s", "y")  # the key, then its confirmation
                await _until(pilot, lambda: any("Permission denied" in m for m, _ in said))
                message, severity = next((m, s) for m, s in said if "Permission denied" in m)
                assert message.startswith("sending a command failed: PermissionError: [Errno 13]"), message
                assert severity == "error"
                assert app.is_running and app.return_code is None
                assert isinstance(app.screen, ItemDetailScreen)

    run(body)


def test_a_control_file_that_cannot_be_written_is_said_by_the_dashboard(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    (batch / "control.jsonl").mkdir()  # no command can be appended to it
    said: list[tuple[str, str]] = []

    async def body() -> None:
        with hold_lock(batch):
            app = _app(tmp_path, batch)
            app.notify = lambda message, **kw: said.append((str(message), kw.get("severity", "")))  # type: ignore[method-assign]
            async with app.run_test(size=SIZE) as pilot:
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                await _until(pilot, lambda: screen.engine_live)
                await pilot.press("p")
                await _until(pilot, lambda: any(s == "error" for _, s in said))
                assert app.is_running and app.return_code is None
                error = next(m for m, s in said if s == "error")
                # A damaged file, said as such (it was a raw IsADirectoryError: tests/test_control_damaged.py).
                assert error == f"pause failed: {batch / 'control.jsonl'}: a folder in its place, not a regular file"

    run(body)
    assert not list((batch / "control.jsonl").iterdir())
    assert orjson.loads((batch / "manifest.json").read_bytes())["state"] == "running"
