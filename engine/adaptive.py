"""Adaptive timeouts (``--timeout 300%``): the limit follows the batch's own successes.

``--timeout 300%`` kills an item that runs longer than 3x the median duration of the batch's
successful items, once there are :data:`DEFAULT_AFTER` of them, never below a floor
(:data:`DEFAULT_FLOOR_S`), so one hung straggler cannot hold a long batch. The full form is
``P%[,min=DURATION][,max=DURATION][,after=N]``:

- ``min``: the floor, the shortest the limit ever is [1s]: a median of 50 ms must not make
  a 150 ms hiccup (a page fault, a busy host) a timeout.
- ``max``: an absolute limit as well; it applies from the first item (also before ``after``
  successes) and the adaptive limit never exceeds it. It is the config's ``timeout``.
- ``after``: successes needed before the adaptive limit applies [10]; until then only ``max``
  (if given) does.

A plain number (``--timeout 30``) stays an absolute limit in seconds, as always.

The median comes from a :class:`DurationHistogram` (fixed memory, O(1) per success), fed with
every success of this run and seeded, when the run begins, with the durations the store holds
of the batch's earlier successes (a resume does not forget them). The runner's watchdog asks
:meth:`TimeoutPolicy.limit` each turn and kills (as a ``timeout``) each running item past it,
for every kind of processor and executor, so items already running get the limit in force when
it changes. The absolute limit is also enforced where it always was (the shell processor's own
clock, the worker's for dask).

This module imports nothing of engine/config.py (which imports it for the setting's type).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final, Literal

from pydantic import ConfigDict, field_validator, model_serializer, model_validator

from .basemodel import Model
from .fmt import fmt_duration
from .models import TimeoutInForce
from .numbers import to_float, to_int

__all__ = [
    "DEFAULT_AFTER",
    "DEFAULT_FLOOR_S",
    "AdaptiveLimit",
    "DurationHistogram",
    "TimeoutPolicy",
    "parse_duration",
    "rule_text",
    "split_timeout",
    "timeout_text",
]

#: Successes needed before the adaptive limit applies (``after=N``).
DEFAULT_AFTER: Final = 10
#: The adaptive limit is never shorter than this (``min=DURATION``).
DEFAULT_FLOOR_S: Final = 1.0
#: The percentage is more than this: at the median or below, items that run normally are killed.
MIN_PERCENT: Final = 100.0
MAX_PERCENT: Final = 100_000.0  # 1000x the median
MAX_AFTER: Final = 1_000_000
MIN_FLOOR_S: Final = 0.01
#: config.MAX_SECONDS (30 days; engine/config.py imports this module, so it is repeated here).
MAX_FLOOR_S: Final = 30 * 86400.0
#: The median is computed again at most this often (it moves slowly; the loop turns fast).
RECOMPUTE_S: Final = 0.2

_UNITS: Final = (("ms", 0.001), ("min", 60.0), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
_PARTS_HELP: Final = "the parts after P% are min=DURATION, max=DURATION and after=N (e.g. 300%,min=5s)"


def _num(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _exact(value: float) -> str:
    """``value`` as short as it reads back exactly (the stored form)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _fmt_s(seconds: float) -> str:
    """A duration to read: ``150ms``, ``1.53s``, ``42s``, ``3m07s``."""
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms"
    return f"{seconds:.3g}s" if seconds < 59.5 else fmt_duration(seconds)


def parse_duration(text: str) -> float:
    """``5``, ``5s``, ``500ms``, ``2m`` (or ``2min``), ``1h`` in seconds; ValueError saying why."""
    raw = text.strip().lower()
    scale = 1.0
    for unit, factor in _UNITS:
        if raw.endswith(unit):
            raw, scale = raw[: -len(unit)].strip(), factor
            break
    try:
        value = to_float(raw)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a duration such as 5s, 500ms or 2m") from None
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()} is not a finite duration")
    return value * scale


