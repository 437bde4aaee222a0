"""The honest ETA (engine/eta.py): a range from the recent durations and the concurrency in use,
items in backoff and the --rate ceiling counted, "stalled" instead of a frozen figure, the rate
decaying when nothing finishes; the same text in the headless line, ``show`` and live_progress.

The estimator's tests drive it with a fake clock: a simulated run of N workers taking items in
order (each a duration drawn from a seeded distribution) feeds it as the runner does, is asked
for the ETA part-way, and then runs to its end, which gives the true time left.
"""

from __future__ import annotations

import heapq
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from batchtui.engine.eta import STALL_FIRST_S, STALL_FLOOR_S, Eta, EtaEstimator, eta_text
from batchtui.engine.models import BatchState, LiveProgress
from batchtui.tui.cli.progress import progress_line

from .conftest import cli_env, only_batch, read_live, wait_until


def simulate(
    durations: list[float],
    workers: int,
    check_after: int,
    *,
    rate_limit: float | None = None,
    waiting: tuple[float, ...] = (),
) -> tuple[Eta, float]:
    """Run ``durations`` on ``workers`` (fake clock), the estimator fed as the runner feeds it;
    the estimate once ``check_after`` items finished, and the true time left then."""
    est = EtaEstimator()
    est.finished(0, 0.0)
    running: list[tuple[float, float]] = []  # (end, start)
    todo = iter(durations)
    for _ in range(workers):
        d = next(todo)
        heapq.heappush(running, (d, 0.0))
    done, now = 0, 0.0
    eta: Eta | None = None
    while running:
        end, start = heapq.heappop(running)
        now = end
        done += 1
        est.durations([end - start])
        est.finished(done, now)
        nxt = next(todo, None)
        if nxt is not None:
            heapq.heappush(running, (now + nxt, now))
        if eta is None:
            # the live file is written at every commit: the concurrency in use is sampled then
            elapsed = [now - s for _, s in running]
            got = est.estimate(
                now,
                remaining=len(durations) - done,
                running=elapsed,
                waiting=waiting,
                rate_limit=rate_limit,
            )
            if done == check_after:
                eta, checked_at = got, now
    assert eta is not None
    return eta, now - checked_at


def test_a_steady_run_gives_a_tight_range_holding_the_truth() -> None:
    rng = random.Random(7)
    durations = [rng.uniform(0.9, 1.1) for _ in range(400)]
    eta, truth = simulate(durations, workers=4, check_after=100)
    assert eta.low_s is not None and eta.high_s is not None and eta.eta_s is not None
    assert eta.low_s <= truth <= eta.high_s, (eta, truth)
    assert (eta.high_s - eta.low_s) / truth < 0.06, (eta, truth)
    assert eta.stalled_s is None


def test_a_bimodal_run_gives_a_wider_range_holding_the_truth() -> None:
    rng = random.Random(2)
    durations = [0.2 if rng.random() < 0.7 else 5.0 for _ in range(400)]
    eta, truth = simulate(durations, workers=4, check_after=100)
    assert eta.low_s is not None and eta.high_s is not None
    assert eta.low_s <= truth <= eta.high_s, (eta, truth)
    steady, steady_truth = simulate([rng.uniform(0.9, 1.1) for _ in range(400)], workers=4, check_after=100)
    assert steady.low_s is not None and steady.high_s is not None
    wide, tight = (eta.high_s - eta.low_s) / truth, (steady.high_s - steady.low_s) / steady_truth
    assert wide > 0.3 and wide > 5 * tight, (wide, tight)


def test_the_concurrency_in_use_counts_not_the_items_alone() -> None:
    # The same durations on 2 workers take twice as long as on 4: the ETA follows.
    rng = random.Random(3)
    durations = [rng.uniform(0.9, 1.1) for _ in range(200)]
    four, truth4 = simulate(durations, workers=4, check_after=50)
    two, truth2 = simulate(durations, workers=2, check_after=50)
    assert four.eta_s is not None and two.eta_s is not None
    assert two.eta_s == pytest.approx(truth2, rel=0.05) and four.eta_s == pytest.approx(truth4, rel=0.05)
    assert two.eta_s > 1.8 * four.eta_s


def test_the_rate_ceiling_lifts_the_low_end() -> None:
    rng = random.Random(5)
    durations = [rng.uniform(0.9, 1.1) for _ in range(400)]
    free, _ = simulate(durations, workers=4, check_after=100)
    capped, _ = simulate(durations, workers=4, check_after=100, rate_limit=1.0)
    assert free.low_s is not None and capped.low_s is not None and capped.eta_s is not None
    # 300 left, 4 running: 296 not started, each needs a token of a 1/s bucket.
    assert free.low_s < 100
    assert capped.low_s >= 296 and capped.eta_s >= capped.low_s


