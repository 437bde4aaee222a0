"""Snapshots of the marked state and of the bulk action's confirm dialog (80x24 and 140x48), on
the fixture batch with a frozen clock. Update on purpose with --snapshot-update, and look."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp

from .fixtures import FROZEN, make_batch
from .test_snapshots import settle

OUT = Path("batch_output")


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # relative paths keep the snapshots free of tmp dir names
    OUT.mkdir()
    yield OUT


def _app(out: Path, batch: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out,
        batch=batch,
        watch_files=False,
        clock=lambda: FROZEN,
        theme="dark",
        handle_hangup=False,
        strict_display=True,
    )


async def _marked(pilot: Pilot[Any]) -> None:
    await settle(pilot)
    await pilot.press("space", "shift+down", "down", "down", "space")  # 0-2 and 4; the cursor on 5
    await pilot.app.workers.wait_for_complete()  # the marked count, off the UI thread
    await pilot.pause()


async def _confirm(pilot: Pilot[Any]) -> None:
    await settle(pilot)
    await pilot.press("3")
    await pilot.app.workers.wait_for_complete()  # the failed tab's count, off the UI thread
    await pilot.press("a")  # every failed item
    await pilot.app.workers.wait_for_complete()
    # Its "11 marked" toast lasts 2 s of real time: gone or still there when the dialog opened
    # over it, as fast as the machine was, and then frozen under the dialog. Cleared while the
    # dashboard is on top; the count stays in the status line.
    pilot.app.clear_notifications()
    await pilot.pause()
    await pilot.press("r")  # the count, five samples and how many more
    await pilot.app.workers.wait_for_complete()  # the dialog's counts and samples
    for _ in range(100):  # until the dialog is up (a loaded machine takes its time)
        if type(pilot.app.screen).__name__ == "ConfirmScreen":
            break
        await pilot.pause(0.05)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (140, 48)], ids=["80x24", "140x48"])
def test_marked_rows(out: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    batch = make_batch(out, state=BatchState.STOPPED)
    assert snap_compare(_app(out, batch), terminal_size=size, run_before=_marked)


@pytest.mark.parametrize("size", [(80, 24), (140, 48)], ids=["80x24", "140x48"])
def test_bulk_confirm_dialog(out: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    batch = make_batch(out, state=BatchState.STOPPED)
    assert snap_compare(_app(out, batch), terminal_size=size, run_before=_confirm)
