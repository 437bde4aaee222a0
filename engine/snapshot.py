"""The run's live snapshot: what ``live_progress.json`` (and every view) is told of a run.

Part of :class:`~batchtui.engine.runstate.RunState` (its :meth:`~.runstate.RunState.live`),
kept apart: it only reads the state.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .batchdir import HOST, now_iso
from .eta import Eta
from .fmt import cut_percent
from .models import BatchState, Cost, LiveCounts, LiveProgress, RecentError
from .publish import LIVE_ERROR_GROUPS, in_flight_view

if TYPE_CHECKING:
    from .runstate import RunState


def snapshot(run: RunState) -> LiveProgress:
    """What ``live_progress.json`` says of the run now: counts, rate and ETA, the items in
    flight, memory, cost, errors, the control answers, the limits in force."""
    c = run.counts
    mem = run.memory.sample()
    queued, running = run.executor.counts() if run.executor is not None else (0, 0)
    started = run.executor.started if run.executor is not None else None
    in_flight = in_flight_view(list(run._inflight.values()), started) if run._inflight else []
    # A stopped or halted batch has no ETA (its items wait for a resume, not for time).
    eta = (
        Eta(0.0)
        if run.state in (BatchState.STOPPED, BatchState.HALTED)
        else _eta(run, c.pending + c.processing, running)
    )
    for note in run.events.observe(eta.stalled_s, running):  # a hook that failed: logged already
        run.warnings.append(f"{now_iso()} {note}")
    run_s = time.monotonic() - run._t0
    elapsed_s, run_elapsed_s = round(run.before_s + run_s, 2), round(run_s, 2)
    rate_per_s = round(eta.rate_per_s, 3)
    if run.final_timing is not None:
        # The run has ended: its figures are the history's, as report.json and `show` give
        # them. The rate of the last moments (a tail of timeouts read "0.3/s" on a batch
        # that ran 1.3 items/s) is no longer a rate of anything.
        timing = run.final_timing
        elapsed_s, run_elapsed_s, rate_per_s = timing.active_s, timing.run_s or 0.0, timing.items_per_s
    return LiveProgress(
        batch_id=run.batch.batch_id,
        state=run.state,
        updated_at=now_iso(),
        commit_seq=run.commit_seq,
        total=c.total,
        counts=LiveCounts(**c.model_dump(), running=running, queued=queued, retrying=len(run.dispatcher.retries)),
        percent=cut_percent(c.percent, 2),
        rate_per_s=rate_per_s,
        eta_s=eta.eta_s,
        eta_low_s=eta.low_s,
        eta_high_s=eta.high_s,
        stalled_s=None if eta.stalled_s is None else round(eta.stalled_s, 1),
        elapsed_s=elapsed_s,
        run_elapsed_s=run_elapsed_s,
        in_flight=in_flight,
        limits=run.dispatcher.limits_view(run._inflight, run._now),
        memory=mem,
        cost=Cost(spent=round(run.outcomes.cost_spent, 6), budget=run.config.max_cost),
        errors_by_type=run.error_tally.by_type(),
        error_groups=run.error_tally.top(LIVE_ERROR_GROUPS),
        error_groups_total=run.error_tally.groups,
        recent_errors=[
            RecentError.model_validate(dict(zip(RecentError.model_fields, r, strict=True))) for r in run.outcomes.recent
        ],
        paused=run.paused,
        workers=run.executor.workers if run.executor else run.config.workers,
        control_ack=run.control.last_ack,
        acked=list(run.control.acked),
        control_results=dict(run.control.results),
        halt_reason=run.halt_reason,
        pid=os.getpid(),
        host=HOST,
        warnings=list(run.warnings),
        cluster=getattr(run.executor, "cluster_info", lambda: None)(),  # dask: workers, memory
        timeout=run.timeouts.view(run._now),
        memory_hold=run.memory_hold,
        start_hold=run.start_hold,
    )


def _eta(run: RunState, remaining: int, running: int) -> Eta:
    """The rate, ETA range and stall now (engine/eta.py), from the items running (how long
    each has run), those waiting out a backoff and the --rate ceiling."""
    now, mono = run._clock(), time.monotonic()
    elapsed = []
    if run.executor is not None:
        started = run.executor.started
        for seq in run._inflight:
            since = started(seq)  # the executor's monotonic clock
            if since is not None:
                elapsed.append(max(0.0, mono - since))
    eta = run.eta.estimate(
        now,
        remaining=remaining,
        running=elapsed,
        busy=running,
        waiting=[max(0.0, r.ready - now) for r in run.dispatcher.retries],
        rate_limit=run.config.rate,
        paused=run.paused,
    )
    if getattr(getattr(run.executor, "orphans", None), "holding", False) and eta.stalled_s is None:
        # Items wait for calls an earlier run left on the dask cluster (.dask_orphans): they
        # end when those calls return, which no figure here tells ("ETA 1s" for 49 s).
        return Eta(eta.rate_per_s)
    return eta