def test_items_in_backoff_count() -> None:
    est = EtaEstimator()
    est.finished(0, 0.0)
    for i in range(1, 21):
        est.durations([1.0])
        est.finished(i, float(i))
    # 3 left: 2 running (half done) and 1 waiting out a 60 s backoff.
    kwargs: dict[str, object] = {"remaining": 3, "running": [0.5, 0.5]}
    without = est.estimate(20.0, **kwargs)  # type: ignore[arg-type]
    waiting = est.estimate(20.0, waiting=[60.0], **kwargs)  # type: ignore[arg-type]
    assert without.high_s is not None and without.high_s < 5
    assert waiting.low_s is not None and waiting.low_s >= 61.0
    assert waiting.stalled_s is None


def test_an_item_that_outran_every_duration_pushes_the_eta_out() -> None:
    # Items of 0.3 s; the last one has run 4 s, then 8 s: the ETA follows it (not "0s").
    est = EtaEstimator()
    est.finished(0, 0.0)
    for i in range(1, 11):
        est.durations([0.3])
        est.finished(i, 0.3 * i)
    four = est.estimate(7.0, remaining=1, running=[4.0])
    eight = est.estimate(8.0, remaining=1, running=[8.0])
    assert four.eta_s is not None and eight.eta_s is not None and four.low_s == 0.0
    assert four.eta_s >= 4.0 and eight.eta_s >= 8.0


def test_quick_items_paced_by_the_engine_take_the_throughput_seen() -> None:
    # No-op items of 5 us on 2 workers, ending at 38,000/s (the engine's pace, not theirs):
    # 84,000 left is about 2.2 s, not "ETA 0s" from their durations.
    est = EtaEstimator()
    est.finished(0, 0.0)
    for i in range(1, 41):
        est.durations([5e-6] * 950)
        est.finished(950 * i, 0.025 * i)
    eta = est.estimate(1.0, remaining=84_000, running=[1e-6, 1e-6])
    assert eta.rate_per_s == pytest.approx(38_000, rel=0.01)
    assert eta.eta_s == pytest.approx(84_000 / 38_000, rel=0.05)
    assert eta.low_s is not None and eta.high_s is not None
    assert eta.low_s <= 84_000 / 38_000 <= eta.high_s and eta.low_s > 1.5


def feed_steady(est: EtaEstimator, items: int = 40) -> float:
    """``items`` one-second items on 2 workers (two finish each second); the last finish time."""
    est.finished(0, 0.0)
    t = 0.0
    for i in range(1, items // 2 + 1):
        t = float(i)
        est.durations([1.0, 1.0])
        est.finished(2 * i, t)
        est.estimate(t, remaining=items - 2 * i + 2, running=[0.0, 0.0])
    return t


def test_nothing_finishing_for_long_is_stalled_and_the_rate_decays() -> None:
    est = EtaEstimator()
    last = feed_steady(est, items=80)
    steady = est.estimate(last, remaining=40, running=[0.0, 0.0])
    assert steady.rate_per_s == pytest.approx(2.0, rel=0.05) and steady.stalled_s is None
    # Both workers hang: a few seconds is not yet "much longer than usual" (3 x 1 s, floor 10 s).
    early = est.estimate(last + 8, remaining=40, running=[9.0, 9.0])
    assert early.stalled_s is None and early.eta_s is not None
    assert early.rate_per_s < steady.rate_per_s  # up to now, not up to the last completion
    hung = est.estimate(last + 12, remaining=40, running=[13.0, 13.0])
    assert hung.stalled_s == pytest.approx(12.0) and hung.eta_s is None and hung.low_s is None
    assert hung.rate_per_s < early.rate_per_s
    assert est.estimate(last + 31, remaining=40, running=[32.0, 32.0]).rate_per_s == 0.0
    # A finish ends the stall.
    est.durations([40.0])
    est.finished(81, last + 40)
    assert est.estimate(last + 40, remaining=39, running=[0.0, 41.0]).stalled_s is None


def test_the_usual_gap_sets_the_stall_threshold() -> None:
    # Items of 20 s: nothing finishing for 15 s is usual, not a stall; for 70 s it is.
    est = EtaEstimator()
    est.finished(0, 0.0)
    for i in range(1, 11):
        est.durations([20.0])
        est.finished(i, 20.0 * i)
    assert est.stall_after() == pytest.approx(60.0)
    assert est.estimate(215.0, remaining=5, running=[15.0]).stalled_s is None
    assert est.estimate(270.0, remaining=5, running=[70.0]).stalled_s == pytest.approx(70.0)


def test_a_pause_or_a_backoff_with_nothing_running_is_no_stall() -> None:
    est = EtaEstimator()
    last = feed_steady(est)
    assert est.estimate(last + 60, remaining=10, running=[61.0], paused=True).stalled_s is None
    assert est.estimate(last + 60, remaining=10, running=[], waiting=[30.0]).stalled_s is None


def test_before_anything_finished_only_a_long_wait_is_a_stall() -> None:
    # No usual duration yet: items of 2 minutes are not "stalled" at 10 s, a run where nothing
    # ended in STALL_FIRST_S is.
    est = EtaEstimator()
    est.finished(0, 100.0)
    assert est.estimate(105.0, remaining=4, running=[5.0, 5.0]) == Eta(0.0)  # unknown, not stalled
    slow = est.estimate(100.0 + 120, remaining=4, running=[120.0, 120.0])
    assert slow.stalled_s is None and STALL_FIRST_S > 120
    hung = est.estimate(100.0 + STALL_FIRST_S + 1, remaining=4, running=[301.0, 301.0])
    assert hung.stalled_s == pytest.approx(STALL_FIRST_S + 1)
    # Once one item ended, the floor is the usual one.
    est.durations([0.5])
    est.finished(1, 400.0)
    late = est.estimate(400.0 + STALL_FLOOR_S + 1, remaining=3, running=[11.0, 11.0])
    assert late.stalled_s == pytest.approx(STALL_FLOOR_S + 1)


def live(**update: object) -> LiveProgress:
    base = LiveProgress(batch_id="b", state=BatchState.RUNNING, updated_at="2026-01-01T00:00:00", total=10)
    return base.model_copy(update=update)


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"eta_s": 75.0, "eta_low_s": 74.0, "eta_high_s": 76.5}, "ETA 1m15s"),  # tight: one figure
        ({"eta_s": 300.0, "eta_low_s": 240.0, "eta_high_s": 360.0}, "ETA 4-6 min"),
        ({"eta_s": 50.0, "eta_low_s": 30.0, "eta_high_s": 75.0}, "ETA 30-75 s"),
        ({"eta_s": 4 * 3600.0, "eta_low_s": 9000.0, "eta_high_s": 18000.0}, "ETA 2.5-5 h"),
        ({"eta_s": None, "stalled_s": 90.0}, "stalled 1m30s"),
        ({"eta_s": None}, "ETA ?"),
        ({"eta_s": 3.0}, "ETA 3s"),  # a file of an older engine: no range
        # Paused: the figure written as it paused does not count down (show gave "ETA 48s" for 14 min).
        ({"state": BatchState.PAUSED, "eta_s": 48.0, "eta_low_s": 40.0, "eta_high_s": 60.0}, "ETA paused"),
        ({"state": BatchState.PAUSED, "eta_s": None, "stalled_s": 90.0}, "ETA paused"),
    ],
)
def test_eta_text(fields: dict[str, object], text: str) -> None:
    assert eta_text(live(**fields)) == text


