"""The progress publisher: writes what every view reads, when it is due.

Every view (the TUI, ``show``, the headless lines, a watcher in another process) reads the
same two files, written from the runner's committed state only: ``live_progress.json`` (at most
every :data:`LIVE_INTERVAL_S`, at once on a state change or an acknowledged command) and
``manifest.json`` (on every state change, and at most every :data:`MANIFEST_INTERVAL_S` while
the counts move, atomically with the previous good copy kept). The runner supplies the
snapshot (:meth:`BatchRunner.live`); this object decides when it is taken and where it goes.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from .batchdir import BatchDir, iso_at
from .files import write_model
from .models import Counts, History, InFlight, LiveProgress, Manifest
from .outcomes import Flight

LIVE_INTERVAL_S: Final = 0.25
MANIFEST_INTERVAL_S: Final = 2.0
#: The biggest error groups live_progress.json carries (every view; `errors` lists them all).
LIVE_ERROR_GROUPS: Final = 10
IN_FLIGHT_SHOWN: Final = 64
#: live_progress.json's ``history``: one sample of the rate and the memory a second, the last
#: two minutes (a watcher attached late draws the charts from it).
HISTORY_INTERVAL_S: Final = 1.0
HISTORY_SAMPLES: Final = 120


def in_flight_view(flights: Iterable[Flight], started: Callable[[int], float | None] | None) -> list[InFlight]:
    """Items handed out, running ones first with when they really began (``started`` gives the
    executor's monotonic start of a running item), queued ones with when they were handed out."""
    wall, mono = time.time(), time.monotonic()
    out = []
    for i, f in enumerate(flights):
        if i >= IN_FLIGHT_SHOWN * 4:
            break
        since = started(f.item.seq) if started is not None else None
        began = f.started_at if since is None else iso_at(wall - (mono - since))
        out.append(
            InFlight(seq=f.item.seq, key=f.item.key, attempt=f.item.attempt, started_at=began, queued=since is None)
        )
    out.sort(key=lambda x: (x.queued, x.started_at))  # running first, the longest-running on top
    return out[:IN_FLIGHT_SHOWN]


class ProgressPublisher:
    """Decides when live_progress.json and manifest.json are written (see the module docstring)."""

    def __init__(
        self,
        batch: BatchDir,
        snapshot: Callable[[], LiveProgress],
        on_progress: Callable[[LiveProgress], None] | None = None,
    ) -> None:
        self.batch = batch
        self._snapshot = snapshot
        self.on_progress = on_progress
        self._live_stamp = 0.0
        self._manifest_stamp = 0.0
        self._manifest_counts: Counts | None = None
        self._rates: collections.deque[float] = collections.deque(maxlen=HISTORY_SAMPLES)
        self._rss: collections.deque[float] = collections.deque(maxlen=HISTORY_SAMPLES)
        self._history_stamp = float("-inf")

    def write_live(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._live_stamp < LIVE_INTERVAL_S:
            return
        self._live_stamp = now
        live = self._snapshot()
        live.history = self._history(live, now)
        write_model(self.batch.live_progress, live, durable=False)
        if self.on_progress is not None:
            self._tell(self.on_progress, live)

    def _tell(self, observer: Callable[[LiveProgress], None], live: LiveProgress) -> None:
        """``live`` to the observer (the headless lines, the app's engine thread). One that
        fails is logged and dropped: what it shows is not the run, and its error must not end
        the engine's loop before the report and the final counts are written (a callable
        that closed the process's stderr made the lines' write fail so, and the run that had
        done every item exited 1 without its report)."""
        try:
            observer(live)
        except Exception as exc:  # any observer's error, logged with its traceback
            import logging  # here: a verb that writes views only must not load it (test_startup)

            self.on_progress = None
            logging.getLogger("batchtui.engine").warning(
                "the progress observer failed and is dropped: %r", exc, exc_info=True
            )

    def _history(self, live: LiveProgress, now: float) -> History:
        """The rolling history with ``live`` sampled in when a sample is due."""
        if now - self._history_stamp >= HISTORY_INTERVAL_S:
            self._history_stamp = now
            self._rates.append(live.rate_per_s)
            self._rss.append(round(live.memory.rss_mb + live.memory.children_rss_mb, 1))
        return History(interval_s=HISTORY_INTERVAL_S, rate_per_s=list(self._rates), rss_mb=list(self._rss))

    def manifest_due(self, counts: Counts) -> bool:
        return time.monotonic() - self._manifest_stamp >= MANIFEST_INTERVAL_S and self._manifest_counts != counts

    def write_manifest(self, manifest: Manifest, durable: bool, **update: Any) -> Manifest:
        """``manifest`` with ``update`` applied, written atomically (previous copy kept)."""
        self._manifest_stamp = time.monotonic()
        counts = update.get("totals")
        self._manifest_counts = counts.model_copy() if isinstance(counts, Counts) else None
        manifest = manifest.model_copy(update=update)
        write_model(self.batch.manifest, manifest, durable=durable, backup=True)
        return manifest
