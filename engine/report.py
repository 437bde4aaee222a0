"""report.json: the final report of a run (the ``--on-finish`` hook that receives it is run by
engine/events.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .batchdir import BatchDir, resume_command
from .config import BatchConfig
from .models import BatchState, Counts, DurationStats, Manifest, Report
from .store import ItemStore
from .timing import BatchTiming


class PeakMemory(Protocol):
    """Where the report reads the run's peak memory and CPU (:class:`~.monitor.MemoryMonitor`)."""

    def run_peak_mb(self) -> float: ...

    def run_cpu_s(self) -> tuple[float, float]: ...


def duration_stats(durations: Sequence[float]) -> DurationStats:
    """Mean and percentiles of item durations (``durations`` sorted ascending)."""
    if not durations:
        return DurationStats()
    n = len(durations)

    def pct(p: float) -> float:
        return round(durations[min(n - 1, int(p * n))], 6)

    return DurationStats(
        count=n,
        mean=round(sum(durations) / n, 6),
        p50=pct(0.5),
        p90=pct(0.9),
        p99=pct(0.99),
        max=round(durations[-1], 6),
    )


def build_report(
    batch: BatchDir,
    manifest: Manifest,
    store: ItemStore,
    *,
    state: BatchState,
    halt_reason: str | None,
    started_at: str,
    ended_at: str,
    timing: BatchTiming,
    counts: Counts,
    durations: Sequence[float],
    memory: PeakMemory,
    cost_spent: float,
    config: BatchConfig,
) -> Report:
    """The report of a run that ended in ``state`` (errors read from the store).

    Its duration and rate are the batch's (``timing``: the sum of its runs, this one ended,
    see :mod:`.timing`), as every view shows them; ``run_duration_s`` is this run's.
    The peak memory is read from ``memory`` last, when everything else is built: finalizing a
    big run (its durations, its error groups) is often where the run's memory peaks."""
    done = counts.complete + counts.failed
    stats = duration_stats(durations)
    by_type = store.errors_by("error_type")
    by_category = store.errors_by("error_category")
    groups = store.error_groups(50)
    engine_cpu, children_cpu = memory.run_cpu_s()
    return Report(
        batch_id=batch.batch_id,
        name=manifest.name,
        state=state,
        halt_reason=halt_reason,
        started_at=started_at,
        ended_at=ended_at,
        duration_s=timing.active_s,
        run_duration_s=timing.run_s or 0.0,
        runs=timing.runs,
        totals=counts.model_copy(),
        duplicates_dropped=manifest.duplicates_dropped,
        unreadable=manifest.unreadable.model_copy(deep=True),
        success_rate=round(counts.complete / done, 6) if done else 1.0,
        items_per_s=timing.items_per_s,
        durations=stats,
        peak_memory_mb=memory.run_peak_mb(),
        engine_cpu_s=engine_cpu,
        children_cpu_s=children_cpu,
        cost_spent=round(cost_spent, 6),
        errors_by_type=by_type,
        errors_by_category=by_category,
        error_groups=groups,
        config=config.model_dump(mode="json"),
        resume_command=None if state == BatchState.FINISHED else resume_command(batch),
    )
