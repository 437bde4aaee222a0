"""The batch runner: creates batches and runs them. One thread, the single writer.

Flow of one item: pending in items.db -> fetched in pages -> submitted to the executor in
chunks (marked 'processing' in the store only once it has run for MARK_AFTER_S: a quick item
goes pending -> complete in one update) -> its Outcome comes back on the completion queue ->
a complete one is appended to results.jsonl at once -> at the next group commit
(<= 50 ms or <= 1000 changes) results.jsonl is fsynced, then one SQLite transaction records
the new statuses and the results offset -> the committed counts feed live_progress.json.

Because the results offset is committed with the statuses, a crash between the append and
the commit leaves lines past the offset: on resume they are adopted (the items marked complete
from them), never redone and never written twice.
"""

from __future__ import annotations

import array
import collections
import contextlib
import logging
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from . import staging
from .batchdir import (
    HOST,
    BatchDir,
    BatchLock,
    now_iso,
)
from .committer import CommitJob, Committer
from .config import BatchConfig, stored_config
from .control import ControlReader, ControlWatcher
from .dispatch import Dispatcher
from .enqueue import enqueue_source, source_unreadable
from .errors import (
    EXIT_USAGE,  # noqa: F401  (also imported from here)
    ItemTimeout,
    classify,
)
from .executors import CompletionQueue, EarlyHalt, Executor, Outcome, WorkerInitError, make_executor
from .files import ResultsLog, WriteFailed, write_model
from .models import (
    ACTIVE_STATES,
    BatchState,
    ControlCommand,
    Cost,
    Counts,
    HistoryEntry,
    LiveCounts,
    LiveProgress,
    Report,
)
from .monitor import MemoryMonitor, RateMeter
from .outcomes import Flight, OutcomeRecorder
from .policy import HaltCheck
from .processors import ProcessorSpec
from .publish import ProgressPublisher, in_flight_view
from .reaper import Reaper
from .report import build_report, run_hook
from .resultscheck import adopt_tail, finish_staged, rebuild
from .sources import SourceSpec
from .staging import Staging
from .steering import ControlHandler
from .store import ItemStore

log = logging.getLogger("batchtui.engine")

COMMIT_INTERVAL_S: Final = 0.05
COMMIT_MAX_CHANGES: Final = 1000
#: An item is marked 'processing' in the store once it has run this long (views show it).
MARK_AFTER_S: Final = 1.0
#: The GIL switch interval while a run goes on (Python's default is 5 ms). The runner's threads
#: spend their lives in short blocking calls (SQLite steps, fsyncs, pipe reads, queue waits),
#: and each return from one waits for the GIL: with the default, a committer thread waits up
#: to 5 ms per statement next to a busy runner thread. Restored when the run ends.
SWITCH_INTERVAL_S: Final = 0.0005

EXIT_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_HALTED: Final = 3
EXIT_INTERRUPTED: Final = 130


@dataclass(frozen=True)
class RunResult:
    """How a run ended."""

    batch: BatchDir
    state: BatchState
    counts: Counts
    halt_reason: str | None
    exit_code: int


def exit_code_for(state: BatchState, counts: Counts) -> int:
    """The CLI contract: 0 all complete; 1 some failed or skipped; 3 halted; 130 stopped."""
    if state == BatchState.HALTED:
        return EXIT_HALTED
    if state in (BatchState.STOPPED, BatchState.STOPPING, BatchState.PAUSED, BatchState.RUNNING):
        return EXIT_INTERRUPTED
    if counts.failed or counts.skipped or counts.pending or counts.processing:
        return EXIT_SOME_FAILED
    return EXIT_OK


# -- running a batch -------------------------------------------------------------------------


