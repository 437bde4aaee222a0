"""Failure and pacing policy: retry backoff, the rate limit, the failure-rate halt."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from .config import BatchConfig


class Backoff:
    """Exponential backoff with jitter: ``initial * 2**(n - 1) + uniform(0, jitter)`` seconds after
    the n-th failed attempt, at most ``maximum`` (the formula of tenacity's
    ``wait_exponential_jitter``, which is where the numbers come from).

    The formula is written here rather than taken from tenacity because the runner never wraps a
    call in a retry loop: a retry is an item put back in the durable queue with a time to run
    again, which may come after the engine restarted. tenacity's wait strategies only take a
    ``RetryCallState`` of a ``Retrying`` loop; faking one to call a one-line formula hid a
    type error, tied us to its constructor's signature (``initial`` is deprecated in newer
    releases) and imported asyncio at the first retry.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        # The jitter spreads the retries of items that failed together (one outage); at least
        # a millisecond so that even a tiny --backoff spreads them.
        self.jitter = max(initial, 0.001)
        self._rng = rng or random.Random()

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after the ``failed_attempt``-th attempt (1-based) failed."""
        if self.initial <= 0:
            return 0.0
        try:
            wait = self.initial * 2.0 ** (failed_attempt - 1) + self._rng.uniform(0, self.jitter)
        except OverflowError:
            wait = self.maximum
        return max(0.0, min(wait, self.maximum))


class TokenBucket:
    """``--rate N/s``: at most N dispatches a second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        # No burst by default: "at most N a second" holds over any window, from the start.
        self.capacity = burst if burst is not None else 1.0
        self.tokens = 1.0
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self, now: float | None = None) -> bool:
        with self._lock:
            self._refill(time.monotonic() if now is None else now)
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False

    def give_back(self) -> None:
        """Return a token taken for an item that turned out not to exist."""
        with self._lock:
            self.tokens = min(self.capacity, self.tokens + 1.0)

    def wait_time(self, now: float | None = None) -> float:
        with self._lock:
            self._refill(time.monotonic() if now is None else now)
            return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass
class HaltCheck:
    """Decides whether the batch must halt after a commit."""

    config: BatchConfig

    def failure_rate(self, complete: int, failed: int) -> str | None:
        limit = self.config.max_failure_rate
        done = complete + failed
        if limit is None or done < self.config.min_items or done == 0:
            return None
        rate = failed / done
        if rate > limit:
            return f"failure rate {rate:.0%} over --max-failure-rate {limit:.0%} after {done} items"
        return None

    def budget(self, spent: float, in_flight: int, per_item: float) -> str | None:
        """Whether one more dispatch could pass ``--max-cost``.

        ``per_item`` is the largest cost seen so far: the spend committed plus every item in
        flight at that cost plus the next one must stay within the cap.
        """
        cap = self.config.max_cost
        if cap is None:
            return None
        if spent >= cap:
            return f"cost {spent:.4g} reached --max-cost {cap:g}"
        if spent + (in_flight + 1) * per_item > cap:
            return f"cost {spent:.4g} + one more item (~{per_item:.4g}) would pass --max-cost {cap:g}"
        return None
