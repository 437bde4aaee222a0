"""The rate, an honest ETA (a range) and "stalled": one computation every view shows.

The engine feeds :class:`EtaEstimator` what it knows as it happens (the finished count at
each commit, the duration of each attempt that ended) and asks it, each time it writes
live_progress.json, for an :class:`Eta` from the moment's state: the items left, how long
each running item has run, the retries waiting out their backoff, the ``--rate`` ceiling.
Every view (the dashboard's status line, the headless line, ``show``) formats the same
figures with :func:`eta_text`.

How the figures are made, and why:

- **Rate**: finished items over the last :data:`RATE_WINDOW_S` seconds *up to now*, not up to
  the last completion, so when nothing finishes the rate decays to 0 instead of holding.
- **ETA**: the work left is the items not started times the mean of the recent attempt
  durations, plus what each running item is expected to need still (the mean over the recent
  durations longer than it has run so far, of what remained of them; as long again as it has
  run when it outran them all, so the ETA grows while it runs on). It is spread over the
  concurrency actually in use (the mean number of running items over the window, never more
  than the items left). The range is that figure plus or minus :data:`Z` standard deviations
  of the sum: ``sigma * sqrt(Q + Q**2 / n)`` for ``Q`` items from ``n`` observed durations
  (the spread of the items themselves, and the doubt about the mean). A steady run gives a
  tight range, a bimodal one a wide range. The last items end raggedly: the high end gets up to
  one p90 duration more. The ETA is never shorter than the longest wait of an item in backoff
  plus a duration, nor than the items not started over ``--rate`` (each needs a token). When
  items end at under half the pace their durations allow (quick items paced by the engine's
  own dispatch and commits, or a per-key limit), the throughput seen is the estimate.
- **Stalled**: when nothing has finished for longer than ``max(STALL_FLOOR_S, STALL_FACTOR x
  the recent p90 of the gap between completions, of the durations, and of 1/--rate)`` while
  items run, the batch is stalled: the ETA is unknown (None) and ``stalled_s`` says for how
  long nothing has finished. Before anything finished there is no "usual" yet, and a batch
  of 2-minute calls must not say "stalled" (nor page an operator through ``--on-event stall``)
  at every start: until the first item ends the threshold is :data:`STALL_FIRST_S`. A pause or
  items waiting out a backoff (nothing running) is not a stall.
- **A pause stops the estimator's clock**: the time paused is in none of the figures (the rate's
  window, the concurrency in use, how long nothing has finished). Counted, it made every unpause
  look like a stall ("stalled 14s" at once), then a rate a third of the real one and an ETA of
  minutes for a batch that had 40 s left.
- **The count** is of items that ended (complete or failed) in this run: a retry puts failed
  items back without taking anything from it (the batch's finished count fell by the retried
  items, and the rate with it, below zero).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from .fmt import fmt_duration
from .models import BatchState, LiveProgress

#: The window of the rate and of the concurrency in use, in seconds.
RATE_WINDOW_S: Final = 30.0
#: How many recent attempt durations and completion gaps the estimate uses.
KEPT: Final = 500
#: Standard deviations each side of the ETA (about a 95 % range for a normal sum).
Z: Final = 1.96
#: Nothing finished for this long (at least) while items run: stalled.
STALL_FLOOR_S: Final = 10.0
#: ... or for this many times the usual gap between completions (its recent p90).
STALL_FACTOR: Final = 3.0
#: Before any item of the run ended there is no usual duration: only this long is a stall.
STALL_FIRST_S: Final = 300.0
#: A range no wider than this share of its middle (or a second) is shown as one figure.
TIGHT_SHARE: Final = 0.1

__all__ = ["Eta", "EtaEstimator", "eta_text", "fmt_eta_range"]


class Eta(NamedTuple):
    """The rate and the ETA at one moment (seconds; None: unknown)."""

    rate_per_s: float = 0.0
    eta_s: float | None = None
    low_s: float | None = None
    high_s: float | None = None
    #: How long nothing has finished, when that is much longer than usual; else None.
    stalled_s: float | None = None


def _p90(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


class EtaEstimator:
    """The rate, ETA range and stall of a run, from what the runner feeds it (see the module
    docstring). Every method takes the time (``now``, monotonic seconds), so a test drives it
    with a fake clock."""

    def __init__(self, window_s: float = RATE_WINDOW_S, kept: int = KEPT) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._durations: collections.deque[float] = collections.deque(maxlen=kept)
        self._gaps: collections.deque[float] = collections.deque(maxlen=kept)
        self._running: collections.deque[tuple[float, int]] = collections.deque()
        self._last_finish: float | None = None  # the last time the finished count grew
        self._begun: float | None = None
        self._paused_at: float | None = None  # the real time the pause began, while paused
        self._paused_s = 0.0  # the time paused before, cut out of the clock

    def _clock(self, now: float) -> float:
        """``now`` on the estimator's clock, which stands still while the run is paused."""
        return (now if self._paused_at is None else self._paused_at) - self._paused_s

    def pause(self, paused: bool, now: float) -> None:
        """The run is paused (or no longer) at ``now``: the clock stops (or goes on)."""
        if paused and self._paused_at is None:
            self._paused_at = now
        elif not paused and self._paused_at is not None:
            self._paused_s += max(0.0, now - self._paused_at)
            self._paused_at = None

    # -- what the runner feeds in -----------------------------------------------------------

    def finished(self, count: int, now: float) -> None:
        """How many items have ended (complete or failed) at ``now``, a count that only grows;
        the first call is the run's start."""
        now = self._clock(now)
        samples = self._samples
        if self._begun is None:
            self._begun = now
        elif samples and count > samples[-1][1]:
            if self._last_finish is not None:
                self._gaps.append(now - self._last_finish)
            self._last_finish = now
        samples.append((now, count))
        while len(samples) > 1 and samples[1][0] <= now - self.window_s:
            samples.popleft()

    def durations(self, seconds: Iterable[float]) -> None:
        """The durations of attempts that ended (any outcome): the workers' monotonic clock, so
        finite and never negative; only the last ``kept`` stay (a deque: no check per item on
        the hot path of a million quick items)."""
        self._durations.extend(seconds)

    # -- what views show --------------------------------------------------------------------

    def rate(self, now: float) -> float:
        """Finished items a second over the window up to ``now`` (decays when nothing ends)."""
        now = self._clock(now)
        samples = self._samples
        if not samples:
            return 0.0
        t0, n0 = samples[0]
        for t, n in samples:  # the newest sample at or before the window's start
            if t > now - self.window_s:
                break
            t0, n0 = t, n
        span = now - t0
        return (samples[-1][1] - n0) / span if span > 0 else 0.0

    def concurrency(self, running: int, now: float) -> float:
        """The mean number of running items over the window, ``running`` sampled in now (not
        while paused: the items draining then say nothing of the concurrency of the run)."""
        samples = self._running
        if self._paused_at is None or not samples:
            samples.append((self._clock(now), running))
        now = self._clock(now)
        while samples and samples[0][0] < now - self.window_s:
            samples.popleft()
        return sum(n for _, n in samples) / len(samples) if samples else float(running)

    def stall_after(self, rate_limit: float | None = None) -> float:
        """How long nothing may finish before the run counts as stalled."""
        usual = max(_p90(self._gaps), _p90(self._durations), 1.0 / rate_limit if rate_limit else 0.0)
        floor = STALL_FLOOR_S if self._durations or self._last_finish is not None else STALL_FIRST_S
        return max(floor, STALL_FACTOR * usual)

    def estimate(
        self,
        now: float,
        *,
        remaining: int,
        running: Sequence[float] = (),
        busy: int | None = None,
        waiting: Sequence[float] = (),
        rate_limit: float | None = None,
        paused: bool = False,
    ) -> Eta:
        """The figures at ``now`` for ``remaining`` items left (pending and processing, those in
        flight and in backoff included); ``running``: how long each running item has run (those
        whose start is known); ``busy``: how many items run (default: ``len(running)``);
        ``waiting``: seconds until each item in backoff may run again; ``rate_limit``: --rate;
        ``paused``: the run is paused (its clock stops: :meth:`pause`)."""
        self.pause(paused, now)
        rate = self.rate(now)
        busy = len(running) if busy is None else max(busy, len(running))
        used = self.concurrency(busy, now)
        if remaining <= 0:
            return Eta(rate, 0.0, 0.0, 0.0)
        clock = self._clock(now)
        since = clock - (self._last_finish if self._last_finish is not None else (self._begun or clock))
        if busy and not paused and since > self.stall_after(rate_limit):
            return Eta(rate, stalled_s=since)
        ds = list(self._durations)
        if not ds:
            return Eta(rate)
        ds.sort()
        n, mean = len(ds), math.fsum(ds) / len(ds)
        # In floats: statistics.pstdev sums exact fractions, a millisecond for the 500 kept,
        # four times a second on the engine's thread.
        sd = math.sqrt(math.fsum((d - mean) ** 2 for d in ds) / n) if n > 1 else 0.0
        p90 = ds[min(n - 1, int(0.9 * n))]
        residuals, least = _residuals(running, ds)
        # A running item whose start is unknown is expected to need a mean duration.
        residuals += [mean] * (busy - len(running))
        queued = max(0, remaining - busy)
        work = queued * mean + sum(residuals)
        spread = Z * sd * math.sqrt(queued + queued * queued / n)
        workers = max(1.0, min(max(used, float(busy)), float(remaining)))
        low = (queued * mean - spread + sum(least)) / workers  # each running item at its least
        mid, high = work / workers, (work + spread) / workers
        if queued:
            high += p90 * (workers - 1) / workers  # the last items end raggedly
        floor = max(least, default=0.0)  # no running item ends before its shortest plausible rest
        if waiting:  # an item in backoff cannot end before its wait and a run
            wait = max(waiting)
            floor = max(floor, wait + ds[0])
            mid, high = max(mid, wait + mean), max(high, wait + p90)
        if rate_limit:  # every item not started needs a token
            floor = max(floor, queued / rate_limit)
        if queued > workers and rate > 0 and not waiting and rate * mean < 0.5 * workers:
            # Items end at under half the pace their durations allow: something else paces
            # them (quick items: the engine's dispatch and commits; a per-key limit), and the
            # throughput seen is the estimate (84,000 no-op items left at 38,000/s said
            # "ETA 0s" from durations of microseconds).
            by_rate = remaining / rate
            floor = max(floor, by_rate / 1.25)
            mid, high = max(mid, by_rate), max(high, by_rate * 1.25)
        low = max(0.0, low, floor)
        mid = max(mid, low)
        high = max(high, mid)
        return Eta(rate, round(mid, 1), round(low, 1), round(high, 1))


