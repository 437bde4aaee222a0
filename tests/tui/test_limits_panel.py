"""The dashboard's ``--limit-by`` panel (tui/widgets/limits_panel.py, issue 20 point 2): hidden
without limits; with them, the busiest keys of live_progress.json's ``limits`` (rate now or the
wait of a retry-after, in flight, waiting, retry-afters), keys as plain text. The snapshot is the
dashboard at 80x24, where the panel sits beside the errors. Update on purpose with
`pytest tests/tui/test_limits_panel.py --snapshot-update` and look at the SVG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.reactive import var
from textual.widgets import DataTable, Static

from batchtui.engine.files import write_model
from batchtui.engine.models import BatchState, KeyLimit, LiveProgress, Manifest
from batchtui.tui.widgets.limits_panel import LimitsPanel

from .conftest import run
from .fixtures import hold_lock, make_batch
from .test_snapshots import app_for, out, settle

__all__ = ["out"]  # the fixture, used by name

KEYS = [
    KeyLimit(key="api.example.com", rate=1.25, in_flight=0, waiting=212, backoffs=3, done=40, cooldown_s=4.2),
    KeyLimit(key="eu.example.com", rate=5.0, in_flight=4, waiting=37, backoffs=0, done=96),
    KeyLimit(key="[red]cdn\x1b[2J.example.net", rate=0.05, in_flight=1, waiting=2, backoffs=1, done=7),
]


class LimitsApp(App[None]):
    live: var[LiveProgress | None] = var(None, always_update=True)
    manifest: var[Manifest | None] = var(None, always_update=True)

    def compose(self) -> ComposeResult:
        yield LimitsPanel(id="limits-box").data_bind(LimitsApp.live, LimitsApp.manifest)


def _live(batch: Path) -> LiveProgress:
    return LiveProgress.model_validate_json((batch / "live_progress.json").read_bytes())


def test_the_panel_shows_each_key_plainly_and_only_with_limits(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = _live(batch)

    async def body() -> None:
        app = LimitsApp()
        async with app.run_test(size=(100, 12)) as pilot:
            panel = app.query_one(LimitsPanel)
            app.live = live  # no --limit-by: no panel
            await pilot.pause()
            assert not panel.display
            app.live = live.model_copy(update={"limits": KEYS})
            await pilot.pause()
            assert panel.display
            table: DataTable[Any] = panel.query_one("#limits", DataTable)
            rows = [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]
            assert rows[0][1:] == ["held 4s", "0", "212", "3"]  # a retry-after holds the key: its wait
            assert rows[1][:2] == ["eu.example.com", "5/s"]
            assert rows[2][0] == "[red]cdn\\x1b[2J.example.net"  # markup and escapes shown as text
            assert rows[2][1] == "3/m"
            # Fewer keys: the table follows; none left: the panel stays (the batch has limits).
            app.live = live.model_copy(update={"limits": KEYS[1:2]})
            await pilot.pause()
            assert table.row_count == 1
            title = panel.query_one("#limits-title", Static)
            assert str(title.content) == "Limits"

    run(body)


def test_dashboard_with_limits_80x24(out: Path, snap_compare: Any) -> None:
    batch = make_batch(out, state=BatchState.RUNNING)
    manifest = Manifest.model_validate_json((batch / "manifest.json").read_bytes())
    config = {**manifest.config, "limit_by": "{host} 5/s,4"}
    write_model(batch / "manifest.json", manifest.model_copy(update={"config": config}))
    write_model(batch / "live_progress.json", _live(batch).model_copy(update={"limits": KEYS}))
    with hold_lock(batch):
        assert snap_compare(app_for(out, batch), terminal_size=(80, 24), run_before=settle)
