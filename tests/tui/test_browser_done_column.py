"""The browser's Done column keeps the batch's total when the figures do not fit: a 1M-item
batch showed ``31,556/1,0…`` (its total cut off) in the 11 cells the column has at 200x60 with
the preview pane open; now ``31.6k/1M``, and the figures whole where they fit."""

from __future__ import annotations

import time

import pytest
from rich.cells import cell_len

from batchtui.engine.models import LiveCounts
from batchtui.engine.summary import BatchSummary
from batchtui.tui.screens.browser_columns import cell_text


def _done(complete: int, total: int, width: int) -> str:
    row = BatchSummary(
        batch_id="20261205_230030_a52a50cc",
        path="/x",
        state="paused",
        totals=LiveCounts(total=total, complete=complete, pending=total - complete),
    )
    return cell_text("done", row, width, time.time(), "yellow", "red").plain


@pytest.mark.parametrize(
    ("complete", "total", "width", "shown"),
    [
        (31_556, 1_000_000, 11, "31.5k/1M"),
        (31_556, 1_000_000, 16, "31,556/1,000,000"),
        (999_999, 1_000_000, 11, "999.9k/1M"),  # rounded down: never done when it is not
        (12_000, 12_000, 11, "12k/12k"),
        (13, 13, 11, "13/13"),
        (2_500_000_000, 3_000_000_000, 11, "2.5G/3G"),
    ],
)
def test_the_done_column_keeps_the_total(complete: int, total: int, width: int, shown: str) -> None:
    got = _done(complete, total, width)
    assert got == shown
    assert cell_len(got) <= width