class AdaptiveLimit(Model):
    """The adaptive part of ``--timeout P%``: kill past ``percent``% of the median success,
    once there are ``after`` successes, never below ``floor_s``. Stored in the manifest's
    config as its text, ``300%,min=1s,after=10``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    percent: float
    floor_s: float = DEFAULT_FLOOR_S
    after: int = DEFAULT_AFTER

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            absolute, rule = split_timeout(value)
            if rule is None or absolute is not None:
                raise ValueError("must be P%[,min=DURATION][,after=N], e.g. 300% (max= is the timeout setting)")
            return {"percent": rule.percent, "floor_s": rule.floor_s, "after": rule.after}
        return value

    @field_validator("percent")
    @classmethod
    def _percent(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"{value}% is not a finite number")
        if value <= MIN_PERCENT:
            raise ValueError(
                f"{_num(f'{value:f}')}% must be more than {MIN_PERCENT:g}% (at the median or below,"
                " items that run normally are killed)"
            )
        if value > MAX_PERCENT:
            raise ValueError(f"{value:g}% is more than the maximum, {MAX_PERCENT:g}%")
        return value

    @field_validator("floor_s")
    @classmethod
    def _floor(cls, value: float) -> float:
        if not math.isfinite(value) or not MIN_FLOOR_S <= value <= MAX_FLOOR_S:
            raise ValueError(f"min={value:g}s must be {_fmt_s(MIN_FLOOR_S)} to 30 days")
        return value

    @field_validator("after")
    @classmethod
    def _after(cls, value: int) -> int:
        if not 1 <= value <= MAX_AFTER:
            raise ValueError(f"after={value} must be 1 to {MAX_AFTER}")
        return value

    @model_serializer
    def _text(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        """The rule as ``--timeout`` takes it and the manifest stores it: ``300%,min=1s,after=10``."""
        return f"{_exact(self.percent)}%,min={_exact(self.floor_s)}s,after={self.after}"

    @property
    def factor(self) -> float:
        return self.percent / 100.0


def split_timeout(text: str) -> tuple[float | None, AdaptiveLimit | None]:
    """A ``--timeout`` value: ``(seconds, None)`` for a plain number (its bounds are the
    config's), ``(max or None, rule)`` for ``P%[,min=D][,max=D][,after=N]``. ValueError
    saying what is wrong."""
    text = text.strip()
    if "%" not in text:
        if "," in text or "=" in text:
            raise ValueError(f"{text!r}: parts such as min= follow a percentage, e.g. 300%,min=5s")
        try:
            return to_float(text), None
        except ValueError:
            raise ValueError(f"{text!r} is not a number of seconds or a percentage such as 300%") from None
    head, *parts = [p.strip() for p in text.split(",")]
    if not head.endswith("%") or head.count("%") != 1:
        raise ValueError(f"{text!r}: the percentage comes first, e.g. 300% or 300%,min=5s")
    number = head[:-1].strip()
    try:
        percent = to_float(number)
    except ValueError:
        raise ValueError(f"{head!r}: {number!r} is not a number (e.g. 300%)") from None
    if not math.isfinite(percent):
        raise ValueError(f"{head} is not a finite number")
    fields: dict[str, Any] = {"percent": percent}
    maximum: float | None = None
    seen: set[str] = set()
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not eq or name not in ("min", "max", "after") or name in seen:
            raise ValueError(f"{part!r} in {text!r}: {_PARTS_HELP}, each once")
        seen.add(name)
        if name == "after":
            try:
                fields["after"] = to_int(value.strip())
            except ValueError:
                raise ValueError(f"after={value.strip()}: a whole number of successes, e.g. after=10") from None
        elif name == "min":
            fields["floor_s"] = parse_duration(value)
        else:
            maximum = parse_duration(value)
    try:
        rule = AdaptiveLimit.model_validate(fields)
    except ValueError as exc:  # pydantic's ValidationError: its first message, plainly
        errors = getattr(exc, "errors", None)
        message = errors()[0]["msg"].removeprefix("Value error, ") if callable(errors) else str(exc)
        raise ValueError(message) from None
    if maximum is not None and maximum < rule.floor_s:
        raise ValueError(f"min={_fmt_s(rule.floor_s)} is more than max={_fmt_s(maximum)}")
    return maximum, rule


class DurationHistogram:
    """Durations in buckets 1% wide on a log scale from 1 µs to 30 days (2,900 counts, fixed
    memory whatever the number of items): adding is O(1), the median O(buckets) and within
    0.5% of the exact one, which is all a timeout needs."""

    LOW: Final = 1e-6
    RATIO: Final = 1.01

    def __init__(self) -> None:
        self._scale = 1.0 / math.log(self.RATIO)
        self.size = int(math.log(MAX_FLOOR_S / self.LOW) * self._scale) + 2
        self.counts = [0] * self.size
        self.n = 0

    def _bucket(self, seconds: float) -> int:
        if not seconds > self.LOW:  # also NaN
            return 0
        return min(self.size - 1, int(math.log(seconds / self.LOW) * self._scale) + 1)

    def add(self, seconds: float) -> None:
        self.counts[self._bucket(seconds)] += 1
        self.n += 1

    def add_many(self, durations: Iterable[float]) -> None:
        counts, bucket = self.counts, self._bucket
        n = 0
        for seconds in durations:
            counts[bucket(seconds)] += 1
            n += 1
        self.n += n

    def median(self) -> float | None:
        """The (lower) median; None when empty."""
        if not self.n:
            return None
        target = (self.n + 1) // 2
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= target:
                if index == 0:
                    return self.LOW
                return self.LOW * math.pow(self.RATIO, index - 0.5)  # the bucket's middle
        return MAX_FLOOR_S  # not reached: the counts sum to n


class TimeoutPolicy:
    """The timeout in force for one run: the absolute limit (``absolute``, ``--timeout N`` or
    the ``max=`` of an adaptive one), the adaptive one once the batch has enough successes,
    or none. :meth:`learn` is fed each success's duration (the recorder's hot path),
    :meth:`seed` the earlier runs' from the store; :meth:`limit` is asked each turn."""

    def __init__(self, absolute: float | None, rule: AdaptiveLimit | None) -> None:
        self.absolute = absolute
        self.rule = rule
        self.histogram = DurationHistogram()
        self._median: float | None = None
        self._limit: float | None = absolute
        self._counted = -1  # the successes the cached limit was computed from
        self._at = -math.inf

    @property
    def enabled(self) -> bool:
        """Any limit may apply in this run."""
        return self.absolute is not None or self.rule is not None

    def learn(self, seconds: float) -> None:
        """One success took ``seconds``."""
        self.histogram.add(seconds)

    def seed(self, durations: Iterable[float]) -> None:
        """The successes of the batch's earlier runs (their durations from the store)."""
        self.histogram.add_many(durations)

    @property
    def adaptive(self) -> bool:
        """The limit in force (as of the last :meth:`limit`) comes from the median."""
        rule = self.rule
        return rule is not None and self._median is not None and self._counted >= rule.after

    def limit(self, now: float) -> float | None:
        """The limit in force at ``now`` (the loop's clock), in seconds; None: none applies."""
        rule = self.rule
        if rule is None:
            return self.absolute
        n = self.histogram.n
        if n < rule.after:
            return self.absolute
        if n != self._counted and (now - self._at >= RECOMPUTE_S or self._counted < rule.after):
            self._counted, self._at = n, now
            self._median = median = self.histogram.median()
            assert median is not None
            limit = max(rule.floor_s, rule.factor * median)
            self._limit = limit if self.absolute is None else min(limit, self.absolute)
        return self._limit

    def for_call(self, limit: float, items: int) -> float:
        """The limit of one call of a chunked callable on ``items`` items, ``limit`` being the
        one in force. Each of its items is recorded with its share of the call's time (the call's
        time over its items), so the median learned is of shares: the adaptive limit is scaled by
        the items of the call, or every chunk of more items than the percentage (a chunk of 20 at
        300%) was killed once the median came into force. The absolute limit (``--timeout N``,
        ``max=``) is the call's own."""
        rule, median = self.rule, self._median
        if items <= 1 or rule is None or median is None or not self.adaptive:
            return limit
        scaled = max(rule.floor_s, rule.factor * median * items)
        return scaled if self.absolute is None else min(scaled, self.absolute)

    def view(self, now: float) -> TimeoutInForce | None:
        """The timeout in force as live_progress.json says it (None: no --timeout)."""
        if not self.enabled:
            return None
        limit = self.limit(now)
        rule = self.rule
        if rule is None:
            return TimeoutInForce(limit_s=limit, basis="absolute", max_s=self.absolute)
        successes = self.histogram.n
        common: dict[str, Any] = {
            "successes": successes,
            "percent": rule.percent,
            "floor_s": rule.floor_s,
            "after": rule.after,
            "max_s": self.absolute,
        }
        if not self.adaptive:
            return TimeoutInForce(limit_s=limit, basis="learning", **common)
        median = self._median
        assert median is not None and limit is not None
        basis: Literal["median", "floor", "max"] = "median"
        if limit == rule.floor_s and rule.factor * median < rule.floor_s:
            basis = "floor"
        elif self.absolute is not None and limit == self.absolute:
            basis = "max"
        return TimeoutInForce(limit_s=round(limit, 6), basis=basis, median_s=round(median, 6), **common)


