"""How a run ends: stopping, a full disk, the final commit, files and report.

A stop or a halt first takes back every item handed out and not started (they go back to
pending at once, no attempt counted) and the retries waiting out a backoff; running items get
the grace period, then are killed; Python calls on threads, which cannot be killed, are
abandoned (back to pending, the batch stays locked until they return or this process exits:
engine/takeover.py). A failed write
(a full disk) halts at once and trusts nothing uncommitted. The end writes each final file on
its own, so a full disk still gets whatever fits.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable

from .batchdir import now_iso
from .config import MAX_SECONDS
from .files import OutOfDescriptors, WriteFailed, write_model
from .fmt import count
from .growing import pending_add
from .models import (
    BatchState,
    Report,
)
from .report import build_report
from .runstate import RunState
from .timing import BatchTiming, batch_timing

log = logging.getLogger("batchtui.engine")


class Finishing(RunState):
    """Part of :class:`~batchtui.engine.runner.BatchRunner`: how a run stops and ends."""

    # -- stopping --------------------------------------------------------------------------

    def request_drain(self, reason: str) -> None:
        """Stop as :meth:`request_stop` does, but let the running items end on their own, each
        within its ``--timeout`` if one is set (thread-safe).

        Nothing more starts (work handed out and not started goes back to pending at once); no
        running item is killed, so none is cut short to be run, and paid for, again by the next
        engine. A stop or halt already under way keeps its grace; a later
        ``request_stop(reason, grace=0)`` cuts the drain short (the items are then killed and
        go back to pending).
        """
        if not (self._stop.is_set() or self.halt_reason):
            self.config = self.config.model_copy(update={"grace": MAX_SECONDS})
        self.request_stop(reason)

    @property
    def draining(self) -> bool:
        """A drain is under way: the running items end on their own (none is killed)."""
        return self._stop.is_set() and self.config.grace >= MAX_SECONDS

    @property
    def running_items(self) -> int:
        """How many items run now (started in a worker; not those only handed out)."""
        return self.executor.counts()[1] if self.executor is not None else 0

    def _enter_stopping(self) -> None:
        self.state = BatchState.STOPPING
        self._stopping_since = self._now  # the grace counts from this turn
        if self.halt_reason:
            self.events.halted(self.halt_reason)  # its hooks run on their own thread
        if self.executor is not None:
            self._return_unstarted(self.executor.cancel_all())
        self._requeue_waiting_retries()
        self.dispatcher.drop_buffer()
        self._commit()
        self._write_live(force=True)
        self._write_manifest()

    def _kill_in_flight(self, reason: str) -> None:
        assert self.executor is not None
        self._return_unstarted(self.executor.cancel(list(self._inflight)))
        for seq, flight in list(self._inflight.items()):
            if seq not in self._kill_reasons:
                self._kill_reasons[seq] = reason
                if self._early_halt is not None:
                    self._early_halt.ignore(seq)
                self.executor.kill(seq, flight.item.attempt)

    def _abandon_in_flight(self) -> None:
        """Items that outlived the grace and cannot be killed (Python calls on threads): back to
        pending for the next run, and the batch stays locked until they return or this process
        exits (they may still be running in it): the next engine waits, no item runs in two
        processes at once."""
        if self._inflight:
            self._warn(
                f"{count(len(self._inflight), 'running Python call')} cannot be killed: back to pending; the batch"
                " stays locked until they return or this process exits"
            )
            self._abandoned = True
        for seq in list(self._inflight):
            if self._inflight.pop(seq).skipped:
                continue  # skipped while it ran (in the store already): it stays skipped
            self.staging.add("requeue", (seq,))
            self.staging.delta["processing"] -= 1
            self.staging.delta["pending"] += 1
        self._commit()

    # -- a full disk -----------------------------------------------------------------------

    def _on_write_failed(self, exc: WriteFailed) -> None:
        """The disk is full (or a file size limit, a read-only file system): halt at once.

        Nothing uncommitted is trusted: the staged changes are dropped (result lines already in
        results.jsonl past the committed offset are adopted on resume; other outcomes are redone,
        as after a crash), running items are killed and left for resume to requeue. The final
        files are then written where there is still room (:meth:`_finish`)."""
        log.error("%s", exc)
        self.write_failure = exc
        self.halt_reason = write_halt_reason(exc)
        self.state = BatchState.STOPPING
        self.outcomes.drop()  # completions may have been dropped: the report reads the store
        self.staging.clear()
        self.indexing = False  # a build staged or queued is dropped with the rest
        self.dispatcher.take_retries()
        self.dispatcher.drop_buffer()
        if self.committer is not None:
            self.committer.abandon()  # queued group commits are dropped like the staged ones
        if self.executor is not None:
            with contextlib.suppress(Exception):
                self.executor.cancel_all()  # nothing queued starts; requeued below with the rest
                self.executor.kill_all()
        self._inflight.clear()
        assert self.store is not None
        try:  # a small transaction may still fit (a file size limit hit by results.jsonl)
            self.store.requeue_processing()
            self.counts = self.store.counts()
            self.error_tally.reread(self.store)
            self.commit_seq = int(self.store.get_meta("commit_seq", self.commit_seq) or 0)
        except (WriteFailed, sqlite3.Error) as again:
            log.warning("items left 'processing' go back to pending on resume (%s)", again)

    # -- the end of a run ------------------------------------------------------------------

    def _finish(self) -> None:
        """Final commit, state, manifest, live progress, report, and the hooks (the ``finish``
        event, --on-finish, and the events still queued: see engine/events.py)."""
        if self.store is None or self.results is None:
            return
        if self.write_failure is None:
            try:
                self._commit()
            except WriteFailed as exc:
                self._on_write_failed(exc)
        c = self.counts
        if self.halt_reason:
            self.state = BatchState.HALTED
        elif c.pending or c.processing or (self._stop.is_set() and not self._source_read()):
            self.state = BatchState.STOPPED
        else:
            self.state = BatchState.FINISHED
        ended = now_iso()
        history = list(self.manifest.history)
        if history:
            history[-1] = history[-1].model_copy(update={"ended_at": ended, "outcome": self.state.value})
        self.manifest = self.manifest.model_copy(update={"ended_at": ended, "history": history})
        self.final_timing = timing = batch_timing(self.manifest.history, self.counts)
        # Each final file on its own: on a full disk, write whatever still fits.
        self._best_effort(self._write_manifest)
        self._best_effort(lambda: self._write_live(force=True))
        report = self._report(ended, timing)
        self._best_effort(lambda: write_model(self.batch.report, report, durable=self.config.fsync))
        if self.state == BatchState.HALTED and self.halt_reason:
            self.events.halted(self.halt_reason)  # a halt decided at the very end (a full disk)
        if self.events.active:
            self.events.finish(self.state.value, report.model_dump(mode="json"))
            self._best_effort(lambda: self._write_live(force=True))  # a hook failure shows in the warnings

    def _source_read(self) -> bool:
        """Whether every item of the batch's source (and of an `add`) is in the store: a stop
        while it was being read leaves items the counts do not show yet, for a resume to read."""
        store = self.store
        try:
            return store is not None and bool(store.get_meta("enqueue_done")) and pending_add(store) is None
        except sqlite3.Error:
            return False  # unreadable now: stopped (resumable) is the safe word

    def _best_effort(self, write: Callable[[], object]) -> None:
        try:
            try:
                write()
            except OutOfDescriptors as exc:
                write()  # once more, with the spare descriptors the failure let go
                self._warn(
                    f"this process used up its file descriptors (ulimit -n; {exc.reason} at {exc.path}): the"
                    " final files were written with descriptors kept aside for this; find what keeps files open"
                    " (a Python callable on the thread executor shares the engine's; --executor process runs it apart)"
                )
        except FileNotFoundError as exc:
            if self.folder.moved() is None:  # looked at again: it may have gone since the last commit
                raise
            log.warning("not written: %s (the batch folder was moved or deleted)", exc.filename)
        except WriteFailed as exc:
            log.warning("%s", exc)
            if self.write_failure is None:  # the disk filled up at the very end
                self.write_failure = exc
                self.halt_reason = write_halt_reason(exc)
                self.state = BatchState.HALTED

    def _report(self, ended: str, timing: BatchTiming) -> Report:
        assert self.store is not None
        durations = sorted(self.outcomes.durations) if self.outcomes.durations is not None else self.store.durations()
        return build_report(
            self.batch,
            self.manifest,
            self.store,
            state=self.state,
            halt_reason=self.halt_reason,
            started_at=self.manifest.started_at or self._started_at,
            ended_at=ended,
            timing=timing,
            counts=self.counts,
            durations=durations,
            memory=self.memory,
            cost_spent=self.outcomes.cost_spent,
            config=self.config,
        )


def write_halt_reason(exc: WriteFailed) -> str:
    """The halt reason of a batch file that could not be written."""
    if isinstance(exc, OutOfDescriptors):
        return f"out of file descriptors: {exc}"
    return f"disk full or not writable: {exc}"
