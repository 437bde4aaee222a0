"""What a progress update costs the dashboard (issue 19, point 6): with the engine in the app's
worker thread every repaint, layout and recompose is time the engine does not get (one GIL).
Counted, not timed: an update where nothing changed repaints nothing; one where a single figure
changed repaints that figure's widget alone and lays nothing out; a figure that grows digit by
digit lays the screen out once; the footer composes its keys once per change of what it shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from textual.widget import Widget

from batchtui.engine.files import read_model
from batchtui.engine.models import BatchState, LiveProgress
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.messages import LiveUpdated
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.widgets.footer import KeyFooter

from .conftest import run
from .fixtures import FROZEN, hold_lock, make_batch


class Refreshes:
    """Widget.refresh calls while counting: (widget, layout) each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.counting = False
        original = Widget.refresh

        def refresh(widget: Widget, *regions: Any, layout: bool = False, **kwargs: Any) -> Any:
            if self.counting:
                self.calls.append((widget.id or type(widget).__name__, layout))
            return original(widget, *regions, layout=layout, **kwargs)

        monkeypatch.setattr(Widget, "refresh", refresh)

    def widgets(self) -> Counter[str]:
        return Counter(name for name, _layout in self.calls)

    def layouts(self) -> list[str]:
        return [name for name, layout in self.calls if layout]


def _app(tmp_path: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=tmp_path, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


async def _settled(pilot: Any) -> None:
    for _ in range(3):
        await pilot.pause()


def test_an_update_where_nothing_changed_repaints_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)
    seen = Refreshes(monkeypatch)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = DashboardScreen(batch)
            await app.push_screen(screen)
            await _settled(pilot)
            seen.counting = True
            for _ in range(5):  # the engine wrote the file again: the same figures
                screen.post_message(LiveUpdated(batch, live.model_copy(deep=True)))
                await pilot.pause()
            await _settled(pilot)
            assert seen.calls == []

    run(body)


def test_an_update_where_one_figure_changed_repaints_that_widget_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)
    seen = Refreshes(monkeypatch)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = DashboardScreen(batch)
            await app.push_screen(screen)
            await _settled(pilot)
            seen.counting = True
            for mb in (80.0, 81.0, 1200.0):  # the memory figure: its label only (the file has a history)
                memory = live.memory.model_copy(update={"rss_mb": mb})
                screen.post_message(LiveUpdated(batch, live.model_copy(update={"memory": memory})))
                await pilot.pause()
            await _settled(pilot)
            assert seen.widgets() == Counter({"mem-label": 3})
            assert seen.layouts() == []

    run(body)


def test_a_growing_figure_lays_the_screen_out_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """complete 7, 95, 4,021... of 500,000: the count widens once (to the batch's total); the tab
    with the figure only when it grows past its widest, never when it shrinks."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)
    total = 500_000
    seen = Refreshes(monkeypatch)

    def at(complete: int) -> LiveProgress:
        counts = live.counts.model_copy(
            update={"total": total, "pending": total - complete, "complete": complete, "failed": 0, "skipped": 0}
        )
        return live.model_copy(update={"counts": counts, "total": total})

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = DashboardScreen(batch)
            await app.push_screen(screen)
            await _settled(pilot)
            screen.post_message(LiveUpdated(batch, at(7)))
            await _settled(pilot)
            seen.counting = True
            laid_out: dict[str, list[int]] = {}  # the figures at which a widget asked for a layout
            for complete in (95, 4_021, 77_777, 123_456, 99_999, 12_345, 123_456):
                screen.post_message(LiveUpdated(batch, at(complete)))
                await _settled(pilot)
                for name in set(seen.layouts()):
                    laid_out.setdefault(name, []).append(complete)
                seen.calls.clear()
            assert laid_out["count-complete"] == [4_021]  # at once for 500,000 (the file's 168 had room for 95)
            assert "count-pending" not in laid_out  # a figure that shrinks keeps its room
            assert laid_out["tab-complete"] == [4_021, 77_777, 123_456]  # past its widest only
            label = str(screen.query_one("#count-complete").render())
            assert label.strip() == "complete 123,456"

    with hold_lock(batch):  # the writes are a live engine's (a dead one's counts are the store's)
        run(body)


def test_the_footer_composes_once_per_change_of_its_keys(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = DashboardScreen(batch)
            await app.push_screen(screen)
            await _settled(pilot)
            footer = screen.query_one(KeyFooter)
            before = footer.compositions
            # The screen opens with the items table focused: its keys are composed once, not
            # first the errors table's (the first focusable widget) and then the table's.
            assert before == 1
            assert screen.focused is screen.query_one("#items")
            assert "Mark" in [getattr(key, "description", "") for key in footer.query("FooterKey")]
            for _ in range(6):  # Textual's Footer recomposed on each
                screen.refresh_bindings()
                await pilot.pause()
            await _settled(pilot)
            assert footer.compositions == before
            # The errors table takes the focus: its keys instead of the items table's (a real
            # change), with the screen's bindings refreshed 3 times more meanwhile.
            await pilot.press("e")
            for _ in range(3):
                screen.refresh_bindings()
            await _settled(pilot)
            assert footer.compositions == before + 1
            assert "Mark" not in [getattr(key, "description", "") for key in footer.query("FooterKey")]
            await pilot.press("i")  # back to the items
            await _settled(pilot)
            assert footer.compositions == before + 2
            assert "Mark" in [getattr(key, "description", "") for key in footer.query("FooterKey")]

    run(body)


def test_a_dashboard_opened_directly_composes_its_footer_once(tmp_path: Path) -> None:
    """`batchtui watch` opens the dashboard as the app's first screen: the items table gets the
    first focus (not the errors table, the first focusable widget, and then the table), so the
    footer's keys are composed once, with the table's keys (Mark)."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await _settled(pilot)
            await app.workers.wait_for_complete()
            await _settled(pilot)
            footer = app.screen.query_one(KeyFooter)
            assert app.screen.focused is app.screen.query_one("#items")
            assert footer.compositions == 1
            assert "Mark" in [getattr(key, "description", "") for key in footer.query("FooterKey")]

    run(body)