class BatchRunner:
    """Runs (or resumes) one batch to its end, a halt, or a stop.

    Thread-safe entry points for other threads: :meth:`request_stop`, :meth:`command`.
    Everything else runs on the thread that called :meth:`run`.
    """

    def __init__(
        self,
        batch: BatchDir,
        *,
        config: BatchConfig | None = None,
        action: str = "run",
        overrides: dict[str, Any] | None = None,
        on_progress: Callable[[LiveProgress], None] | None = None,
        handle_signals: bool = False,
        executor_factory: Callable[[ProcessorSpec, BatchConfig, CompletionQueue], Executor] | None = None,
    ) -> None:
        self.batch = batch
        self._batch_dir = str(batch.path)
        read_notes: list[str] = []  # a fall-back to manifest.json.bak: a warning once running
        self.manifest = batch.read_manifest(on_backup=read_notes.append)
        self.config = config or stored_config(self.manifest.config, batch.manifest)
        self.spec = ProcessorSpec.model_validate(self.manifest.processor)
        self.action = action
        self.overrides = overrides or {}
        self.handle_signals = handle_signals
        self._executor_factory = executor_factory or make_executor
        self._early_halt: EarlyHalt | None = None
        self._now = time.monotonic()  # the time of the loop's current turn (see step)
        self._real_time = True  # the loop runs on the real clock (not a test's)
        self._grace_deadline: float | None = None

        self.completions: CompletionQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._wake = threading.Event()

        self.state = BatchState.RUNNING
        self.paused = False
        self.halt_reason: str | None = None
        self.counts = Counts()
        self.commit_seq = 0
        self.control = ControlHandler(batch.control, self._apply, self._save_control_offset, self._warn)
        self.watcher: ControlWatcher | None = None
        self.warnings: collections.deque[str] = collections.deque(maxlen=10)
        self.warnings.extend(f"{now_iso()} {note}" for note in read_notes)

        self._inflight: dict[int, Flight] = {}
        self._kill_reasons: dict[int, str] = {}
        self.dispatcher = Dispatcher(
            self.config,
            self.spec,
            self._batch_dir,
            self._next_pending,
            self._commit,
        )
        self.staging = Staging(self._clock)
        self.outcomes = OutcomeRecorder(
            self.config,
            self.staging,
            self.dispatcher,
            self._inflight,
            self._kill_reasons,
            on_halt=self._halt,
            on_returned=self._return_unstarted,
            stopping=lambda: self._stop.is_set() or bool(self.halt_reason),
            clock=self._clock,
        )

        self.publisher = ProgressPublisher(batch, self.live, on_progress)
        self._t0 = time.monotonic()
        self._started_at = now_iso()

        self.memory = MemoryMonitor()
        self.rate = RateMeter()
        self.halts = HaltCheck(self.config)
        self.lock = BatchLock(batch.lock)
        self.reaper: Reaper | None = None
        self._abandoned = False  # items left running in this process (see _abandon_in_flight)
        self.store: ItemStore | None = None
        self.results: ResultsLog | None = None
        self.executor: Executor | None = None
        self._mem_waiting = False
        self.write_failure: WriteFailed | None = None
        self._marks_stamp = 0.0
        self.committer: Committer | None = None
        self._next_commit_seq = 0

    @property
    def on_progress(self) -> Callable[[LiveProgress], None] | None:
        """Called with each live_progress.json written (the headless lines, the in-app TUI)."""
        return self.publisher.on_progress

    @on_progress.setter
    def on_progress(self, callback: Callable[[LiveProgress], None] | None) -> None:
        self.publisher.on_progress = callback

    @property
    def cost_spent(self) -> float:
        """What the batch's items have cost so far (``--max-cost`` counts it)."""
        return self.outcomes.cost_spent

    # -- thread-safe API -------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested", grace: float | None = None) -> None:
        """Graceful stop: nothing more starts (work handed out and not started is taken back),
        running items get ``grace`` seconds, then are killed.

        ``grace`` shortens the configured grace period (a hand-off to another engine).
        """
        if grace is not None and grace < self.config.grace:
            self.config = self.config.model_copy(update={"grace": grace})
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
        self._wake.set()
        self.completions.put([])  # wake the loop

    def command(self, cmd: ControlCommand) -> None:
        """Queue a control command (pause, resume, stop, retry, skip, set_workers)."""
        self.control.put(cmd)
        self.completions.put([])

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the batch to its end, a halt or a stop, on this thread."""
        old_handlers: dict[signal.Signals, Any] = {}
        old_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(old_interval, SWITCH_INTERVAL_S))
        try:
            self.open(watch=True)
            if self.handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    old_handlers[sig] = signal.signal(sig, self._on_signal)
            try:
                self._loop()
            finally:
                self._finish()
        finally:
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            self.close()
            sys.setswitchinterval(old_interval)
        return self.result()

    def result(self) -> RunResult:
        return RunResult(self.batch, self.state, self.counts, self.halt_reason, exit_code_for(self.state, self.counts))

    def open(self, *, watch: bool = False) -> None:
        """Take the batch: its lock, its files, the executor. :meth:`run` calls it; a test may
        call it, then drive the loop with :meth:`step`, then :meth:`finish` and :meth:`close`."""
        self.lock.acquire()
        # Before the executor starts (the shell processor copies the environment once): every
        # process of this run carries the reaper's mark, and dies with the run, kill -9 included.
        self.reaper = Reaper(self.batch.path, lock_fd=self.lock.fileno())
        self.reaper.start()
        # Where the last engine stopped reading control.jsonl is in the store (_setup).
        self.control.reader = ControlReader(self.batch.control)
        if watch:
            self.watcher = ControlWatcher(self.batch.path, lambda: self.completions.put([]))
            self.watcher.start()
        self._setup()

    def finish(self) -> RunResult:
        """The final commit and files (also after :meth:`step` said the run is over)."""
        self._finish()
        return self.result()

    def close(self) -> None:
        """Let go of the batch: the watcher, the workers, the store, the files, the lock."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=1.0)
        if self.committer is not None:
            self.committer.close()
        if self.store is not None:
            self.store.close()
        if self.results is not None:
            self.results.close()
        if not self._abandoned:  # else the kernel drops the lock when this process exits
            self.lock.release()
        if self.reaper is not None:  # after the release: until then no other engine may take the batch
            self.reaper.close(unlock=not self._abandoned)
            self.reaper = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set() and signum == signal.SIGINT:
            self._stop_reason = f"{name} again: stopping now"
            self.config = self.config.model_copy(update={"grace": 0.0})
        self.request_stop(f"{name} received")

    def _setup(self) -> None:
        durable = self.config.fsync
        self.store = store = ItemStore.open(self.batch.items_db, durable=durable)
        # A rewrite of results.jsonl a kill cut short is finished (or dropped) before it is read.
        finish_staged(self.batch.results, int(store.get_meta("results_offset", 0) or 0))
        self.results = self.outcomes.results = ResultsLog(self.batch.results)
        if self.results.torn_bytes:
            self._warn(f"cut a torn last line ({self.results.torn_bytes} bytes) from results.jsonl")
        if not store.get_meta("enqueue_done"):
            self._warn("the previous engine died while enqueuing: reading the rest of the source")
            dropped = enqueue_source(store, SourceSpec.model_validate(self.manifest.source))
            self.manifest = self.manifest.model_copy(
                update={"duplicates_dropped": dropped, "unreadable": source_unreadable(store)}
            )
        requeued = store.requeue_processing()
        if requeued:
            log.info("requeued %d items left processing by a previous engine", requeued)
        self.commit_seq = int(store.get_meta("commit_seq", 0) or 0)
        results_notes = self._adopt_results(int(store.get_meta("results_offset", 0) or 0))
        self.counts = store.counts()
        if self.counts.complete:  # a new batch has spent nothing: skip two scans of the table
            self.outcomes.cost_spent, self.outcomes.max_item_cost = store.cost_totals()
        self.outcomes.cost_known = self.counts.complete > 0
        # Every complete item of a batch that had none when this run began completes in this
        # run: their durations are kept here for the report, instead of read back at the end.
        self.outcomes.durations = array.array("d") if self.counts.complete == 0 else None
        self.rate.add(self.counts.finished)

        entry = HistoryEntry(
            action="resume" if self.action == "resume" else "run",
            at=self._started_at,
            pid=os.getpid(),
            host=HOST,
            overrides=self.overrides,
            notes=results_notes,
        )
        self.manifest = self.manifest.model_copy(
            update={
                "state": BatchState.RUNNING,
                "started_at": self.manifest.started_at or self._started_at,
                "ended_at": None,
                "halt_reason": None,
                "config": self.config.model_dump(mode="json"),
                "history": [*self.manifest.history, entry],
                "totals": self.counts,
            }
        )
        self.control.take_over(store.get_meta("control_offset"), store.get_meta("control_file"))
        self._write_manifest()
        self._write_live(force=True)
        self._next_commit_seq = self.commit_seq
        self.committer = Committer(
            store.second_writer(durable=durable),
            self.results,
            order=staging.ORDER,
            statements=staging.STATEMENTS,
            durable=durable,
            synced_offset=0,  # the first commit syncs whatever the file holds
            wake=lambda: self.completions.put([]),
        )
        self.executor = self._executor_factory(self.spec, self.config, self.completions)
        if self.config.max_failure_rate is not None and hasattr(self.executor, "early_halt"):
            self._early_halt = EarlyHalt(
                self.halts.failure_rate, self.counts.complete, self.counts.failed, self.config.max_attempts
            )
            self.executor.early_halt = self._early_halt
        try:
            self.executor.start()
        except WorkerInitError as exc:
            self.halt_reason = f"worker start failed: {exc}"
            raise

    def _save_control_offset(self, offset: int, identity: str | None) -> None:
        """Store how far control.jsonl is read (and which file that offset is in)."""
        assert self.store is not None
        self._commit()  # the committer is idle while this thread writes
        with self.store.transaction():
            self.store.set_meta("control_offset", offset)
            if identity is not None:
                self.store.set_meta("control_file", identity)

    def _adopt_results(self, offset: int) -> list[str]:
        """Lines past the committed offset: each is checked against its item, the valid ones are
        adopted (not redone), the others cut from the file; a file that does not fit the offset
        is rebuilt from the store (engine/resultscheck.py). Returns the warnings given."""
        assert self.store is not None and self.results is not None
        # Only an engine that died before its final commit (or halted on a write failure)
        # leaves lines of its own there: its manifest still says it runs, or names the failure.
        died = self.manifest.state in ACTIVE_STATES or (self.manifest.halt_reason or "").startswith("disk full")
        notes = adopt_tail(self.store, self.results, offset).messages(after_crash=died)
        for text in notes:
            self._warn(text)
        return notes

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._run_loop()
        except WriteFailed as exc:
            self._on_write_failed(exc)

    def _on_write_failed(self, exc: WriteFailed) -> None:
        """The disk is full (or a file size limit, a read-only file system): halt at once.

        Nothing uncommitted is trusted: the staged changes are dropped (result lines already in
        results.jsonl past the committed offset are adopted on resume; other outcomes are redone,
        as after a crash), running items are killed and left for resume to requeue. The final
        files are then written where there is still room (:meth:`_finish`)."""
        log.error("%s", exc)
        self.write_failure = exc
        self.halt_reason = f"disk full or not writable: {exc}"
        self.state = BatchState.STOPPING
        self.outcomes.drop()  # completions may have been dropped: the report reads the store
        self.staging.clear()
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
            self.commit_seq = int(self.store.get_meta("commit_seq", self.commit_seq) or 0)
        except (WriteFailed, sqlite3.Error) as again:
            log.warning("items left 'processing' go back to pending on resume (%s)", again)

    def _run_loop(self) -> None:
        while self.step(time.monotonic(), wait=None):
            pass

    def step(self, now: float, wait: float | None = 0.0) -> bool:
        """One turn of the loop at time ``now``; False when the run is over.

        In order: control commands; a stop or halt decided (work not started is taken back);
        hand out work (or, stopping, kill what outlives the grace); time out items; take in
        outcomes, waiting for the first up to ``wait`` seconds (None: until the next thing
        due); commit when due; write the live files. Every decision uses ``now``, so a test
        drives the engine with a fake clock and a fake executor, without threads or sleeps.
        """
        self._now = now
        self._real_time = wait is None
        self._handle_commands()
        if (self._stop.is_set() or self.halt_reason) and self.state != BatchState.STOPPING:
            self._enter_stopping()
            self._grace_deadline = now + self.config.grace
        if self.state == BatchState.STOPPING:
            if not self._inflight:
                return False
            assert self._grace_deadline is not None
            if now >= self._grace_deadline:
                self._kill_in_flight("stop")
                if now >= self._grace_deadline + 3.0:
                    # Python callables in threads cannot be killed: requeue and leave them.
                    self._abandon_in_flight()
                    return False
        else:
            self._dispatch(now)
            if not self._inflight and self.dispatcher.idle:
                return False
        self._watchdog(now)
        self._take_outcomes(self._next_wake(now) if wait is None else wait, real_time=wait is None)
        self._maybe_commit()
        self._periodic()
        return True

    def _clock(self) -> float:
        """Now: the real clock in a real run (an outcome may be taken in well after the turn
        began), the turn's time when a test steps the loop."""
        return time.monotonic() if self._real_time else self._now

    def _take_outcomes(self, wait: float, real_time: bool = False) -> None:
        try:
            outcomes = self.completions.get(timeout=wait) if wait > 0 else self.completions.get_nowait()
        except queue.Empty:
            outcomes = None
        if real_time:  # the loop slept: its clock moved (a retry's backoff counts from now)
            self._now = time.monotonic()
        if outcomes is None:
            return
        if outcomes:
            self._on_outcomes(outcomes)
        # Drain what else is ready without blocking: fewer, bigger commits.
        while True:
            try:
                more = self.completions.get_nowait()
            except queue.Empty:
                break
            if more:
                self._on_outcomes(more)
                if self.staging.staged >= COMMIT_MAX_CHANGES:
                    self._commit(wait=False)  # the contract: at most ~1000 changes a transaction

    def _next_wake(self, now: float) -> float:
        grace_deadline = self._grace_deadline
        wake = 0.25
        if self.staging.first is not None:
            wake = min(wake, max(0.0, self.staging.first + COMMIT_INTERVAL_S - now))
        event = self.dispatcher.next_event(now, self.paused)
        if event is not None:
            wake = min(wake, event)
        if grace_deadline is not None:
            wake = min(wake, max(0.0, grace_deadline - now) + 0.01)
        return max(wake, 0.0005)

    def _requeue_waiting_retries(self) -> None:
        """Items waiting out a retry backoff are not running: back to pending (attempts kept)."""
        waiting = self.dispatcher.take_retries()
        if not waiting:
            return
        for seq in waiting:
            self.staging.add("requeue", (seq,))
            self.staging.delta["processing"] -= 1
            self.staging.delta["pending"] += 1
        self._commit()
        self._reset_scan()

    def _enter_stopping(self) -> None:
        self.state = BatchState.STOPPING
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
        pending for the next run, and the batch stays locked while this process lives (they may
        still be running in it): the next engine waits, no item runs in two processes at once."""
        if self._inflight:
            self._warn(
                f"{len(self._inflight)} running Python call(s) cannot be killed: back to pending; the batch"
                " stays locked until this process exits"
            )
            self._abandoned = True
        for seq in list(self._inflight):
            self._inflight.pop(seq)
            self.staging.add("requeue", (seq,))
            self.staging.delta["processing"] -= 1
            self.staging.delta["pending"] += 1
        self._commit()

    def _watchdog(self, now: float) -> None:
        """Kill items past --timeout where the processor cannot time out by itself."""
        timeout = self.config.timeout
        if timeout is None or self.spec.kind == "shell" or self.executor is None:
            return
        for seq, flight in list(self._inflight.items()):
            # The clock runs from the moment the item began to run, not from its dispatch: an
            # item waiting behind slow ones in the executor's queue has not used its time.
            began = self.executor.started(seq)
            if began is None or now - began <= timeout or seq in self._kill_reasons:
                continue
            self._kill_reasons[seq] = "timeout"
            if not self.executor.kill(seq, flight.item.attempt):
                # A thread cannot be killed: fail the item now, ignore its late outcome.
                self._kill_reasons.pop(seq, None)
                self._on_outcomes(
                    [
                        Outcome(
                            seq,
                            flight.item.attempt,
                            time.time() - (now - began),
                            now - began,
                            error=classify(ItemTimeout(timeout)),
                        )
                    ]
                )

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        """Hand out what may go now: chunks from the dispatcher, into the executor's gate."""
        if self.paused or self.halt_reason or self.executor is None:
            return
        if not self._memory_ok():
            return
        dispatcher = self.dispatcher
        budget = self.config.max_cost is not None
        if budget:
            reason = dispatcher.budget_blocks(
                self.outcomes.cost_spent, len(self._inflight), self.outcomes.max_item_cost
            )
            if reason:
                if not self._inflight:
                    self.halt_reason = reason
                return
        workers = max(1, self.executor.workers)
        max_items = self.config.window or workers * 4 * dispatcher.chunk
        if budget and not self.outcomes.cost_known:
            max_items = 1  # no item finished yet: probe with one so the cap cannot be overrun
        room = max_items - len(self._inflight)
        if room <= 0:
            return
        taken = dispatcher.take(
            now,
            room,
            dispatcher.chunk_size(self.counts.total),
            self._inflight,
            len(self._inflight),
            (self.outcomes.cost_spent, self.outcomes.max_item_cost) if budget else None,
        )
        if not taken.chunks:
            return
        if taken.from_pending:
            self.staging.delta["pending"] -= taken.from_pending
            self.staging.delta["processing"] += taken.from_pending
        started_at = now_iso()
        inflight, submit = self._inflight, self.executor.submit
        for chunk in taken.chunks:
            for item in chunk:
                inflight[item.seq] = Flight(item, now, started_at)
            submit(chunk)

    def _next_pending(self, after: int, limit: int) -> list[tuple[int, str, str, str, int]]:
        assert self.store is not None
        return self.store.next_pending(after, limit)

    def _memory_ok(self) -> bool:
        limit = self.config.memory_limit_mb
        if limit is None:
            return True
        mem = self.memory.sample()
        over = mem.rss_mb + mem.children_rss_mb > limit
        if over and not self._mem_waiting:
            used = mem.rss_mb + mem.children_rss_mb
            held = self.executor.cancel_all() if self.executor is not None else []
            self._return_unstarted(held)
            self._warn(
                f"memory {used:.0f} MB over --memory-limit-mb {limit:g}: dispatch waits"
                + (f" ({len(held)} queued items back to pending)" if held else "")
            )
        if not over and self._mem_waiting:
            self._warn("memory back under the limit: dispatch goes on")
        self._mem_waiting = over
        return not over

    # -- outcomes --------------------------------------------------------------------------

    def _on_outcomes(self, outcomes: list[Outcome]) -> None:
        """Record outcomes as they arrive; with --max-failure-rate, one at a time, so the halt is
        decided at the very outcome that crosses the limit."""
        if self.config.max_failure_rate is None or self.halt_reason:
            self.outcomes.record(outcomes)
            return
        for o in outcomes:
            self.outcomes.record([o])
            if not self.halt_reason:
                self._check_failure_rate()

    def _check_failure_rate(self) -> None:
        """The failure-rate policy, decided as outcomes arrive (not when they are committed)."""
        decided, counts = self.staging.decided, self.counts
        reason = self.halts.failure_rate(decided(counts, "complete"), decided(counts, "failed"))
        if reason:
            self._halt(reason)

    def _halt(self, reason: str) -> None:
        """A policy stops the batch: nothing handed out that has not started will start."""
        if not self.halt_reason:
            self.halt_reason = reason
        if self.executor is not None:
            self._return_unstarted(self.executor.cancel_all())

    def _return_unstarted(self, seqs: list[int]) -> None:
        """Items taken back from the executor before they started: pending again at once, no
        attempt counted (an item waiting out a retry backoff keeps the attempts it made)."""
        returned = 0
        for seq in seqs:
            if self._inflight.pop(seq, None) is None:
                continue
            self._kill_reasons.pop(seq, None)
            self.staging.add("requeue", (seq,))
            returned += 1
        if returned:
            self.staging.delta["processing"] -= returned
            self.staging.delta["pending"] += returned
            self._reset_scan()

    # -- commits ---------------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        """Hand the staged changes to the committer when due; take in finished commits."""
        first = self.staging.first
        if first is not None and (self.staging.staged >= COMMIT_MAX_CHANGES or self._now - first >= COMMIT_INTERVAL_S):
            self._commit(wait=False)
        elif self.committer is not None:
            self._settle(self.committer.done())

    def _commit(self, wait: bool = True) -> None:
        """One group commit of everything staged, carried out by the committer: fsync
        results.jsonl, then one transaction with the changes and the results offset.

        ``wait`` (the default) returns once every commit handed over so far is done and its
        counts applied: the store may then be read or written on this thread. The hot path
        passes ``wait=False`` and goes on while the committer works."""
        committer = self.committer
        if committer is None:
            return  # not running yet (or no more): nothing can be staged
        if self.staging.first is not None:
            assert self.results is not None
            self._stage_marks(self._now)
            self._next_commit_seq += 1
            committer.submit(self.staging.take(self.results.offset, self._next_commit_seq))
            damage = self.results.damage()  # one stat: is the file still what this engine wrote?
            if damage is not None:
                self._repair_results(damage)
        self._settle(committer.drain() if wait else committer.done())

    def _repair_results(self, damage: str) -> None:
        """results.jsonl changed behind the engine's back (it is the file's only writer): lines
        were cut, deleted, replaced or added. Everything appended so far is committed first,
        then the file is rebuilt from the store, which holds every committed result."""
        assert self.store is not None and self.results is not None and self.committer is not None
        self._settle(self.committer.drain())
        try:
            lines = rebuild(self.store, self.results)
        except WriteFailed:
            raise  # a full disk: the run halts (the next start rebuilds the file)
        except OSError as exc:
            self.results.watch = False  # said once; the next start rebuilds it
            self._warn(
                f"results.jsonl {damage} while this engine ran and could not be rebuilt ({exc}); items.db"
                " has every result: the next `batchtui resume` rebuilds the file"
            )
            return
        self.committer.synced_to(self.results.offset)
        self._warn(
            f"results.jsonl {damage} while this engine ran: rebuilt it from items.db ({lines} lines), nothing lost"
        )

    def _settle(self, jobs: list[CommitJob]) -> None:
        """Committed jobs: their counts become the batch's counts (what views show)."""
        if not jobs:
            return
        counts = self.counts
        for job in jobs:
            for status, n in job.delta.items():
                setattr(counts, status, getattr(counts, status) + n)
            self.staging.settled(job)
            self.commit_seq = job.commit_seq
        self.rate.add(counts.finished)
        self._write_live()

    # -- control ---------------------------------------------------------------------------

    def _handle_commands(self) -> None:
        if self.control.handle():
            self._write_live(force=True)

    def _apply(self, cmd: ControlCommand) -> str:
        """Apply one control command on the runner thread; returns what it did."""
        assert self.store is not None and self.executor is not None
        if cmd.op == "pause":
            if self.state != BatchState.RUNNING:
                return f"not running ({self.state.value})"
            self.paused = True
            self.state = BatchState.PAUSED
            held = self.executor.cancel_all()
            self._return_unstarted(held)
            self._requeue_waiting_retries()
            self._write_manifest()
            return f"paused; {len(held)} queued items back to pending, {len(self._inflight)} running items finish"
        if cmd.op == "resume":
            if self.state != BatchState.PAUSED:
                return f"not paused ({self.state.value})"
            self.paused = False
            self.state = BatchState.RUNNING
            self._write_manifest()
            return "running"
        if cmd.op == "stop":
            self.request_stop(f"stop command {cmd.id}")
            grace = self.config.grace
            limit = "all the time they need" if grace == float("inf") else f"{grace:g}s"
            return f"stopping: nothing more starts; running items get {limit} to finish"
        if cmd.op == "set_workers":
            n = int(cmd.value)
            if not 1 <= n <= 4096:
                raise ValueError(f"workers must be 1..4096, not {n}")
            before = self.executor.workers
            self.executor.set_workers(n)
            return f"workers {before} -> {n}"
        if cmd.op == "skip":
            return self._skip(cmd.seqs or [])
        if cmd.op == "retry":
            self._commit()
            error_type = (cmd.filter or {}).get("error_type")
            changed = self.store.retry_failed(error_type=error_type, seqs=cmd.seqs)
            self.counts.failed -= len(changed)
            self.counts.pending += len(changed)
            if changed:
                self._reset_scan()
                self.outcomes.errors_dirty = True
            return f"{len(changed)} failed items back to pending"
        raise ValueError(f"unknown op {cmd.op}")

    def _skip(self, seqs: list[int]) -> str:
        assert self.store is not None and self.executor is not None
        # Handed out and not started: taken back (they never start), then skipped as pending.
        self._return_unstarted(self.executor.cancel([s for s in seqs if s in self._inflight]))
        self._commit()
        running = [s for s in seqs if s in self._inflight]
        for seq in running:
            if seq not in self._kill_reasons:
                self._kill_reasons[seq] = "skip"
                if self._early_halt is not None:
                    self._early_halt.ignore(seq)
                self.executor.kill(seq, self._inflight[seq].item.attempt)
        rest = [s for s in seqs if s not in self._inflight]
        self.dispatcher.take_retries(set(rest))
        before = self.store.statuses(rest)
        changed = self.store.skip(rest, at=now_iso())
        for seq in changed:
            old = before.get(seq, "pending")
            setattr(self.counts, old, getattr(self.counts, old) - 1)
            self.counts.skipped += 1
        if changed:
            self._reset_scan()
        return f"{len(changed)} skipped, {len(running)} running killed"

    def _reset_scan(self) -> None:
        self.dispatcher.reset_scan()

    # -- files -----------------------------------------------------------------------------

    def _warn(self, text: str) -> None:
        log.warning(text)
        self.warnings.append(f"{now_iso()} {text}")

    def _stage_marks(self, now: float) -> bool:
        """Stage 'processing' for items that have run for MARK_AFTER_S; True if any."""
        marks = []
        cutoff = now - MARK_AFTER_S
        for seq, flight in self._inflight.items():
            if not flight.marked and flight.started <= cutoff:
                flight.marked = True
                marks.append((flight.started_at, seq))
        if marks:
            self.staging.rows["processing"].extend(marks)  # _periodic may have staged some already
        return bool(marks)

    def _periodic(self) -> None:
        now = self._now
        if self.staging.first is None and now - self._marks_stamp >= MARK_AFTER_S / 2:
            # Nothing else to commit: long-running items still show as 'processing' in views.
            self._marks_stamp = now
            if self._stage_marks(now):
                self.staging.first = now
                self._commit(wait=False)
        self.publisher.write_live()
        if self.publisher.manifest_due(self.counts):
            self._write_manifest()

    def _refresh_errors(self, force: bool = False) -> None:
        if self.publisher.errors(self.store, self.outcomes.errors_dirty, force):
            self.outcomes.errors_dirty = False

    def live(self) -> LiveProgress:
        c = self.counts
        mem = self.memory.sample()
        rate = self.rate.rate()
        remaining = c.pending + c.processing
        queued, running = self.executor.counts() if self.executor is not None else (0, 0)
        started = self.executor.started if self.executor is not None else None
        in_flight = in_flight_view(list(self._inflight.values()), started) if self._inflight else []
        self._refresh_errors()
        return LiveProgress(
            batch_id=self.batch.batch_id,
            state=self.state,
            updated_at=now_iso(),
            commit_seq=self.commit_seq,
            total=c.total,
            counts=LiveCounts(**c.model_dump(), running=running, queued=queued),
            percent=round(c.percent, 2),
            rate_per_s=round(rate, 3),
            eta_s=None if (eta := self.rate.eta(remaining)) is None else round(eta, 1),
            elapsed_s=round(time.monotonic() - self._t0, 2),
            in_flight=in_flight,
            memory=mem,
            cost=Cost(spent=round(self.outcomes.cost_spent, 6), budget=self.config.max_cost),
            errors_by_type=self.publisher.errors_by_type,
            error_groups=self.publisher.error_groups,
            recent_errors=list(self.outcomes.recent),
            paused=self.paused,
            workers=self.executor.workers if self.executor else self.config.workers,
            control_ack=self.control.last_ack,
            acked=list(self.control.acked),
            control_results=dict(self.control.results),
            halt_reason=self.halt_reason,
            pid=os.getpid(),
            host=HOST,
            warnings=list(self.warnings),
            cluster=getattr(self.executor, "cluster_info", lambda: None)(),  # dask: workers, memory
        )

    def _write_live(self, force: bool = False) -> None:
        self.publisher.write_live(force)

    def _write_manifest(self) -> None:
        self.manifest = self.publisher.write_manifest(
            self.manifest,
            self.config.fsync,
            state=self.state,
            totals=self.counts.model_copy(),
            halt_reason=self.halt_reason,
        )

    def _finish(self) -> None:
        """Final commit, state, manifest, live progress, report and the on-finish hook."""
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
        elif self._stop.is_set() or c.pending or c.processing:
            self.state = BatchState.STOPPED
        else:
            self.state = BatchState.FINISHED
        ended = now_iso()
        history = list(self.manifest.history)
        if history:
            history[-1] = history[-1].model_copy(update={"ended_at": ended, "outcome": self.state.value})
        self.manifest = self.manifest.model_copy(update={"ended_at": ended, "history": history})
        # Each final file on its own: on a full disk, write whatever still fits.
        self._best_effort(self._write_manifest)
        self.outcomes.errors_dirty = True
        self._best_effort(lambda: self._refresh_errors(force=True))
        self._best_effort(lambda: self._write_live(force=True))
        report = self._report(ended)
        self._best_effort(lambda: write_model(self.batch.report, report, durable=self.config.fsync))
        if self.config.on_finish:
            self._run_hook(self.config.on_finish, report)
            self._best_effort(lambda: self._write_live(force=True))  # a hook failure shows in the warnings

    def _best_effort(self, write: Callable[[], object]) -> None:
        try:
            write()
        except WriteFailed as exc:
            log.warning("%s", exc)
            if self.write_failure is None:  # the disk filled up at the very end
                self.write_failure = exc
                self.halt_reason = f"disk full or not writable: {exc}"
                self.state = BatchState.HALTED

    def _report(self, ended: str) -> Report:
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
            run_time=time.monotonic() - self._t0,
            counts=self.counts,
            durations=durations,
            memory=self.memory,
            cost_spent=self.outcomes.cost_spent,
            config=self.config,
        )

    def _run_hook(self, command: str, report: Report) -> None:
        warning = run_hook(command, report, self.batch, cwd=self.spec.cwd)
        if warning:
            self._warn(warning)
