"""The built-in demo processor: realistic latency and a mix of transient and permanent errors.

Deterministic per (seq, attempt), so a demo run is reproducible and retries really recover.
On a terminal (the dashboard opens) the demo runs about a minute, long enough to explore it
(:func:`demo_items`); headless (CI, the README's main job) it stays short.
"""

from __future__ import annotations

import math
import random
import time
from typing import Final

from .outputs import cost_of
from .shell.item import Item, ProcessOutput

#: The pretend API's latency: lognormal (a long tail), at most MAX_LATENCY_S.
LATENCY_MU: Final = -2.3
LATENCY_SIGMA: Final = 0.6
MAX_LATENCY_S: Final = 2.0
#: Its mean, about 0.12 s.
MEAN_LATENCY_S: Final = math.exp(LATENCY_MU + LATENCY_SIGMA**2 / 2)
#: Items of a headless demo (not on a terminal: CI, scripts).
HEADLESS_ITEMS: Final = 200
#: How long a demo on a terminal runs, about.
TUI_SECONDS: Final = 60.0
#: The share of the time the retries and their backoff add (about 8% of attempts fail transiently).
_RETRY_SHARE: Final = 1.1


def demo_items(workers: int, *, on_terminal: bool, seconds: float = TUI_SECONDS) -> int:
    """How many items ``batchtui demo`` makes when ``--items`` is not given: on a terminal
    enough for about ``seconds`` on ``workers`` workers, else :data:`HEADLESS_ITEMS`."""
    if not on_terminal:
        return HEADLESS_ITEMS
    return max(HEADLESS_ITEMS, round(seconds * max(1, workers) / (MEAN_LATENCY_S * _RETRY_SHARE)))


def latency(seq: int, attempt: int) -> float:
    """The time the pretend API takes for this attempt of this item (the same every run)."""
    rng = random.Random(seq * 7919 + attempt)
    return min(rng.lognormvariate(LATENCY_MU, LATENCY_SIGMA), MAX_LATENCY_S)


class RateLimited(ConnectionError):
    """The (pretend) API answered 429 with a Retry-After: the retry waits at least that long,
    and with ``--limit-by '{host}' ...`` the host slows down (engine/limits.py)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DemoProcessor:
    """Pretends to call a paid API: 30-400 ms per item, about 8% transient and 5% permanent errors."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed

    def run(self, item: Item) -> ProcessOutput:
        rng = random.Random(item.seq * 7919 + item.attempt)
        rng.lognormvariate(LATENCY_MU, LATENCY_SIGMA)  # the draw latency() made: the rolls below follow it
        took = latency(item.seq, item.attempt) * self.speed
        time.sleep(took)
        roll = rng.random()
        if roll < 0.03:
            raise TimeoutError(f"upstream timed out after {took:.2f}s fetching {item.key}")
        if roll < 0.06:
            wait = rng.randint(1, 3)  # seconds: a short demo stays short
            raise RateLimited(f"429 Too Many Requests (Retry-After: {wait})", retry_after=wait)
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
