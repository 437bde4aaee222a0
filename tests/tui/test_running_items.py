"""Items in flight look like what they do: running on try N for so long, or queued (handed out,
not started), in the items table and in the item detail, at 80x24 where the In flight panel is
hidden. The store says 'processing' for both (and counts finished tries only); what they do now
is live_progress.json's ``in_flight``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from textual.widgets import DataTable, Static, Tab

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.files import write_model
from batchtui.engine.models import BatchState, InFlight, LiveProgress
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import FROZEN, hold_lock, make_batch
from .test_app import _text, _until
from .test_snapshots import settle

SIZE = (80, 24)
#: make_batch's running batch: items 180-183 are 'processing' in the store.
RUNNING, QUEUED = (180, 181), (182, 183)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _batch(root: Path) -> Path:
    """A running batch whose engine writes: 180 on its 2nd try for 75 s, 181 on its 1st for 5 s,
    182 and 183 queued behind them."""
    batch = make_batch(root, state=BatchState.RUNNING)
    live = LiveProgress.model_validate_json((batch / "live_progress.json").read_bytes())
    flights = [
        InFlight(seq=180, key="k180", attempt=2, started_at=_iso(FROZEN - 75)),
        InFlight(seq=181, key="k181", attempt=1, started_at=_iso(FROZEN - 5)),
        InFlight(seq=182, key="k182", attempt=1, started_at=_iso(FROZEN - 80), queued=True),
        InFlight(seq=183, key="k183", attempt=1, started_at=_iso(FROZEN - 80), queued=True),
    ]
    write_model(batch / "live_progress.json", live.model_copy(update={"in_flight": flights}))
    return batch


def _app(out: Path, batch: Path, clock: list[float]) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out,
        batch=batch,
        watch_files=False,
        clock=lambda: clock[0],
        handle_hangup=False,
        strict_display=True,
    )


def _rows(table: ItemsTable) -> dict[int, list[str]]:
    """seq -> the cells the table draws on its row (line 0 is the header)."""
    rows: dict[int, list[str]] = {}
    for y in range(1, table.size.height):
        cells = table.render_line(y).text.split()
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = cells[1:]
    return rows


def test_the_in_flight_tab_tells_running_items_from_queued_ones(tmp_path: Path) -> None:
    batch = _batch(tmp_path)
    clock = [FROZEN]

    async def body() -> None:
        async with _app(tmp_path, batch, clock).run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("2")  # the In flight tab: the store's 'processing' items
            await settle(pilot)
            table = pilot.app.screen.query_one(ItemsTable)
            rows = _rows(table)
            # seq, status, tries (the try it is on), how long it has run, key
            assert rows[180][:3] == ["running", "2", "1m15s"], rows
            assert rows[181][:3] == ["running", "1", "5.0s"], rows
            # Queued: no try begun, no time yet (the key follows the status).
            assert rows[182][0] == "queued" and rows[182][1].startswith("https://"), rows
            assert rows[183][0] == "queued", rows
            # The running times go on with the clock (the dashboard's second tick).
            clock[0] += 10
            screen = pilot.app.screen
            assert isinstance(screen, DashboardScreen)
            screen._tick()
            await pilot.pause()
            rows = _rows(table)
            assert rows[180][:3] == ["running", "2", "1m25s"], rows
            assert rows[181][:3] == ["running", "1", "15.0s"], rows
            # ... on screen too: the lines drawn before were painted again.
            shot = pilot.app.export_screenshot()
            assert "1m25s" in shot and "1m15s" not in shot

    with hold_lock(batch):
        run(body)


def test_items_of_an_engine_that_died_are_not_shown_running(tmp_path: Path) -> None:
    """No engine holds the batch (it died): what the file says was in flight is not running,
    and the In flight tab lists none of it, as its count says ("In flight 0" listed 8 rows)."""
    batch = _batch(tmp_path)

    async def body() -> None:
        async with _app(tmp_path, batch, [FROZEN]).run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = pilot.app.screen.query_one(ItemsTable)
            table.cursor_row = max(*RUNNING, *QUEUED)  # the All tab, scrolled to them
            await settle(pilot)
            rows = _rows(table)
            assert {rows[seq][0] for seq in (*RUNNING, *QUEUED)} == {"processing"}, rows
            await pilot.press("2")
            await settle(pilot)
            assert _rows(table) == {}
            tab = pilot.app.screen.query_one("#tab-processing", Tab)
            assert tab.label_text.endswith("In flight 0"), tab.label_text

    run(body)


def test_the_detail_of_a_running_item_shows_its_try_under_way(tmp_path: Path) -> None:
    batch = _batch(tmp_path)
    clock = [FROZEN]

    async def body() -> None:
        async with _app(tmp_path, batch, clock).run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("2", "enter")  # the first row: 180, on its 2nd try
            await settle(pilot)
            screen = pilot.app.screen
            assert isinstance(screen, ItemDetailScreen) and screen.seq == 180
            title = _text(screen.query_one("#detail-title", Static))
            assert "[RUNNING]  try 2  1m15s" in title, title
            attempts = screen.query_one("#attempts", DataTable)
            last = [str(cell) for cell in attempts.get_row_at(attempts.row_count - 1)]
            assert last[:4] == ["2", "running", _iso(FROZEN - 75), "1m15s"], last
            assert "BATCHTUI_ATTEMPT=2" in _text(screen.query_one("#detail-run", Static))
            clock[0] += 10
            screen._tick()  # the detail's second
            await pilot.pause()
            assert "[RUNNING]  try 2  1m25s" in _text(screen.query_one("#detail-title", Static))
            last = [str(cell) for cell in attempts.get_row_at(attempts.row_count - 1)]
            assert last[3] == "1m25s", last
            await pilot.press("escape", "down", "down", "enter")  # 182: queued
            await settle(pilot)
            screen = pilot.app.screen
            assert isinstance(screen, ItemDetailScreen) and screen.seq == 182
            title = _text(screen.query_one("#detail-title", Static))
            assert "[QUEUED]" in title and "RUNNING" not in title, title
            attempts = screen.query_one("#attempts", DataTable)
            assert [str(cell) for cell in attempts.get_row_at(attempts.row_count - 1)][:2] == ["1", "queued"]

    with hold_lock(batch):
        run(body)


def _runner(tmp_path: Path, gate: Path) -> BatchRunner:
    """Three items on one worker that wait for ``gate``: one runs, two are queued behind it."""
    items = tmp_path / "items.txt"
    items.write_text("a\nb\nc\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 1, "grace": 2}, environ={})
    cmd = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    return BatchRunner(create_batch(config, build_spec([str(items)]), shell_spec(cmd)), config=config)


def test_a_real_engine_s_running_and_queued_items(tmp_path: Path) -> None:
    """What a real engine writes: its running item on try 1 with a time, the others queued."""
    gate = tmp_path / "gate"
    runner = _runner(tmp_path, gate)
    app = BatchtuiApp(output_dir=runner.batch.path.parent, runner=runner, handle_hangup=False, strict_display=True)
    shown: dict[int, list[str]] = {}

    async def body() -> None:
        async with app.run_test(size=SIZE) as pilot:
            try:
                table = app.screen.query_one(ItemsTable)

                def marked() -> bool:  # the store marks them 'processing' after a second out
                    shown.update(_rows(table))
                    return all(shown.get(seq, [""])[0] in ("running", "queued") for seq in (0, 1, 2))

                await _until(pilot, marked, timeout=30)
                assert [shown[seq][0] for seq in (0, 1, 2)] == ["running", "queued", "queued"], shown
                assert shown[0][1] == "1" and shown[0][2].endswith("s"), shown
            finally:
                gate.touch()
                await _until(pilot, lambda: app.engine_result is not None, timeout=60)

    run(body)