def timeout_text(t: TimeoutInForce, *, short: bool = False) -> str:
    """The timeout in force in a few words: ``timeout 30s``, ``timeout 1.5s (300% of median
    500ms)``, ``timeout 1s (the floor; 300% of median 50ms)``, ``timeout 300% after 10 successes
    (3 so far)``; ``short`` (the dashboard's counts row): ``timeout 1.5s (300% of median)``,
    ``timeout 1s (floor)``, ``timeout 300% (3/10 ok)``."""
    limit = "" if t.limit_s is None else _fmt_s(t.limit_s)
    percent = f"{t.percent or 0:g}%"
    if t.basis == "absolute":
        return f"timeout {limit}"
    if t.basis == "learning":
        if short:
            return (
                f"timeout {limit} ({percent} from {t.after} ok)"
                if limit
                else f"timeout {percent} ({t.successes}/{t.after} ok)"
            )
        text = f"timeout {percent} after {t.after} successes ({t.successes} so far)"
        return text + (f", until then {limit}" if limit else "")
    if short:
        return f"timeout {limit} ({ {'floor': 'floor', 'max': 'max'}.get(t.basis, f'{percent} of median') })"
    median = _fmt_s(t.median_s or 0.0)
    reason = {"floor": "the floor; ", "max": "the max; "}.get(t.basis, "")
    return f"timeout {limit} ({reason}{percent} of median {median})"


def rule_text(timeout: float | None, rule: AdaptiveLimit | None) -> str | None:
    """The ``--timeout`` setting in words (None: none): ``30s``, or ``300% of the median
    success (after 10 successes), at least 1s, at most 60s``."""
    if rule is None:
        return None if timeout is None else _fmt_s(timeout)
    text = f"{rule.percent:g}% of the median success (after {rule.after} successes), at least {_fmt_s(rule.floor_s)}"
    return text + (f", at most {_fmt_s(timeout)}" if timeout is not None else "")
