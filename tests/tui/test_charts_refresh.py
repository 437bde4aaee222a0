"""The dashboard repaints only what changed (issue 19, point 6: with the engine in the app's
worker thread, every repaint and layout is time the engine does not get): a label whose text
did not change is not touched and one whose size cannot change is not laid out again; the items
table repaints only when the rows on screen changed; the in-flight table is updated in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widget import Widget
from textual.widgets import DataTable, Static

from batchtui.engine.files import read_model
from batchtui.engine.models import BatchState, InFlight, LiveProgress
from batchtui.tui.widgets.in_flight import InFlightPanel
from batchtui.tui.widgets.items_table import ItemsTable
from batchtui.tui.widgets.labels import set_text

from .conftest import run
from .fixtures import FROZEN, make_batch


class _Refreshes:
    """Widget.refresh calls per widget id: (repaints, layouts)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str | None, bool]] = []
        original = Widget.refresh

        def refresh(widget: Widget, *regions: Any, layout: bool = False, **kwargs: Any) -> Any:
            self.calls.append((widget.id, layout))
            return original(widget, *regions, layout=layout, **kwargs)

        monkeypatch.setattr(Widget, "refresh", refresh)

    def of(self, widget_id: str) -> list[bool]:
        return [layout for wid, layout in self.calls if wid == widget_id]


class _Labels(App[None]):
    CSS = "#fixed { width: 1fr; height: 1; } #auto { width: auto; height: 1; } #tall { width: 20; height: auto; }"

    def compose(self) -> ComposeResult:
        yield Static(Text("12.5/s"), id="fixed")
        yield Static(Text("complete 9"), id="auto")
        yield Static(Text("memory 71 MB"), id="tall")


def test_a_label_is_repainted_only_when_its_text_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        app = _Labels()
        async with app.run_test(size=(60, 5)) as pilot:
            await pilot.pause()
            fixed, auto = app.query_one("#fixed", Static), app.query_one("#auto", Static)
            seen = _Refreshes(monkeypatch)
            assert not set_text(fixed, Text("12.5/s"))  # the same: nothing
            assert set_text(fixed, Text("123.5/s"))  # longer, but its size is fixed: no layout
            assert set_text(auto, Text("complete 7"))  # as long: no layout
            assert set_text(auto, Text("complete 10"))  # longer, its width follows: laid out
            assert seen.of("fixed") == [False] and seen.of("auto") == [False, True]
            tall = app.query_one("#tall", Static)
            assert set_text(tall, Text("memory 1.5 GB"))  # one line still: no layout
            assert set_text(tall, Text("memory 1.5 GB (peak 2.0 GB)"))  # wraps: two lines, laid out
            await pilot.pause()
            assert seen.of("tall")[:2] == [False, True] and tall.size.height == 2
            assert str(fixed.render()) == "123.5/s"

    run(body)


def test_the_items_table_repaints_only_when_its_rows_on_screen_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    class TableApp(App[None]):
        def compose(self) -> ComposeResult:
            yield ItemsTable(batch / "items.db", id="items")

    async def body() -> None:
        app = TableApp()
        async with app.run_test(size=(100, 20)) as pilot:
            await pilot.pause()
            table = app.query_one(ItemsTable)
            seen = _Refreshes(monkeypatch)
            table.refresh_data()  # nothing changed (a write of live_progress.json, the same rows)
            assert seen.of("items") == []
            db = sqlite3.connect(batch / "items.db")
            with db:  # an item on screen finishes
                db.execute("UPDATE items SET status='complete', attempts=1, duration_s=1.0 WHERE seq=1")
            db.close()
            table.refresh_data()
            assert seen.of("items") != []
            await pilot.pause()
            assert " 1 complete" in table.render_line(2).text

    run(body)


def test_the_in_flight_rows_are_updated_in_place(tmp_path: Path) -> None:
    live = read_model(make_batch(tmp_path, state=BatchState.RUNNING) / "live_progress.json", LiveProgress)

    def flights(*seqs: int) -> list[InFlight]:
        return [InFlight(seq=s, key=f"k{s}", attempt=1, started_at=live.updated_at) for s in seqs]

    class PanelApp(App[None]):
        def compose(self) -> ComposeResult:
            yield InFlightPanel(lambda: FROZEN, id="flight")

    async def body() -> None:
        app = PanelApp()
        async with app.run_test(size=(80, 12)) as pilot:
            panel = app.query_one(InFlightPanel)
            panel.live = live.model_copy(update={"in_flight": flights(1, 2, 3)})
            await pilot.pause()
            table = app.query_one("#inflight", DataTable)
            keys = list(table.rows)
            panel.live = live.model_copy(update={"in_flight": flights(4, 5, 6)})  # all new items
            await pilot.pause()
            assert list(table.rows) == keys  # the same rows, their cells changed: no clear
            assert [str(table.get_cell_at((i, 0))) for i in range(3)] == ["4", "5", "6"]
            assert str(table.get_cell_at((0, 3))) == "k4"
            panel.live = live.model_copy(update={"in_flight": flights(7)})
            await pilot.pause()
            # Fewer items: the rows left over are blanked, not removed (no layout).
            assert list(table.rows) == keys
            assert [str(table.get_cell_at((i, 0))) for i in range(3)] == ["7", "", ""]
            panel.live = live.model_copy(update={"in_flight": []})  # none for a moment: blanked
            await pilot.pause()
            assert list(table.rows) == keys
            assert [str(table.get_cell_at((i, 0))) for i in range(3)] == ["", "", ""]
            panel.live = live.model_copy(update={"in_flight": [], "state": BatchState.FINISHED})
            await pilot.pause()
            assert table.row_count == 0  # the batch is over: no rows

    run(body)


def test_an_engine_in_the_app_has_its_progress_shown_twice_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchtui.tui.app import BatchtuiApp
    from batchtui.tui.messages import LiveUpdated
    from batchtui.tui.screens.dashboard import DashboardScreen

    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)
    monkeypatch.setattr(BatchtuiApp, "engine_running", property(lambda self: True))
    # An interval no loaded machine outlasts: what is held back stays held until the timer's
    # callback runs (called below: a real timer would make the test a race against the load).
    monkeypatch.setattr(DashboardScreen, "IN_PROCESS_EVERY_S", 3600.0)

    def write(n: int, state: BatchState = BatchState.RUNNING) -> LiveUpdated:
        return LiveUpdated(batch, live.model_copy(update={"commit_seq": n, "state": state}))

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
        )
        async with app.run_test(size=(120, 40)) as pilot:
            screen = DashboardScreen(batch, in_process=True)
            await app.push_screen(screen)
            await pilot.pause()
            assert screen.live is not None and screen.live.commit_seq == 42  # the file, at once
            screen.post_message(write(1))
            screen.post_message(write(2))
            await pilot.pause()
            assert screen.live.commit_seq == 42  # within the interval: held back
            timer = screen._live_timer
            assert timer is not None  # one timer for both writes
            screen._live_later()  # what the timer runs when the interval is over
            timer.stop()
            assert screen.live.commit_seq == 2  # the latest (1 was never shown)
            screen.post_message(write(3, BatchState.PAUSED))
            await pilot.pause()
            assert screen.live.commit_seq == 3  # a change of state: at once

    run(body)
