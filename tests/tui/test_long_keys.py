"""A key longer than the row cache keeps (TEXT_CAP) still shows its end: keys and paths differ
at their end as often as at their start, which is why the key column is cut in the middle.
Two 2,000-character keys that differ only at their end were drawn alike, both ending in "A…"
(the cap cut the end off before the middle cut could keep it); the in-flight panel the same."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from batchtui.engine.files import read_model
from batchtui.engine.models import BatchState, LiveProgress
from batchtui.engine.store.queries import ItemRow
from batchtui.tui.screens.detail_text import title
from batchtui.tui.widgets.in_flight import InFlightPanel
from batchtui.tui.widgets.items_rows import TEXT_CAP, Row, fit

from .conftest import run
from .fixtures import make_batch
from .test_panels import PanelsApp


def _row(key: str) -> Row:
    return Row.from_item(
        ItemRow(0, key, key, "line", "pending", 0, None, None, None, None, None, None, None, None, None)
    )


def test_a_very_long_key_keeps_its_end() -> None:
    ends = ("/part-0001.csv", "/part-0002.csv")
    shown = [fit(_row("A" * 2000 + end).key, 40, middle=True) for end in ends]
    assert [s.endswith(end) for s, end in zip(shown, ends, strict=True)] == [True, True], shown
    assert shown[0] != shown[1]
    assert shown[0].startswith("AAAA") and shown[0].count("…") == 1, shown[0]


def test_the_kept_key_is_capped_and_escaped() -> None:
    key = _row("\x1b" * 3000).key
    assert "\x1b" not in key and key.count("…") == 1
    assert len(key) <= TEXT_CAP * len("\\x1b")
    assert _row("short").key == "short"


def test_the_in_flight_panel_keeps_a_very_long_keys_end(tmp_path: Path) -> None:
    live = read_model(make_batch(tmp_path, state=BatchState.RUNNING) / "live_progress.json", LiveProgress)
    ends = [f"/part-{i:04d}.csv" for i in range(len(live.in_flight))]
    flights = [f.model_copy(update={"key": "A" * 2000 + end}) for f, end in zip(live.in_flight, ends, strict=True)]
    live = live.model_copy(update={"in_flight": flights})

    async def body() -> None:
        app = PanelsApp()
        async with app.run_test(size=(140, 20)) as pilot:
            app.live = live
            await pilot.pause()
            table = app.query_one(InFlightPanel).query_one("#inflight", DataTable)
            shown = [str(table.get_row_at(i)[3]) for i in range(len(ends))]
            assert [s.endswith(end) for s, end in zip(shown, ends, strict=True)] == [True] * len(ends), shown
            assert all(s.count("…") == 1 for s in shown), shown

    run(body)


def test_the_item_details_title_keeps_a_very_long_keys_end() -> None:
    row = ItemRow(
        7, "A" * 2000 + "/part-0007.csv", "x", "line", "failed", 1, None, None, None, None, None, None, None, None, None
    )
    shown = title(row, None, 0.0).plain
    assert "A…A" in shown and "/part-0007.csv  [FAILED]" in shown, shown
