"""Snapshots of the resume dialog (``u`` on the dashboard of a halted fixture batch), at the
smallest supported terminal and a larger one. Update on purpose with `--snapshot-update`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from batchtui.engine.models import BatchState

from .fixtures import make_batch
from .test_snapshots import app_for, settle

OUT = Path("batch_output")
HALT = "failure rate 35% over --max-failure-rate 20% after 40 items"


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # relative paths keep the snapshots free of tmp dir names
    OUT.mkdir()
    yield OUT


async def open_dialog(pilot: Pilot[Any], *keys: str) -> None:
    await settle(pilot)
    await pilot.press("u")
    await settle(pilot)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would make the snapshot depend on timing
    if keys:
        await pilot.press(*keys)
        await settle(pilot)


def test_resume_dialog_80x24(out: Path, snap_compare: Any) -> None:
    # The smallest supported terminal: every field, the plan, the command and the buttons fit.
    batch = make_batch(out, state=BatchState.HALTED, halt_reason=HALT)
    assert snap_compare(app_for(out, batch), terminal_size=(80, 24), run_before=open_dialog)


def test_resume_dialog_refusing_a_value_80x24(out: Path, snap_compare: Any) -> None:
    # 0 workers: the CLI's message, in the theme's error colour, and the buttons still on screen.
    batch = make_batch(out, state=BatchState.HALTED, halt_reason=HALT)

    async def zero_workers(pilot: Pilot[Any]) -> None:
        await open_dialog(pilot, "0")

    assert snap_compare(app_for(out, batch), terminal_size=(80, 24), run_before=zero_workers)


def test_resume_dialog_filled_120x40(out: Path, snap_compare: Any) -> None:
    # Workers 8, a raised failure-rate limit, retry failed (space on the checkbox), in the
    # background (the radio set: down, then space): the command and the plan follow.
    batch = make_batch(out, state=BatchState.HALTED, halt_reason=HALT)

    async def fill(pilot: Pilot[Any]) -> None:
        await open_dialog(pilot, "8", "tab", "0", ".", "5", "tab", "tab", "tab", "space", "tab", "right", "space")

    assert snap_compare(app_for(out, batch), terminal_size=(120, 40), run_before=fill)
