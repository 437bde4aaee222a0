""" "Slowest first" orders the items by the duration the table shows (QA: on a running batch
the queued items came first, by a previous try's duration that their blank cell does not show).

The duration column shows a finished try's time, a running item's time so far, and nothing for
an item queued (or otherwise handed out and not running): the order follows exactly that, the
items with nothing shown last."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from batchtui.engine.files import read_model, write_model
from batchtui.engine.models import BatchState, InFlight, LiveProgress
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import FROZEN, frozen_app, hold_lock, make_batch, until

SIZE = (140, 48)
_UNITS = {"ms": 0.001, "s": 1.0}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _running_batch(tmp_path: Path) -> Path:
    """The fixture's running batch, its four items in flight each with a previous try of 99 s
    (longer than any finished item): 181 running for 20 s, 180 for 0.75 s (the finished ones took
    0.1 to 0.7 s), 182 and 183 queued.
    Item 250 is pending again after a try of 50 s (a pending row shows its last try's time)."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    db = sqlite3.connect(batch / "items.db")
    with db:
        db.execute("UPDATE items SET attempts=1, duration_s=99.0 WHERE status='processing'")
        db.execute("UPDATE items SET attempts=1, duration_s=50.0 WHERE seq=250")
    db.close()
    live = read_model(batch / "live_progress.json", LiveProgress)
    flights = [
        InFlight(seq=181, key="k181", attempt=2, started_at=_iso(FROZEN - 20)),
        InFlight(seq=180, key="k180", attempt=2, started_at=_iso(FROZEN - 0.75)),
        InFlight(seq=182, key="k182", attempt=2, started_at=_iso(FROZEN - 30), queued=True),
        InFlight(seq=183, key="k183", attempt=2, started_at=_iso(FROZEN - 30), queued=True),
    ]
    write_model(batch / "live_progress.json", live.model_copy(update={"in_flight": flights}))
    return batch


def _seconds(cell: str) -> float | None:
    """A duration cell back in seconds (None: blank)."""
    if not cell:
        return None
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)(ms|s))?", cell)
    assert match and cell, f"not a duration: {cell!r}"
    hours, minutes, value, unit = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + (float(value) * _UNITS[unit] if value else 0.0)


def _drawn(table: ItemsTable) -> list[tuple[int, str, float | None]]:
    """(seq, status, duration shown) of every row line on screen."""
    header = table.render_line(0).text
    at = header.index("duration")
    out = []
    for y in range(1, table.size.height):
        line = table.render_line(y).text
        cells = line.split()
        if cells and cells[0].isdigit():
            out.append((int(cells[0]), cells[1], _seconds(line[at : at + 9].strip())))
    return out


def test_slowest_first_follows_the_durations_shown(tmp_path: Path) -> None:
    batch = _running_batch(tmp_path)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=SIZE) as pilot:
                table = app.screen.query_one(ItemsTable)
                await until(pilot, lambda: table.row_count == 300, "the items")
                await pilot.press("o")
                await until(pilot, lambda: any(s == "running" for _, s, _ in _drawn(table)), "the running rows")
                rows = _drawn(table)
                assert [seq for seq, _, _ in rows[:3]] == [250, 181, 180], rows[:5]
                assert rows[1][1:] == ("running", 20.0) and rows[2][1:] == ("running", 0.75), rows[:3]
                shown = [d for _, _, d in rows]
                assert None not in shown, rows  # the screen holds rows with a duration only
                assert shown == sorted(shown, reverse=True), rows
                assert not {182, 183} & {seq for seq, _, _ in rows}, rows  # queued: blank, last

    run(body)
