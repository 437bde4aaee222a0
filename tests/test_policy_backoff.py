"""policy.Backoff: the retry delay's formula, pinned (DESIGN section 5: exponential backoff with
jitter). tests/test_policy.py checks the gaps a real run leaves between attempts."""

from __future__ import annotations

import random
import warnings

import pytest

from batchtui.engine.policy import Backoff


class Edge(random.Random):
    """A random source that always draws the low (``high=False``) or high end of the range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_the_delay_doubles_per_attempt_plus_jitter_up_to_the_maximum() -> None:
    low = Backoff(0.3, 1.0, rng=Edge(high=False))
    high = Backoff(0.3, 1.0, rng=Edge(high=True))
    assert [low.delay(n) for n in range(1, 5)] == pytest.approx([0.3, 0.6, 1.0, 1.0])
    assert [high.delay(n) for n in range(1, 5)] == pytest.approx([0.6, 0.9, 1.0, 1.0])


def test_the_jitter_is_the_initial_delay_and_at_least_a_millisecond() -> None:
    assert Backoff(2.0, 100.0, rng=Edge(high=True)).delay(1) == pytest.approx(4.0)
    assert Backoff(0.0001, 1.0, rng=Edge(high=True)).delay(1) == pytest.approx(0.0011)


def test_no_backoff_means_no_wait() -> None:
    assert Backoff(0.0, 0.0).delay(1) == 0.0
    assert Backoff(0.0, 5.0, rng=Edge(high=True)).delay(7) == 0.0


def test_an_attempt_number_past_float_range_waits_the_maximum() -> None:
    assert Backoff(1.0, 30.0).delay(5000) == 30.0


def test_the_default_jitter_spreads_delays_within_their_bounds() -> None:
    backoff = Backoff(1.0, 60.0)
    for n in (1, 2, 3):
        delays = [backoff.delay(n) for _ in range(200)]
        base = 2.0 ** (n - 1)
        assert all(base <= d <= base + 1.0 for d in delays), (n, min(delays), max(delays))
        # 200 uniform draws from a 1 s range all within half of it: about 1 in 10^59.
        assert max(delays) - min(delays) > 0.5


def test_a_retry_delay_warns_nothing() -> None:
    """Computed without a library's deprecated parameters (tenacity's ``initial`` warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0.5 <= Backoff(0.5, 60.0).delay(1) <= 1.0
