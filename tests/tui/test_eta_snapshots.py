"""Snapshots of the dashboard's pinned status line with the honest ETA (engine/eta.py): a range
("ETA 4-6 min") and "stalled 1m30s" in the theme's warning colour, at the smallest supported
terminal (80x24), where the ETA must stay on screen. Update on purpose with
`pytest tests/tui/test_eta_snapshots.py --snapshot-update` and look at the SVGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchtui.engine.files import write_model
from batchtui.engine.models import BatchState, LiveProgress

from .fixtures import hold_lock, make_batch
from .test_snapshots import app_for, out, settle

__all__ = ["out"]  # the fixture, used by name


def running_batch(out: Path, **update: Any) -> Path:
    """The running fixture batch with ``update`` applied to its live_progress.json."""
    batch = make_batch(out, state=BatchState.RUNNING)
    path = batch / "live_progress.json"
    live = LiveProgress.model_validate_json(path.read_bytes())
    write_model(path, live.model_copy(update=update))
    return batch


def test_status_line_eta_range_80x24(out: Path, snap_compare: Any) -> None:
    batch = running_batch(out, rate_per_s=0.5, eta_s=300.0, eta_low_s=240.0, eta_high_s=355.0)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=(80, 24), run_before=settle)


def test_status_line_stalled_80x24(out: Path, snap_compare: Any) -> None:
    batch = running_batch(out, rate_per_s=0.2, eta_s=None, stalled_s=90.0)
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=(80, 24), run_before=settle)
