"""Snapshot tests (pytest-textual-snapshot) of every screen and theme, on fixture batches with a
frozen clock. Update on purpose with `pytest tests/tui/test_snapshots.py --snapshot-update`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen

from .fixtures import FROZEN, T1, hold_lock, make_batch

SIZE = (140, 48)
OUT = Path("batch_output")


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # relative paths keep the snapshots free of tmp dir names
    OUT.mkdir()
    yield OUT


def app_for(out: Path, batch: Path | None = None, theme: str = "dark") -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out,
        batch=batch,
        watch_files=False,
        clock=lambda: FROZEN,
        theme=theme,
        handle_hangup=False,
        strict_display=True,
    )


@contextlib.asynccontextmanager
async def dashboard_open(
    out: Path, batch: Path, size: tuple[int, int] = (120, 40)
) -> AsyncIterator[tuple[Pilot[Any], DashboardScreen]]:
    """The app of :func:`app_for` on ``batch``, run and settled, with its dashboard screen."""
    app = app_for(out, batch)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        yield pilot, screen


async def settle(pilot: Pilot[Any]) -> None:
    """Until the app is idle: its messages handled and no worker running, three rounds over (a
    worker's result can start another: the browser's list, then its preview). No fixed pause:
    with the clock frozen and no file watching, nothing else changes the screen."""
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_browser(out: Path, snap_compare: Any) -> None:
    running = make_batch(out, state=BatchState.RUNNING)
    for state in (BatchState.PAUSED, BatchState.HALTED, BatchState.FINISHED):
        make_batch(out, state=state)
    with hold_lock(running):
        assert snap_compare(app_for(out), terminal_size=SIZE, run_before=settle)


def test_dashboard_running(out: Path, snap_compare: Any) -> None:
    batch = make_batch(out, state=BatchState.RUNNING)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=SIZE, run_before=settle)


def test_dashboard_paused(out: Path, snap_compare: Any) -> None:
    batch = make_batch(out, state=BatchState.PAUSED)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=SIZE, run_before=settle)


def test_dashboard_not_responding(out: Path, snap_compare: Any) -> None:
    # The lock is held but live_progress.json is two hours old: a frozen (SIGSTOP), hung or
    # dead engine. The title and the status line say so, in the theme's warning colour.
    batch = make_batch(out, state=BatchState.RUNNING, updated_at=T1)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=SIZE, run_before=settle)


def test_dashboard_not_responding_80x24(out: Path, snap_compare: Any) -> None:
    # The smallest supported terminal: the state stays on screen (the compact layout).
    batch = make_batch(out, state=BatchState.RUNNING, updated_at=T1)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=(80, 24), run_before=settle)


def test_dashboard_halted_failed_tab(out: Path, snap_compare: Any) -> None:
    batch = make_batch(out, state=BatchState.HALTED, halt_reason="failure rate 35% over --max-failure-rate 20%")
    assert snap_compare(app_for(out, batch), terminal_size=SIZE, press=["3"], run_before=settle)


def test_item_detail(out: Path, snap_compare: Any) -> None:
    batch = make_batch(out, state=BatchState.FINISHED)

    async def open_failed(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("3", "enter")
        await settle(pilot)

    assert snap_compare(app_for(out, batch), terminal_size=SIZE, run_before=open_failed)


def test_stop_confirmation(out: Path, snap_compare: Any) -> None:
    batch = make_batch(out, state=BatchState.RUNNING)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=SIZE, press=["x"], run_before=settle)


@pytest.mark.parametrize("theme", ["dark", "light", "high-contrast", "nord", "gruvbox-light"])
def test_themes(out: Path, snap_compare: Any, theme: str) -> None:
    batch = make_batch(out, state=BatchState.FINISHED)
    assert snap_compare(app_for(out, batch, theme=theme), terminal_size=SIZE, run_before=settle)
