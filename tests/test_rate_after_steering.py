"""The rate, the ETA and "stalled" across a pause and a retry, as the runner computes them
(the operator's pass: an unpause read "stalled 14s" at once and an ETA of minutes for 40 s of
work; a retry of failed items took the rate down, below zero, while items went on ending at
the same pace)."""

from __future__ import annotations

import time
from typing import Any

from batchtui.engine.control import new_command
from batchtui.engine.errors import ErrorInfo
from batchtui.engine.models import BatchState

from .test_runner_steps import make_runner  # noqa: F401  (the fixture)

FAIL = ErrorInfo("exit 1", "item", "no", "")


def _turns(runner: Any, ex: Any, t: float, turns: range, *, fail_odd: bool = False) -> list[float]:
    """One second a turn, two items end each turn; the rate after each turn."""
    rates = []
    for k in turns:
        for seq in ex.begin(2):
            ex.end(seq, FAIL if fail_odd and seq % 2 else None)
        runner.step(t + k)
        runner._commit()
        rates.append(runner.live().rate_per_s)
    return rates


def test_a_retry_of_failed_items_leaves_the_rate_as_it_was(make_runner: Any) -> None:  # noqa: F811
    runner, ex = make_runner(200, workers=2, max_attempts=1)
    t = time.monotonic()
    runner.step(t)
    before = _turns(runner, ex, t, range(1, 41), fail_odd=True)
    assert before[-1] == 2.0
    assert runner.live().counts.failed == 40
    runner.command(new_command("retry"))
    after = _turns(runner, ex, t, range(41, 61))
    assert runner.live().counts.failed == 0  # the 40 were put back (and some ran again)
    assert min(after) >= 1.9, after  # two items a second, as before


def test_a_pause_is_no_stall_and_the_figures_after_it_are_those_before(make_runner: Any) -> None:  # noqa: F811
    runner, ex = make_runner(200, workers=2)
    t = time.monotonic()
    runner.step(t)
    _turns(runner, ex, t, range(1, 41))
    steady = runner.live()
    assert steady.rate_per_s == 2.0 and steady.eta_s is not None
    running = ex.begin(2)
    runner.command(new_command("pause"))
    runner.step(t + 41)
    assert runner.state == BatchState.PAUSED
    for seq in running:  # the items running at the pause end during it
        ex.end(seq)
    for k in range(42, 342, 10):  # five minutes paused
        runner.step(t + k)
    runner.command(new_command("resume"))
    runner.step(t + 342)
    ex.begin(2)  # the run goes on: two items running, none ended yet
    runner.step(t + 343)
    live = runner.live()
    assert live.state == BatchState.RUNNING
    assert live.stalled_s is None
    assert live.rate_per_s >= 1.9, live.rate_per_s
    remaining = live.counts.pending + live.counts.processing
    assert live.eta_s is not None and live.eta_s <= 1.5 * remaining / 2.0, (live.eta_s, remaining)