def _residuals(elapsed: Sequence[float], ordered: Sequence[float]) -> tuple[list[float], list[float]]:
    """What each item that has run ``elapsed`` seconds should still need, and at least: the
    mean and the least of what remained of the recent durations (``ordered``: sorted) longer
    than that. An item that
    has outrun every one of them is expected to run as long again (nothing seen tells how much
    longer it runs; its ETA grows as it runs on rather than promising it ends now), at least 0."""
    tail = list(itertools.accumulate(reversed(ordered)))[::-1]  # tail[i]: sum of ordered[i:]
    n = len(ordered)
    expected, least = [], []
    for e in elapsed:
        i = bisect.bisect_right(ordered, e)
        if i < n:
            expected.append((tail[i] - e * (n - i)) / (n - i))
            least.append(ordered[i] - e)
        else:
            expected.append(e)
            least.append(0.0)
    return expected, least


def fmt_eta_range(low: float, high: float) -> str:
    """``40-75 s``, ``4-6 min``, ``2.5-4 h``: the ends rounded outwards, in the unit of the
    high end."""
    if high < 100:
        return f"{math.floor(low)}-{math.ceil(high)} s"
    if high < 6000:
        return f"{math.floor(low / 60)}-{math.ceil(high / 60)} min"
    return f"{math.floor(low / 360) / 10:g}-{math.ceil(high / 360) / 10:g} h"


def eta_text(live: LiveProgress) -> str:
    """What the views show for the ETA: ``stalled 1m30s``, ``ETA 4-6 min``, one figure when
    the range is tight (``ETA 42s``), ``ETA ?`` when unknown, ``ETA paused`` while paused (the
    figure the engine wrote as it paused does not count down: ``show`` gave it for 14 minutes)."""
    if live.state == BatchState.PAUSED:
        return "ETA paused"
    if live.stalled_s is not None:
        return f"stalled {fmt_duration(live.stalled_s)}"
    low, high, mid = live.eta_low_s, live.eta_high_s, live.eta_s
    if mid is None or low is None or high is None or high - low <= max(1.0, TIGHT_SHARE * mid):
        return f"ETA {fmt_duration(mid)}"
    text = fmt_eta_range(low, high)
    ends = text.split(" ")[0].split("-")
    if ends[0] == ends[1]:  # rounded to the same figure: say it once
        return f"ETA {fmt_duration(mid)}"
    return f"ETA {text}"