def test_the_in_flight_panel_draws_the_rows_that_fit_and_nothing_while_hidden(tmp_path: Path) -> None:
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    from batchtui.engine.models import InFlight
    from batchtui.tui.widgets.in_flight import InFlightPanel

    live = read_model(make_batch(tmp_path, state=BatchState.RUNNING) / "live_progress.json", LiveProgress)

    def flights(first: int, n: int) -> LiveProgress:
        items = [InFlight(seq=s, key=f"k{s}", attempt=1, started_at=live.updated_at) for s in range(first, first + n)]
        return live.model_copy(update={"in_flight": items})

    class PanelApp(App[None]):
        CSS = "#flight { height: 6; }"  # its title, the table's header and 4 rows

        def compose(self) -> ComposeResult:
            yield InFlightPanel(lambda: FROZEN, id="flight")

    async def body() -> None:
        app = PanelApp()
        async with app.run_test(size=(80, 12)) as pilot:
            panel = app.query_one(InFlightPanel)
            table = app.query_one("#inflight", DataTable)
            await pilot.pause()
            panel.live = flights(100, 64)  # 64 handed out: the 4 that fit are drawn
            await pilot.pause()
            assert [str(table.get_cell_at((i, 0))) for i in range(table.row_count)] == ["100", "101", "102", "103"]
            panel.display = False  # a narrow terminal hides it
            await pilot.pause()
            panel.live = flights(200, 64)
            await pilot.pause()
            assert str(table.get_cell_at((0, 0))) == "100"  # not drawn while hidden
            panel.display = True
            await pilot.pause()
            await pilot.pause()
            assert [str(table.get_cell_at((i, 0))) for i in range(table.row_count)] == ["200", "201", "202", "203"]

    run(body)


def test_a_resize_across_every_layout_threshold_restyles_the_screen_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """80x24 -> 200x60 flips the three layout classes (short, low, narrow): one restyle of the
    whole screen, not one a class."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED)
    restyled: list[str] = []
    original = BatchtuiApp.update_styles

    def update_styles(app: BatchtuiApp, node: Any, animate: bool = True) -> None:
        restyled.append(type(node).__name__)
        original(app, node, animate)

    monkeypatch.setattr(BatchtuiApp, "update_styles", update_styles)

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
        )
        async with app.run_test(size=(80, 24)) as pilot:
            await _settled(pilot)
            screen = app.screen
            assert {"short", "low", "narrow"} <= set(screen.classes)
            restyled.clear()
            await pilot.resize_terminal(200, 60)
            await _settled(pilot)
            assert not {"short", "low", "narrow"} & set(screen.classes)
            assert restyled.count("DashboardScreen") == 1, restyled

    run(body)


def test_the_tabs_and_the_status_line_show_the_counts_of_the_same_write(tmp_path: Path) -> None:
    """Writes come faster than a second apart: after each, the tabs' counts are the status
    line's, never the ones of a write before (a screen that says "failed 30" and "Failed 27")."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = DashboardScreen(batch)
            await app.push_screen(screen)
            await _settled(pilot)
            for failed in (30, 31, 45):  # three writes in well under a second
                counts = live.counts.model_copy(update={"failed": failed, "pending": live.counts.pending - failed})
                screen.post_message(LiveUpdated(batch, live.model_copy(update={"counts": counts})))
                await _settled(pilot)
                status = str(screen.query_one("#progress-text").render())
                assert f"failed {failed}" in status, status
                tab = str(screen.query_one("#tab-failed").render())
                assert tab.strip() == f"3 Failed {failed}", tab  # its key, its label, its count

    with hold_lock(batch):  # the writes are a live engine's (a dead one's counts are the store's)
        run(body)


