"""The built-in demo processor: realistic latency and a mix of transient and permanent errors.

Deterministic per (seq, attempt), so a demo run is reproducible and retries really recover.
"""

from __future__ import annotations

import random
import time

from .outputs import cost_of
from .shell.item import Item, ProcessOutput


class RateLimited(ConnectionError):
    """The (pretend) API answered 429."""


class DemoProcessor:
    """Pretends to call a paid API: 30-400 ms per item, about 8% transient and 5% permanent errors."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed

    def run(self, item: Item) -> ProcessOutput:
        rng = random.Random(item.seq * 7919 + item.attempt)
        latency = rng.lognormvariate(-2.3, 0.6) * self.speed
        time.sleep(min(latency, 2.0))
        roll = rng.random()
        if roll < 0.03:
            raise TimeoutError(f"upstream timed out after {latency:.2f}s fetching {item.key}")
        if roll < 0.06:
            raise RateLimited(f"429 Too Many Requests (retry-after {rng.randint(1, 30)}s)")
        if roll < 0.08:
            raise ConnectionError(f"connection reset by peer 10.0.{item.seq % 256}.{rng.randint(1, 254)}")
        permanent = random.Random(item.seq).random()  # permanent errors do not go away on retry
        if permanent < 0.03:
            raise ValueError(f"unparseable record #{item.seq}: unexpected token at column {rng.randint(1, 80)}")
        if permanent < 0.05:
            raise PermissionError(f"403 Forbidden for {item.key}")
        tokens = rng.randint(50, 2000)
        result = {"tokens": tokens, "words": tokens // 3, "cost": round(tokens * 2e-6, 6)}
        return ProcessOutput(result, cost_of(result))  # the cost as every processor's is read

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        return False

    def kill_all(self) -> int:
        return 0
