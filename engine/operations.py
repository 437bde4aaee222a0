"""The control operations, applied on the runner's thread: pause, resume, stop, set_workers,
skip and retry (the channel that brings them, control.jsonl and other threads, is
engine/steering.py).

The contract they keep (DESIGN section 6): once a pause, stop or skip is decided, no item that
has not started yet starts (items handed out and not started go back to pending at once, no
attempt counted); a running item that is skipped is killed and ends 'skipped'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .batchdir import now_iso
from .models import BatchState, ControlCommand

if TYPE_CHECKING:
    from .runstate import RunState


class Operations:
    """Applies control commands to a run; each returns the answer its sender reads."""

    def __init__(self, run: RunState) -> None:
        self.run = run

    def apply(self, cmd: ControlCommand) -> str:
        """Apply one control command on the runner thread; returns what it did."""
        run = self.run
        assert run.store is not None and run.executor is not None
        if cmd.op == "pause":
            if run.state != BatchState.RUNNING:
                return f"not running ({run.state.value})"
            run.paused = True
            run.state = BatchState.PAUSED
            held = run.executor.cancel_all()
            run._return_unstarted(held)
            run._requeue_waiting_retries()
            run._write_manifest()
            return f"paused; {len(held)} queued items back to pending, {len(run._inflight)} running items finish"
        if cmd.op == "resume":
            if run.state != BatchState.PAUSED:
                return f"not paused ({run.state.value})"
            run.paused = False
            run.state = BatchState.RUNNING
            run._write_manifest()
            return "running"
        if cmd.op == "stop":
            run.request_stop(f"stop command {cmd.id}")
            grace = run.config.grace
            limit = "all the time they need" if grace == float("inf") else f"{grace:g}s"
            return f"stopping: nothing more starts; running items get {limit} to finish"
        if cmd.op == "set_workers":
            n = int(cmd.value)
            if not 1 <= n <= 4096:
                raise ValueError(f"workers must be 1..4096, not {n}")
            before = run.executor.workers
            run.executor.set_workers(n)
            return f"workers {before} -> {n}"
        if cmd.op == "skip":
            return self.skip(cmd.seqs or [])
        if cmd.op == "retry":
            run._commit()
            error_type = (cmd.filter or {}).get("error_type")
            changed = run.store.retry_failed(error_type=error_type, seqs=cmd.seqs)
            run.counts.failed -= len(changed)
            run.counts.pending += len(changed)
            if changed:
                run._reset_scan()
                run.outcomes.errors_dirty = True
            return f"{len(changed)} failed items back to pending"
        raise ValueError(f"unknown op {cmd.op}")

    def skip(self, seqs: list[int]) -> str:
        """Skip items: not started, they never start; running, they are killed (and end
        'skipped'); pending, failed or waiting out a backoff, they are skipped in the store."""
        run = self.run
        assert run.store is not None and run.executor is not None
        # Handed out and not started: taken back (they never start), then skipped as pending.
        run._return_unstarted(run.executor.cancel([s for s in seqs if s in run._inflight]))
        run._commit()
        running = [s for s in seqs if s in run._inflight]
        for seq in running:
            if seq not in run._kill_reasons:
                run._kill_reasons[seq] = "skip"
                if run._early_halt is not None:
                    run._early_halt.ignore(seq)
                run.executor.kill(seq, run._inflight[seq].item.attempt)
        rest = [s for s in seqs if s not in run._inflight]
        run.dispatcher.take_retries(set(rest))
        before = run.store.statuses(rest)
        changed = run.store.skip(rest, at=now_iso())
        for seq in changed:
            old = before.get(seq, "pending")
            setattr(run.counts, old, getattr(run.counts, old) - 1)
            run.counts.skipped += 1
        if changed:
            run._reset_scan()
        return f"{len(changed)} skipped, {len(running)} running killed"
