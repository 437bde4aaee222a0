"""How long a batch has run, and how fast: the sum of its runs, and its items over that time.

A batch runs in several runs (the first, each resume, the engine a hand-over starts), and may
sit stopped for days between them. So its duration is the sum of its runs (the manifest's
``history``: each run's ``at`` and ``ended_at``), never its last end minus its first start, and
its rate is its processed items (complete + failed: skipped items were never run) over that
active time, never the batch's items over the last run's time. Pauses count: an engine held
the batch then.

A run killed -9 wrote no end. It ended at its last sign of life: the ``updated_at`` of the
live_progress.json it wrote (its heartbeat, a few times a second). The next engine records that
end in the history when it takes the batch over (:func:`close_dead_runs`), before its own
progress overwrites the file; until then :func:`batch_timing` reads it from the file.

Every figure of time a view shows comes from here: :func:`~.summary.summarize` (``ls``,
``show``, their ``--json``, the browser, the end summary), report.json, and the engine's live
``elapsed_s`` (the dashboard and the headless progress line).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ConfigDict

from .basemodel import Model
from .batchdir import parse_iso
from .models import Counts, HistoryEntry, LiveProgress

#: The outcome of a run that died without writing its end (kill -9, a crash, a power cut).
KILLED = "killed"


class RunSpan(Model):
    """One run of a batch as the figures count it."""

    model_config = ConfigDict(frozen=True)

    action: str
    started_at: str
    #: When it ended; None while it runs.
    ended_at: str | None = None
    #: finished, stopped, halted; "killed" (it died without writing its end); None while it runs.
    outcome: str | None = None
    duration_s: float = 0.0


class BatchTiming(Model):
    """The batch's time and rate (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    #: The sum of the batch's runs, in seconds (its active time).
    active_s: float = 0.0
    #: The current run's time when an engine runs the batch, else the last run's.
    run_s: float | None = None
    #: Whether ``run_s`` is of a run still going on.
    running: bool = False
    runs: int = 0
    #: Processed items (complete + failed) over ``active_s``.
    items_per_s: float = 0.0
    spans: list[RunSpan] = []


def _seconds(start: str, end: str | None) -> float:
    if end is None:
        return 0.0
    try:
        return max(0.0, parse_iso(end) - parse_iso(start))
    except ValueError:
        return 0.0


def heartbeat_end(entry: HistoryEntry, live: LiveProgress | None) -> str | None:
    """The last sign of life of the run ``entry`` in ``live`` (None when ``live`` is another
    run's: another pid or host, or written before the run began)."""
    if live is None or live.pid != entry.pid or (live.host is not None and live.host != entry.host):
        return None
    return live.updated_at if _seconds(entry.at, live.updated_at) > 0 else None


def close_dead_runs(history: Sequence[HistoryEntry], live: LiveProgress | None) -> list[HistoryEntry]:
    """``history`` with every run that wrote no end closed as :data:`KILLED`, at its heartbeat
    in ``live`` (the file as the dead engine left it) or, with none, at its start (its time is
    unknown: counted as none rather than guessed). For an engine that has just taken the batch
    (no other engine runs it)."""
    closed = []
    for entry in history:
        if entry.ended_at is None:
            end = heartbeat_end(entry, live) or entry.at
            entry = entry.model_copy(update={"ended_at": end, "outcome": KILLED})
        closed.append(entry)
    return closed


def batch_timing(
    history: Sequence[HistoryEntry],
    counts: Counts,
    *,
    live: LiveProgress | None = None,
    running_pid: int | None = None,
    now: str | None = None,
) -> BatchTiming:
    """The time and rate of a batch whose runs are ``history`` and whose counts are ``counts``.

    ``running_pid``: the pid of the engine that holds the batch now, if any; its run (the last
    one, with no end) counts up to its last write in ``live`` (the moment ``counts`` are of), or
    ``now`` before it wrote any. Any other run with no end was killed: it counts up to its
    heartbeat in ``live`` when that is its own, else not at all."""
    spans = []
    running = False
    last = len(history) - 1
    for i, entry in enumerate(history):
        end, outcome = entry.ended_at, entry.outcome
        if end is None:
            beat = heartbeat_end(entry, live)
            if i == last and running_pid is not None and running_pid == entry.pid:
                running, end = True, beat or now
                outcome = None
            else:
                end, outcome = beat or entry.at, KILLED
        spans.append(
            RunSpan(
                action=entry.action,
                started_at=entry.at,
                ended_at=None if running and i == last else end,
                outcome=outcome,
                duration_s=round(_seconds(entry.at, end), 3),
            )
        )
    active = sum(s.duration_s for s in spans)
    processed = counts.complete + counts.failed
    return BatchTiming(
        active_s=round(active, 3),
        run_s=spans[-1].duration_s if spans else None,
        running=running,
        runs=len(spans),
        items_per_s=round(processed / active, 3) if active > 0 else 0.0,
        spans=spans,
    )


__all__ = ["KILLED", "BatchTiming", "RunSpan", "batch_timing", "close_dead_runs", "heartbeat_end"]