def test_the_headless_line_says_the_range_and_stalled() -> None:
    line = progress_line(live(eta_s=300.0, eta_low_s=240.0, eta_high_s=360.0))
    assert " | ETA 4-6 min | RSS " in line
    assert " | stalled 1m30s | RSS " in progress_line(live(stalled_s=90.0))


def test_a_batch_whose_workers_all_hang_says_stalled(
    tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"row-{i}\n" for i in range(4)))
    log = tmp_path / "headless.log"
    # Two items end at once (a usual duration exists), then both workers hang.
    cmd = "case {} in row-0|row-1) ;; *) sleep 30 ;; esac"
    args = ["run", str(items), "--cmd", cmd, "--workers", "2", "--headless", "--progress-interval", "0.5"]
    # The engine's own process (its SIGTERM, its headless line), with the floor lowered as
    # test_events does in-process: the test waits a second for the stall, not ten.
    floor = 1.0
    engine_cli = [
        sys.executable,
        "-c",
        f"import runpy, batchtui.engine.eta as eta; eta.STALL_FLOOR_S = {floor}; "
        "runpy.run_module('batchtui.tui.cli', run_name='__main__')",
    ]
    with log.open("w") as err:
        engine = subprocess.Popen(
            [*engine_cli, *args, "--grace", "0"],
            env=cli_env(out_dir),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.iterdir()))
        batch = only_batch(out_dir)
        wait_until((batch / "live_progress.json").exists)

        def stalled() -> bool:
            data = read_live(batch)
            return data.get("stalled_s") is not None

        wait_until(stalled, timeout=floor + 10, what="stalled_s in live_progress.json")
        data = read_live(batch)
        assert data["eta_s"] is None and float(data["stalled_s"]) >= floor  # type: ignore[arg-type]
        assert data["counts"]["running"] == 2  # type: ignore[index]
        wait_until(lambda: "| stalled " in log.read_text(), timeout=5, what="stalled in the headless line")
        shown = invoke_cli(["show", batch.name])
        assert shown.returncode == 0 and "| stalled " in shown.stdout, shown.stdout
    finally:
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=20) == 130
    # The items the stop killed were cut short: their times are no item's duration to go by.
    final = read_live(batch)
    assert final["state"] == "stopped" and final["eta_s"] is None and final["eta_high_s"] is None, final
