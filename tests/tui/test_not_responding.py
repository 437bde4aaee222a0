"""A frozen engine is visible: the dashboard and the browser say NOT RESPONDING, a command it
does not acknowledge is reported as such, and a late acknowledgement is still shown."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.batchdir import HOST
from batchtui.engine.files import read_model, write_model
from batchtui.engine.models import BatchState, LiveProgress
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.messages import LiveUpdated
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.browser_columns import engine_label
from batchtui.tui.screens.dashboard import DashboardScreen

from .conftest import run
from .fixtures import FROZEN, HEARTBEAT, T1, hold_lock, make_batch

SIZE = (140, 48)


def _app(out: Path, batch: Path | None = None) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


def _text(widget: object) -> str:
    content = getattr(widget, "content", None)
    return str(getattr(content, "plain", content))


def _events(screen: Any) -> str:
    return "\n".join(str(line) for line in screen.query_one("#events").lines)


async def _until(pilot: Any, pred: Any, timeout: float = 5.0) -> None:
    """Let the app run until ``pred()`` holds (a deadline, never a fixed sleep before asserting)."""
    loop_time = 0.0
    while not pred():
        if loop_time > timeout:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)
        loop_time += 0.05


def test_dashboard_shows_a_frozen_engine_and_an_unacknowledged_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # live_progress.json is two hours old, and the lock is held by a live process (this one)
    # that writes nothing: an engine stopped by SIGSTOP looks exactly like this.
    batch = make_batch(tmp_path, state=BatchState.RUNNING, updated_at=T1)
    monkeypatch.setattr(DashboardScreen, "ACK_TIMEOUT_S", 0.3)

    async def body() -> None:
        with hold_lock(batch, pid=os.getpid(), host=HOST):
            app = _app(tmp_path, batch)
            async with app.run_test(size=SIZE) as pilot:
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                await _until(pilot, lambda: "NOT RESPONDING" in _text(screen.query_one("#title")))
                title = screen.query_one("#title")
                assert f"[NOT RESPONDING 2h01m pid {os.getpid()}]" in _text(title), _text(title)
                assert "RUNNING" not in _text(title)
                assert title.has_class("stale")
                progress = _text(screen.query_one("#progress-text")).lstrip()  # the state badge is padded
                assert progress.startswith("no update 2h01m") and "ETA" not in progress, progress
                assert "engine not responding" in _events(screen)
                assert screen.engine_live  # it still holds the batch: commands are queued for it

                await pilot.press("p")
                await _until(pilot, lambda: "not acknowledged" in _events(screen))
                lines = (batch / "control.jsonl").read_bytes().splitlines()
                cmd = orjson.loads(lines[-1])
                assert cmd["op"] == "pause"
                assert "pause: not acknowledged (engine not responding for 2h01m)" in _events(screen)
                assert "queued in control.jsonl" in _events(screen)

                # The engine wakes (SIGCONT): a fresh write that acknowledges the queued pause.
                live = read_model(batch / "live_progress.json", LiveProgress)
                live = live.model_copy(
                    update={
                        "updated_at": HEARTBEAT,
                        "state": BatchState.PAUSED,
                        "paused": True,
                        "control_ack": cmd["id"],
                        "acked": [cmd["id"]],
                        "control_results": {cmd["id"]: "paused; 4 in-flight items finish"},
                    }
                )
                write_model(batch / "live_progress.json", live)
                screen.post_message(LiveUpdated(batch, live))
                await _until(pilot, lambda: "acknowledged late" in _events(screen))
                assert "pause: paused; 4 in-flight items finish (acknowledged late" in _events(screen)
                title = screen.query_one("#title")
                assert "[PAUSED pid 4242]" in _text(title) and not title.has_class("stale"), _text(title)
                assert "engine responding again" in _events(screen)

    run(body)


def test_browser_marks_the_frozen_engine(tmp_path: Path) -> None:
    frozen = make_batch(tmp_path, state=BatchState.RUNNING, updated_at=T1)
    healthy = make_batch(tmp_path, state=BatchState.PAUSED)

    async def body() -> None:
        with hold_lock(frozen), hold_lock(healthy):
            app = _app(tmp_path)
            async with app.run_test(size=SIZE) as pilot:
                screen = app.screen
                assert isinstance(screen, BrowserScreen)
                await _until(pilot, lambda: len(screen.rows) == 2)
                engines = {r.batch_id: engine_label(r) for r in screen.rows}
                assert engines == {frozen.name: "pid 4242 NOT RESPONDING 2h01m", healthy.name: "pid 4242"}

    run(body)


def test_item_detail_says_a_skip_was_not_acknowledged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchtui.tui.screens import detail
    from batchtui.tui.screens.detail import ItemDetailScreen

    batch = make_batch(tmp_path, state=BatchState.RUNNING, updated_at=T1)
    monkeypatch.setattr(detail, "ACK_TIMEOUT_S", 0.3)
    said: list[str] = []

    async def body() -> None:
        with hold_lock(batch, pid=os.getpid(), host=HOST):
            app = _app(tmp_path, batch)
            async with app.run_test(size=SIZE) as pilot:
                monkeypatch.setattr(app, "notify", lambda message, **_kw: said.append(str(message)))
                await app.push_screen(ItemDetailScreen(batch, 250))  # a pending item
                await pilot.pause(0.1)
                await pilot.press("s", "y")  # the key, then its confirmation
                await _until(pilot, lambda: any("not acknowledged" in m for m in said))
                assert [orjson.loads(line)["op"] for line in (batch / "control.jsonl").read_bytes().splitlines()] == [
                    "skip"
                ]
                text = next(m for m in said if "not acknowledged" in m)
                assert text.startswith("skip #250: not acknowledged (engine not responding for 2h01m)"), text

    run(body)
