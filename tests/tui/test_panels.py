"""The dashboard's panels take the live progress as data: each one, mounted alone and bound to
an app's reactives, shows what it is given (no screen, no batch directory, no app lookups)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.reactive import var

from batchtui.engine.files import read_model
from batchtui.engine.liveness import EngineStatus, Liveness
from batchtui.engine.models import BatchState, LiveProgress, LockInfo, Manifest
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.host import Host
from batchtui.tui.widgets.charts import Charts
from batchtui.tui.widgets.counts import CountsRow
from batchtui.tui.widgets.in_flight import InFlightPanel
from batchtui.tui.widgets.status import GONE, ProgressLine, TitleBar

from .conftest import run
from .fixtures import FROZEN, make_batch


class PanelsApp(App[None]):
    CSS = "#flight-box { height: 6; }"  # room for the fixture's 4 items in flight (the rows that fit are drawn)
    live: var[LiveProgress | None] = var(None, always_update=True)
    engine: var[EngineStatus] = var(GONE)

    def compose(self) -> ComposeResult:
        yield TitleBar("b1", in_process=False, id="title").data_bind(PanelsApp.live, PanelsApp.engine)
        yield ProgressLine(id="progress-row").data_bind(PanelsApp.live, PanelsApp.engine)
        yield CountsRow(id="counts").data_bind(PanelsApp.live)
        yield Charts(id="charts").data_bind(PanelsApp.live)
        yield InFlightPanel(lambda: FROZEN, id="flight-box").data_bind(PanelsApp.live)


def _text(widget: object) -> str:
    content = getattr(widget, "content", None)
    return str(getattr(content, "plain", content))


def test_panels_show_the_live_progress_they_are_bound_to(tmp_path: Path) -> None:
    live = read_model(make_batch(tmp_path, state=BatchState.RUNNING) / "live_progress.json", LiveProgress)

    async def body() -> None:
        app = PanelsApp()
        async with app.run_test(size=(140, 20)) as pilot:
            assert _text(app.query_one("#title")) == "b1   [INTERRUPTED]"  # nothing known yet
            app.live = live
            await pilot.pause()
            # Running, but no engine holds it: interrupted, with no ETA and nothing running.
            assert "[INTERRUPTED]" in _text(app.query_one("#title"))
            assert _text(app.query_one("#count-complete")) == f"complete {live.counts.complete:,}"
            shown = _text(app.query_one("#progress-text"))
            assert "ETA" not in shown and "running" not in shown and "pending" in shown, shown
            app.engine = EngineStatus(Liveness.ALIVE, 0.5, LockInfo(pid=4242, host="here", started_at=live.updated_at))
            await pilot.pause()
            assert "[RUNNING pid 4242]" in _text(app.query_one("#title"))
            assert "ETA 10s" in _text(app.query_one("#progress-text"))
            assert app.query_one(InFlightPanel).query_one("#inflight").row_count == len(live.in_flight)  # type: ignore[attr-defined]
            assert list(app.query_one(Charts).rates) == [live.rate_per_s]
            app.live = live  # the same write read again: no second sample
            app.engine = EngineStatus(Liveness.STALE, 7260.0, None)
            await pilot.pause()
            assert list(app.query_one(Charts).rates) == [live.rate_per_s]
            assert "[NOT RESPONDING 2h01m pid None]" in _text(app.query_one("#title"))
            assert _text(app.query_one("#progress-text")).lstrip().startswith("no update 2h01m")  # a badge

    run(body)


def test_the_app_is_the_host_the_screens_expect(tmp_path: Path) -> None:
    app = BatchtuiApp(output_dir=tmp_path, watch_files=False, clock=lambda: FROZEN, handle_hangup=False)
    assert isinstance(app, Host)
    assert not isinstance(PanelsApp(), Host)


def test_the_title_says_starting_between_an_engine_taking_a_batch_and_its_first_write(tmp_path: Path) -> None:
    """A batch made (state ``created``, its source read) that an engine has just locked: the
    title says STARTING with the engine's pid, not CREATED; once the engine writes its state,
    that state; the engine gone before its first write: CREATED again (nothing ran)."""
    path = make_batch(tmp_path, state=BatchState.CREATED)
    manifest = read_model(path / "manifest.json", Manifest)
    assert manifest.state == BatchState.CREATED
    holder = LockInfo(pid=4242, host="here", started_at="2026-11-18T09:00:00.000+00:00")

    async def body() -> None:
        app = PanelsApp()
        async with app.run_test(size=(140, 20)) as pilot:
            title = app.query_one(TitleBar)
            title.manifest = manifest
            await pilot.pause()
            assert "[CREATED]" in _text(title)  # no engine: a batch made and not run
            app.engine = EngineStatus(Liveness.ALIVE, 0.1, holder)
            await pilot.pause()
            assert "[STARTING pid 4242]" in _text(title)
            app.live = read_model(
                make_batch(tmp_path / "b", state=BatchState.RUNNING) / "live_progress.json", LiveProgress
            )
            await pilot.pause()
            assert "[RUNNING pid " in _text(title) and "STARTING" not in _text(title)
            app.live = None
            app.engine = GONE
            await pilot.pause()
            assert "[CREATED]" in _text(title)

    run(body)
