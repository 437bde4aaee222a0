"""The dashboard's charts: bars scaled from zero, and the engine's rolling history drawn by a
dashboard opened after it was recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtui.engine import publish
from batchtui.engine.batchdir import BatchDir
from batchtui.engine.files import read_model
from batchtui.engine.models import BatchState, LiveProgress, Memory
from batchtui.engine.publish import HISTORY_SAMPLES, ProgressPublisher
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.widgets.charts import Charts, ZeroSparkline, bar_levels, bar_rows

from .conftest import run
from .fixtures import FROZEN, make_batch


def test_bars_are_scaled_from_zero() -> None:
    # A steady 3.9-4.0/s is a steady row of full bars (min-max scaling drew 0, 16, 8).
    assert bar_levels([3.9, 4.0, 3.95], 10, 16) == [16, 16, 16]
    assert bar_levels([0.0, 2.0, 4.0], 10, 16) == [0, 8, 16]
    # Anything above zero shows; nothing but zero is empty; a negative is zero.
    assert bar_levels([0.001, 4.0, 0.0, -1.0], 10, 8) == [1, 8, 0, 0]
    assert bar_levels([0.0, 0.0], 10, 8) == [0, 0]
    # The last `width` values, scaled among themselves.
    assert bar_levels([100.0, 1.0, 2.0], 2, 8) == [4, 8]


def test_rows_put_the_newest_value_on_the_right() -> None:
    assert bar_rows([2.0, 4.0], 4, 1) == ["  ▄█"]
    assert bar_rows([1.0, 4.0], 3, 2) == ["  █", " ▄█"]
    assert bar_rows([4.0, 4.0], 3, 1, " __.--=*#") == [" ##"]


def test_a_dashboard_opened_late_draws_the_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    base = read_model(batch / "live_progress.json", LiveProgress)
    clock = [1000.0]
    rates = {1000.0: 5.0, 1001.0: 10.0, 1002.0: 20.0}

    def snapshot() -> LiveProgress:
        rate = rates.get(clock[0], 40.0)
        return base.model_copy(update={"rate_per_s": rate, "memory": Memory(rss_mb=100.0, children_rss_mb=20.0)})

    publisher = ProgressPublisher(BatchDir(batch), snapshot)
    with monkeypatch.context() as m:  # the publisher's clock only (asyncio's must go on)
        m.setattr(publish.time, "monotonic", lambda: clock[0])
        for _ in range(4):
            publisher.write_live()
            publisher.write_live(force=True)  # a second write within the second: no second sample
            clock[0] += 1.0
    history = read_model(batch / "live_progress.json", LiveProgress).history
    assert history.rate_per_s == [5.0, 10.0, 20.0, 40.0]
    assert history.rss_mb == [120.0] * 4

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            charts = app.screen.query_one(Charts)
            assert list(charts.rates) == [5.0, 10.0, 20.0, 40.0]
            spark = app.screen.query_one("#rate-spark", ZeroSparkline)
            assert spark.data == (5.0, 10.0, 20.0, 40.0)
            top, bottom = str(spark.render()).split("\n")
            assert bottom.endswith(" ▂▄██") and top.endswith("   █") and top.strip() == "█"

    run(body)

    # The history keeps the last HISTORY_SAMPLES, oldest first.
    with monkeypatch.context() as m:
        m.setattr(publish.time, "monotonic", lambda: clock[0])
        for _ in range(HISTORY_SAMPLES + 2):
            publisher.write_live()
            clock[0] += 1.0
    history = read_model(batch / "live_progress.json", LiveProgress).history
    assert len(history.rate_per_s) == HISTORY_SAMPLES and history.rate_per_s[0] == 40.0


def test_the_peak_is_never_below_the_rate_shown(tmp_path: Path) -> None:
    """A short run's final rate comes after the history's last sample: 'throughput 48915.7/s
    (peak 41356.3/s)' was drawn at the end of a 2 s run."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED)
    live = read_model(batch / "live_progress.json", LiveProgress)
    history = live.history.model_copy(update={"rate_per_s": [30.0, 41.5], "rss_mb": [100.0, 100.0]})
    (batch / "live_progress.json").write_bytes(
        live.model_copy(update={"rate_per_s": 48.9, "history": history}).model_dump_json().encode()
    )

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            label = str(app.screen.query_one("#rate-label").render())
            assert "throughput 48.9/s  (peak 48.9/s)" in label, label

    run(body)
