"""Snapshots of the batch browser (issue 19, point 2) at the smallest supported terminal and a
large one: the name first, the state with its halt reason, the preview of the halted batch under
the table (80x24) or beside it (160x48). Update on purpose with ``--snapshot-update``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen

from .fixtures import FROZEN, hold_lock, make_batch
from .test_browser import halted_batch

OUT = Path("batch_output")


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # relative paths keep the snapshots free of tmp dir names
    OUT.mkdir()
    yield OUT


async def on_the_halted_batch(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)
    await pilot.press("down")  # from the newest (finished) to the halted one
    screen = pilot.app.screen
    assert isinstance(screen, BrowserScreen) and screen.selected_id == "20261118_090000_aaaa0003"
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_browser_with_the_preview(out: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    running = make_batch(out, state=BatchState.RUNNING)
    halted_batch(out)
    make_batch(out, state=BatchState.FINISHED)
    app = BatchtuiApp(output_dir=out, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True)
    with hold_lock(running):
        assert snap_compare(app, terminal_size=size, run_before=on_the_halted_batch)
