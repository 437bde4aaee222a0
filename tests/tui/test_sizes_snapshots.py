"""Snapshots of the dashboard at the sizes terminals have (80x24, 100x30, 120x40, 200x60),
running and finished, with three items marked: the pinned status line, the panels collapsed
by size, the footer's first keys. Update on purpose with ``--snapshot-update`` and look at
each SVG before committing it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from batchtui.engine.models import BatchState

from .fixtures import hold_lock, make_batch
from .test_snapshots import app_for, settle

SIZES = [(80, 24), (100, 30), (120, 40), (200, 60)]
OUT = Path("batch_output")


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # relative paths keep the snapshots free of tmp dir names
    OUT.mkdir()
    yield OUT


async def mark_three(pilot: Pilot[Any]) -> None:
    await settle(pilot)
    await pilot.press("space", "down", "space", "down", "space")
    await settle(pilot)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_running_marked(out: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    batch = make_batch(out, state=BatchState.RUNNING)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=size, run_before=mark_three)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_finished_marked(out: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    batch = make_batch(out, state=BatchState.FINISHED)
    assert snap_compare(app_for(out, batch), terminal_size=size, run_before=mark_three)
