"""The control operations, applied on the runner's thread: pause, resume, stop, set_workers,
skip, retry, prioritize and index (the channel that brings them, control.jsonl and other threads, is
engine/steering.py).

The contract they keep (DESIGN section 6): once a pause, stop or skip is decided, no item that
has not started yet starts (items handed out and not started go back to pending at once, no
attempt counted); a running item that is skipped is killed and ends 'skipped'.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from . import fdlimit
from .attempts import Outcome
from .batchdir import now_iso
from .fmt import count
from .models import BatchState, ControlCommand
from .store.schema import SLOWEST_INDEX

if TYPE_CHECKING:
    from .runstate import RunState
    from .store.queries import Selection


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
            # Running: begun in a worker and not ended, as the executor says. Not the items handed
            # out and not yet taken in (_inflight): those include items that have ended, their
            # outcomes waiting for this thread (after a SIGSTOP: "4 running" with 2 workers).
            running = run.executor.counts()[1]
            run._return_unstarted(held)
            run._requeue_waiting_retries()
            run._write_manifest()
            finish = "finishes" if running == 1 else "finish"
            back = count(len(held), "queued item")
            return f"paused; {back} back to pending, {count(running, 'item')} already running {finish}"
        if cmd.op == "resume":
            if run.state != BatchState.PAUSED:
                return f"not paused ({run.state.value})"
            run.paused = False
            run.state = BatchState.RUNNING
            run._write_manifest()
            return "running"
        if cmd.op == "stop":
            run.request_stop(f"stop command {cmd.id}")
            if run.state != BatchState.STOPPING:
                # The work handed out and not started is taken back now, before the answer can
                # reach live_progress.json: the commit of how far control.jsonl is read, waited
                # for right after this command, writes the live files when a write is due, and
                # the answer said "nothing more starts" while items still began (on dask, where
                # the workers' gates are a round trip away, one more item a worker: seen in CI).
                run._enter_stopping()
            grace = run.config.grace
            limit = "all the time they need" if grace == float("inf") else f"{grace:g}s"
            return f"stopping: nothing more starts; running items get {limit} to finish"
        if cmd.op == "set_workers":
            n = int(cmd.value)
            if not 1 <= n <= 4096:
                raise ValueError(f"workers must be 1..4096, not {n}")
            before = run.executor.workers
            short = fdlimit.ensure(n, run.descriptor_kind())  # their open files first
            if short:
                run._warn(short)
            run.executor.set_workers(n)
            short = getattr(run.executor, "shortfall", None)
            if short:
                run._warn(short)
                return f"workers {before} -> {run.executor.workers} ({short})"
            return f"workers {before} -> {n}"
        if cmd.op == "index":
            return self.index(cmd.value)
        if cmd.op in ("skip", "retry", "prioritize"):
            from .client import command_selection  # the same reading of a command as offline

            sel = command_selection(cmd)  # a bad selection: ValueError, answered "failed: ..."
            assert sel is not None
            if cmd.op == "skip":
                return self.skip_selection(sel)
            if cmd.op == "retry":
                return self.retry(sel)
            return self.prioritize(sel)
        raise ValueError(f"unknown op {cmd.op}")

    def index(self, order: object) -> str:
        """A view shows the items in ``order`` ("duration": slowest first): build the index it
        reads, unless the store has it. The build (a scan of the table under the write lock,
        1-2 s for 1M items) goes to the committer with the next group commit, so this thread
        goes on handing out work meanwhile (engine/committer.py); views read the index once it
        is committed, and each completion after it writes an entry of it too."""
        if order != "duration":
            raise ValueError(f"no index for the order {order!r} (only duration)")
        run = self.run
        assert run.store is not None
        if run.indexing:
            return "the items are being indexed slowest first already"
        if run.store.has_slowest_index():
            return "the items are indexed slowest first already"
        run.indexing = True
        run.staging.build(SLOWEST_INDEX)
        return "indexing the items slowest first; the run goes on meanwhile"

    def _moved(self, changed: dict[str, int], to: str) -> None:
        """The run's counts after items of the old statuses in ``changed`` went to ``to``."""
        counts = self.run.counts
        for old, n in changed.items():
            setattr(counts, old, getattr(counts, old) - n)
            setattr(counts, to, getattr(counts, to) + n)

    def retry(self, sel: Selection) -> str:
        """The failed (and skipped) items of ``sel`` back to pending: the scan reads them again."""
        run = self.run
        assert run.store is not None
        run._commit()
        held = self._held(sel)
        changed = run.store.retry_selected(sel, exclude=held)
        self._moved(changed, "pending")
        if changed:
            run._reset_scan()
        if changed.get("failed"):
            run.error_tally.reread(run.store)
        from .client import describe_retry  # the sender's module: imported by the commands only

        return describe_retry(changed, run.store.unretriable_types(sel)) + _held_note(held)

    def _held(self, sel: Selection) -> set[int]:
        """The items of ``sel`` whose calls were given up and still run (a Python call that
        timed out, which its worker cannot stop, ThreadExecutor.abandon): a retry now would run
        them twice at once, so they stay failed until the call returns."""
        run = self.run
        held: set[int] = getattr(run.executor, "held", set)()
        return set(run.store.selected_among(sel, sorted(held))) if held and run.store is not None else set()

    def prioritize(self, sel: Selection) -> str:
        """The pending items of ``sel`` (and its failed ones, retried) go out before any other
        pending item, in front of those prioritized before."""
        run = self.run
        assert run.store is not None
        run._commit()  # the store must show what is still pending
        held = self._held(sel)
        retried, moved = run.store.prioritize(sel, exclude=held)
        self._moved(retried, "pending")
        if retried.get("failed"):
            run.error_tally.reread(run.store)
        if moved or retried:
            # Work handed out and not started would go first: taken back (pending again, no
            # attempt counted), so the items put first are the next to start.
            assert run.executor is not None
            run._return_unstarted(run.executor.cancel_all())
            run.dispatcher.prioritized()
        from .client import describe_prioritize

        return describe_prioritize(retried, moved, run.store.unretriable_types(sel)) + _held_note(held)

    def skip_selection(self, sel: Selection) -> str:
        """Skip every not yet complete item of ``sel``: those in flight or waiting out a backoff
        one by one (:meth:`skip`), the rest (300k pending ones, say) in one statement."""
        run = self.run
        assert run.store is not None and run.executor is not None
        run._commit()
        waiting = [r.seq for r in run.dispatcher.retries]
        # The items in flight are matched as what they are, not as their rows say (a row's
        # 'processing' mark may not be committed yet): those begun as 'processing', those handed
        # out and not begun as 'pending'. By their rows, `skip --status pending` left queued
        # items to start after the skip was answered, and killed a running one.
        begun = {seq for seq in run._inflight if run.executor.started(seq) is not None}
        one_by_one = sorted(
            run.store.selected_among(sel, waiting)
            | self._among_as(sel, begun, "processing")
            | self._among_as(sel, set(run._inflight) - begun, "pending")
        )
        skipped, killed = self._skip(one_by_one) if one_by_one else (0, 0)
        # Not those skipped one by one: a running one given up (a Python call in a thread) has
        # left the in-flight set already, its 'skipped' staged, not yet in the store.
        left = {*run._inflight, *one_by_one}
        changed = run.store.skip_selected(sel, statuses=("pending", "failed"), exclude=left, at=now_iso())
        self._moved(changed, "skipped")
        if changed:
            run._reset_scan()
        if changed.get("failed"):
            run.error_tally.reread(run.store)
        self._forget_skipped_suspects()
        return _skipped_text(skipped + sum(changed.values()), killed)

    def _among_as(self, sel: Selection, seqs: set[int], status: str) -> set[int]:
        """Which of ``seqs`` ``sel`` holds, each read as having ``status`` (the rest of each
        row as it is)."""
        run = self.run
        if not seqs:
            return set()
        assert run.store is not None
        from .store.selection import Selection as Of

        views = tuple(replace(v, status=None) for v in sel.views if v.status in (None, status))
        return run.store.selected_among(Of(views, sel.ranges, sel.excluded if views else ()), seqs)

    def _forget_skipped_suspects(self) -> None:
        """Items the last engine died running that a skip took: no outcome will come for them,
        and the run must not go on one item at a time for their sake (TakeOver._charge_dead)."""
        run = self.run
        if run.suspects and run.store is not None:
            statuses = run.store.statuses(run.suspects)
            run.suspects.difference_update(s for s in list(run.suspects) if statuses.get(s) == "skipped")

    def skip(self, seqs: list[int]) -> str:
        """Skip items by seq (see :meth:`_skip`)."""
        skipped, killed = self._skip(seqs)
        return _skipped_text(skipped, killed)

    def _skip(self, seqs: list[int]) -> tuple[int, int]:
        """Skip items: not started, they never start; running, they are killed (and end
        'skipped'); pending, failed or waiting out a backoff, they are skipped in the store."""
        run = self.run
        assert run.store is not None and run.executor is not None
        # Handed out and not started: taken back (they never start), then skipped as pending.
        run._return_unstarted(run.executor.cancel([s for s in seqs if s in run._inflight]))
        run._commit()
        running = [s for s in seqs if s in run._inflight]
        for seq in running:
            flight = run._inflight[seq]
            if not flight.skipped:
                # Skipped in the store now, committed before the control offset that says the
                # command was read: an engine killed before the item's outcome came loses no
                # skip (the item ran again on resume, though the skip was answered). Marked, so
                # that no 'processing' mark comes after it.
                flight.skipped = flight.marked = True
                run.staging.add("skip", ("skipped while running", now_iso(), seq))
                run.staging.delta["processing"] -= 1
                run.staging.delta["skipped"] += 1
            if run._kill_reasons.get(seq) != "skip":  # a skip outranks a timeout or a stop under way
                run._kill_reasons[seq] = "skip"
                run.outcomes.timeout_limits.pop(seq, None)
                if run._early_halt is not None:
                    run._early_halt.ignore(seq)
                began = run.executor.started(seq)
                # A call that runs items not skipped too (a chunked callable's) is waited for.
                mates = getattr(run.executor, "running_with", lambda s: [s])(seq) or [seq]
                skipped = [m for m in mates if m in seqs or (m in run._inflight and run._inflight[m].skipped)]
                held: set[int] = getattr(run.executor, "held", set)()
                if not run.executor.kill(seq, flight.item.attempt) and (
                    seq in held or (len(skipped) == len(mates) and run._give_up_worker(seq, "was skipped", halts=False))
                ):
                    # A Python call in a thread: it runs on, given up; its items end skipped now
                    # (those of this skip still to come in this loop, as they come).
                    ran = 0.0 if began is None else max(0.0, time.monotonic() - began)
                    earlier = [m for m in mates if m != seq and m in run._inflight and run._inflight[m].skipped]
                    for mate in [seq, *earlier]:
                        item = run._inflight[mate].item
                        run._on_outcomes([Outcome(mate, item.attempt, time.time() - ran, ran)])
        in_flight = set(running)  # those not in flight when the skip came are skipped in the store
        rest = [s for s in seqs if s not in in_flight]
        run.dispatcher.take_retries(set(rest))
        before = run.store.statuses(rest)
        changed = run.store.skip(rest, at=now_iso())
        for seq in changed:
            old = before.get(seq, "pending")
            setattr(run.counts, old, getattr(run.counts, old) - 1)
            run.counts.skipped += 1
        if changed:
            run._reset_scan()
        if any(before.get(seq) == "failed" for seq in changed):
            run.error_tally.reread(run.store)
        self._forget_skipped_suspects()
        return len(changed), len(running)


def _held_note(held: set[int]) -> str:
    """What a retry left failed because the item's call still runs (see Operations._held)."""
    if not held:
        return ""
    shown = ", ".join(f"#{s}" for s in sorted(held)[:5]) + (" ..." if len(held) > 5 else "")
    return f"; {shown} not retried: the call that timed out still runs, and cannot be stopped (retry once it returns)"


def _skipped_text(skipped: int, running: int) -> str:
    """A skip's answer: ``40 skipped, and 1 running item ends skipped (killed where it can be)``
    (the running ones are not among the 40 yet); with none running, ``40 skipped``."""
    if not running:
        return f"{skipped} skipped"
    items = "1 running item ends" if running == 1 else f"{running} running items end"
    return f"{skipped} skipped, and {items} skipped (killed where it can be)"