def test_running_queued_and_retry_wait_add_up_to_the_in_flight_tab(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)

    async def body() -> None:
        app = _app(tmp_path)
        with hold_lock(batch):  # an engine runs it (no engine: nothing is shown running)
            await in_flight_figures(app)

    async def in_flight_figures(app: BatchtuiApp) -> None:
        async with app.run_test(size=(160, 40)) as pilot:
            screen = DashboardScreen(batch)
            await app.push_screen(screen)
            await _settled(pilot)
            update = {"processing": 10, "running": 2, "queued": 5, "retrying": 3}
            screen.post_message(
                LiveUpdated(batch, live.model_copy(update={"counts": live.counts.model_copy(update=update)}))
            )
            await _settled(pilot)
            status = str(screen.query_one("#progress-text").render())
            assert "running 2/" in status and "queued 5" in status and "retry wait 3" in status, status
            counts = " ".join(str(w.render()) for w in screen.query("#counts Static"))
            assert "queued 5 · retry wait 3" in counts, counts
            assert str(screen.query_one("#tab-processing").render()).strip() == "2 In flight 10"

    run(body)


def test_a_held_dispatch_shows_on_the_status_line_while_it_lasts(tmp_path: Path) -> None:
    """Commands that cannot start (a process limit) and a memory hold were said once, in the
    event log, where they scroll away: the status line says it while it lasts (as the headless
    progress line does)."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)

    async def body() -> None:
        app = _app(tmp_path)
        with hold_lock(batch):
            async with app.run_test(size=(160, 40)) as pilot:
                screen = DashboardScreen(batch)
                await app.push_screen(screen)
                await _settled(pilot)
                held = {"start_hold": "cannot start commands: x: 3 starts refused since 09:00:00", "memory_hold": "m"}
                for update, shown in ((held, True), ({"start_hold": None, "memory_hold": None}, False)):
                    screen.post_message(LiveUpdated(batch, live.model_copy(update=update)))
                    await _settled(pilot)
                    status = str(screen.query_one("#progress-text").render())
                    assert ("commands cannot start" in status) == shown, status
                    assert ("held for memory" in status) == shown, status

    run(body)


def test_the_in_flight_tab_lists_every_item_its_count_counts(tmp_path: Path) -> None:
    """Items handed out since the engine's last commit are 'pending' in the store: the tab said
    "In flight 8" over 2 rows. It lists what live_progress.json has in flight, queued ones too."""
    import sqlite3

    from batchtui.engine.models import InFlight
    from batchtui.tui.widgets.items_table import ItemsTable

    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)
    db = sqlite3.connect(batch / "items.db")
    try:
        processing = [seq for (seq,) in db.execute("SELECT seq FROM items WHERE status='processing' ORDER BY seq")]
        pending = [seq for (seq,) in db.execute("SELECT seq FROM items WHERE status='pending' ORDER BY seq LIMIT 6")]
    finally:
        db.close()
    at = live.updated_at
    flying = [InFlight(seq=s, key=str(s), attempt=1, started_at=at) for s in processing]
    flying += [InFlight(seq=s, key=str(s), attempt=1, started_at=at, queued=True) for s in pending]
    update = {"processing": len(flying), "running": len(processing), "queued": len(pending), "retrying": 0}
    written = live.model_copy(update={"in_flight": flying, "counts": live.counts.model_copy(update=update)})

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(160, 50)) as pilot:
            screen = DashboardScreen(batch)
            await app.push_screen(screen)
            await _settled(pilot)
            screen.post_message(LiveUpdated(batch, written))
            await _settled(pilot)
            await pilot.press("2")
            await _settled(pilot)
            assert str(screen.query_one("#tab-processing").render()).strip() == f"2 In flight {len(flying)}"
            table = screen.query_one(ItemsTable)
            assert table.row_count == len(flying) == len(processing) + 6
            shown = [r and table._in_flight.row(r) for r in (table._row_at(i) for i in range(table.row_count))]
            assert [r.seq for r in shown if r is not None] == sorted(processing + pending)
            assert {r.seq: r.status for r in shown if r is not None and r.seq in pending} == dict.fromkeys(
                pending, "queued"
            )

    with hold_lock(batch):
        run(body)
