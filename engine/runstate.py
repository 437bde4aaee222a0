"""What one run knows, and how it changes durably: the state every part of the runner shares.

:class:`RunState` holds a run's state (the store, the results log, the executor, the items in
flight, the committed counts, the batch state) and the few operations every part of the runner
uses: group commits (staged changes -> the committer -> the counts views show), taking work
back from the executor, and writing the live files. The parts, one module each::

    runner.py      BatchRunner: the loop, one turn at a time (commands, dispatch, outcomes, commits)
    takeover.py    taking a batch (its lock, its files, what the last engine left) and letting it go
    operations.py  the control operations (pause, resume, stop, set_workers, skip, retry)
    finishing.py   stopping, a full disk, and the final commit, files and report
    snapshot.py    what live_progress.json says of the run (RunState.live)

Everything runs on the runner's thread but :meth:`RunState.request_stop` and
:meth:`RunState.command`, which other threads call.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .adaptive import TimeoutPolicy
from .attempts import Outcome
from .batchdir import BatchDir, BatchLock, now_iso
from .committer import CommitJob, Committer
from .config import BatchConfig, stored_config
from .control import ControlWatcher
from .dispatch import Dispatcher
from .earlyhalt import EarlyHalt
from .error_tally import ErrorTally
from .eta import EtaEstimator
from .events import BatchEvents
from .executors import CompletionQueue, Executor, make_executor
from .files import ResultsLog, WriteFailed
from .fmt import shell_line
from .guard import FolderGuard
from .models import (
    BatchState,
    ControlCommand,
    Counts,
    LiveProgress,
)
from .monitor import MemoryMonitor
from .operations import Operations
from .outcomes import Flight, OutcomeRecorder
from .policy import HaltCheck
from .processors import ProcessorSpec
from .publish import ProgressPublisher
from .reaper import Reaper
from .resultscheck import rebuild
from .snapshot import snapshot
from .staging import Staging
from .steering import ControlHandler
from .store import ItemStore
from .timing import BatchTiming

log = logging.getLogger("batchtui.engine")

COMMIT_INTERVAL_S: Final = 0.05
COMMIT_MAX_CHANGES: Final = 1000
#: An item is marked 'processing' in the store once it has run this long (views show it).
MARK_AFTER_S: Final = 1.0
#: Refused starts (engine/errors.py NoRoomToStart) are over once none came for this long (longer
#: than a worker's longest wait for room, attempts.RoomWait) and items ended meanwhile.
START_HOLD_CLEAR_S: Final = 3.0


class RunState:
    """The state of one run of a batch and the operations that change it durably (see the
    module docstring); :class:`~batchtui.engine.runner.BatchRunner` is the class to use."""

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
        start_paused: bool = False,
    ) -> None:
        self.batch = batch
        self.start_paused = start_paused  # a TUI hands over a batch its operator paused: kept
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
        self._rate_judged = False  # the failure rate was judged before the first hand-out (BatchRunner.step)
        self._now = time.monotonic()  # the time of the loop's current turn (see step)
        self._real_time = True  # the loop runs on the real clock (not a test's)
        self._stopping_since: float | None = None  # the grace counts from then (a later stop may cut it)

        self.completions: CompletionQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._wake = threading.Event()

        self.state = BatchState.RUNNING
        self.paused = False
        self.halt_reason: str | None = None
        self.counts = Counts()
        #: The error breakdown, counted as the counts are (when a commit settles).
        self.error_tally = ErrorTally()
        self.commit_seq = 0
        self.indexing = False  # the slowest-first index is being built (engine/operations.py)
        self.operations = Operations(self)
        self.control = ControlHandler(batch.control, self.operations.apply, self._save_control_offset, self._warn)
        self.watcher: ControlWatcher | None = None
        self.warnings: collections.deque[str] = collections.deque(maxlen=10)
        self.warnings.extend(f"{now_iso()} {note}" for note in read_notes)
        self._told_unstoppable = False  # the run said once why a timed-out thread call is given up
        self._told_all_held = False  # ... and that given-up calls held every thread, after a skip

        self._inflight: dict[int, Flight] = {}
        #: Items the last engine was running at two deaths or more, not failed for it: this run
        #: takes them first, one at a time, until each has an outcome (TakeOver._charge_dead).
        self.suspects: set[int] = set()
        self._kill_reasons: dict[int, str] = {}
        self.dispatcher = Dispatcher(
            self.config,
            self.spec,
            self._batch_dir,
            self._next_pending,
            self._commit,
            self._next_first,
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
        #: The timeout in force (absolute, or following the median success: engine/adaptive.py).
        self.timeouts = TimeoutPolicy(self.config.timeout, self.config.adaptive_timeout)
        if self.config.adaptive_timeout is not None:
            self.outcomes.learn = self.timeouts.learn
        self.outcomes.on_refused = self._start_refused

        self.publisher = ProgressPublisher(batch, self.live, on_progress)
        self.events = BatchEvents(
            batch.path,
            batch.batch_id,
            self.manifest.name,
            on_event=self.config.on_event,
            on_finish=self.config.on_finish,
            hook_timeout=self.config.hook_timeout,
            cwd=self.spec.cwd,
        )
        if self.events.wants("new-group"):
            self.outcomes.on_failed = self.events.failed
        self._t0 = time.monotonic()
        self._started_at = now_iso()
        #: The batch's active time before this run (its earlier runs: set when the run takes the
        #: batch over); live elapsed_s is the batch's, run_elapsed_s this run's (see .timing).
        self.before_s = 0.0
        #: The batch's time as its history records it, once this run's end is in it: the final
        #: live_progress.json then says what report.json, `ls` and `show` say, to the digit
        #: (not this process's clock read a moment apart, which can round to another second).
        self.final_timing: BatchTiming | None = None

        self.memory = MemoryMonitor()
        self.eta = EtaEstimator()
        self.ended = 0  # items that ended (complete or failed) in this run: the rate's count
        self.halts = HaltCheck(self.config)
        self.lock = BatchLock(batch.lock)
        self.reaper: Reaper | None = None
        self._abandoned = False  # items left running in this process (see _abandon_in_flight)
        self.store: ItemStore | None = None
        self.results: ResultsLog | None = None
        self.executor: Executor | None = None
        self._mem_waiting = False
        self.memory_hold: str | None = None  # why dispatch waits for memory (live_progress.json)
        self.start_hold: str | None = None  # why commands cannot start now (live_progress.json)
        # While start_hold is said: the starts refused, the last one's time, the items ended then,
        # and when the first was refused (the wall clock's HH:MM:SS).
        self._refused: tuple[int, float, int, str] = (0, 0.0, 0, "")
        self._mem_alone = False  # said that the engine alone is over the limit
        self.write_failure: WriteFailed | None = None
        self._marks_stamp = 0.0
        self.folder = FolderGuard(batch.path)
        self.committer: Committer | None = None
        self._next_commit_seq = 0

    # -- what other code reads -------------------------------------------------------------

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

    # -- the store -------------------------------------------------------------------------

    def _clock(self) -> float:
        """Now: the real clock in a real run (an outcome may be taken in well after the turn
        began), the turn's time when a test steps the loop."""
        return time.monotonic() if self._real_time else self._now

    def _next_pending(self, after: int, limit: int) -> list[tuple[int, str, str, str, int]]:
        assert self.store is not None
        return self.store.next_pending(after, limit)

    def _next_first(self, after: int | None, limit: int) -> list[tuple[int, int, str, str, str, int]]:
        assert self.store is not None
        return self.store.next_first(after, limit)

    def _save_control_offset(self, offset: int, identity: str | None) -> None:
        """Store how far control.jsonl is read (and which file that offset is in)."""
        assert self.store is not None
        if self.committer is None:  # not running (yet): nobody else writes
            with self.store.transaction():
                self.store.set_meta("control_offset", offset)
                if identity is not None:
                    self.store.set_meta("control_file", identity)
            return
        # In a group commit, after the changes the commands made. Waited for (the commands'
        # answers then show committed counts), unless an index is being built there: that
        # must not hold this thread up (engine/committer.py).
        self.staging.add_meta("control_offset", offset)
        if identity is not None:
            self.staging.add_meta("control_file", identity)
        self._commit(wait=not self.indexing)

    # -- taking work back ------------------------------------------------------------------

    def _on_outcomes(self, outcomes: list[Outcome]) -> None:  # BatchRunner's
        raise NotImplementedError

    def _give_up_worker(self, seq: int, what: str, halts: bool = True) -> bool:  # BatchRunner's
        raise NotImplementedError

    def _enter_stopping(self) -> None:  # Finishing's
        raise NotImplementedError

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
            flight = self._inflight.pop(seq, None)
            if flight is None:
                continue
            self._kill_reasons.pop(seq, None)
            if flight.skipped:
                continue  # skipped while it ran (in the store already): it stays skipped
            self.staging.add("requeue", (seq,))
            returned += 1
        if returned:
            self.staging.delta["processing"] -= returned
            self.staging.delta["pending"] += returned
            self._reset_scan()

    def _start_refused(self, reason: str) -> None:
        """An item came back unstarted: the system had no room to start its command (see
        :class:`.errors.NoRoomToStart`). Said once, then counted in live_progress.json."""
        count, _, _, since = self._refused if self.start_hold else (0, 0.0, 0, now_iso()[11:19])
        count += 1
        self._refused = (count, self._now, self.ended, since)
        if not self.start_hold:
            self._warn(
                f"{reason}: the items go back to pending and start as room frees"
                f" (fewer workers leave more: batchtui workers {self.batch.batch_id} N)"
            )
        self.start_hold = f"{reason}: {count} starts refused since {since}"

    def _room_again(self) -> None:
        """Commands start again: items ended since the last refused start, and none for a while."""
        count, at, ended, _ = self._refused
        if self.ended > ended and self._now - at >= START_HOLD_CLEAR_S:
            self._warn(f"commands start again ({count} starts were refused: their items went back to pending)")
            self.start_hold = None

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

    def _reset_scan(self) -> None:
        self.dispatcher.reset_scan()

    # -- group commits ---------------------------------------------------------------------

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
            self._check_files()
        self._settle(committer.drain() if wait else committer.done())

    def _check_files(self) -> None:
        """After each group commit, a stat or three: is the batch's folder still where this
        engine opened it, items.db still the file it opened, results.jsonl still what it wrote?
        A moved or deleted folder or store halts the run (its open files work on, but nothing
        will read them at these paths again); a damaged results.jsonl is rebuilt."""
        assert self.store is not None and self.results is not None
        if self._folder_moved():
            return  # the files below are gone with the folder
        damage = self.results.damage()  # one stat: is the file still what this engine wrote?
        if damage is not None:
            self._repair_results(damage)
        gone = self.store.damage()  # and items.db still the file it opened?
        if gone is not None and not self.halt_reason:
            self._halt(
                f"items.db {gone} while this engine ran: every result so far is in results.jsonl;"
                f" `{shell_line('batchtui', 'recover', self.batch.batch_id)}` rebuilds the store from it, then resume"
            )

    def _folder_moved(self) -> bool:
        """Whether the batch's folder left where this engine took it (then the run halts)."""
        reason = self.folder.moved()
        if reason is not None:
            self._halt(reason)
        return reason is not None

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
            self.error_tally.settled(job.rows.get("failed", ()))  # with counts.failed, never apart
            self.staging.settled(job)
            self.commit_seq = job.commit_seq
            if job.ddl is not None:
                self.indexing = False
                log.info("items indexed slowest first (%.1f s, while the run went on)", job.ddl_s or 0.0)
            # What ended, not the batch's finished count: a retry takes items back from it, and
            # the rate went down (below zero) while items went on ending at the same pace.
            self.ended += len(job.rows.get("complete", ())) + len(job.rows.get("failed", ()))
        self.eta.finished(self.ended, self._clock())
        self._write_live()

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

    # -- the live files --------------------------------------------------------------------

    def descriptor_kind(self) -> str:
        """What each worker of this run holds open in the engine, for :func:`.fdlimit.ensure`."""
        executor = self.config.resolved_executor(self.spec.kind)
        if executor == "process":
            return "process"
        return "shell" if executor == "thread" and self.spec.kind == "shell" else ""

    def _warn(self, text: str) -> None:
        log.warning(text)
        self.warnings.append(f"{now_iso()} {text}")

    def _periodic(self) -> None:
        now = self._now
        if self.start_hold:
            self._room_again()
        if self.staging.first is None and now - self._marks_stamp >= MARK_AFTER_S / 2:
            # Nothing else to commit: long-running items still show as 'processing' in views.
            self._marks_stamp = now
            if self._stage_marks(now):
                self.staging.first = now
                self._commit(wait=False)
        self._write_live()
        if self.publisher.manifest_due(self.counts):
            self._write_manifest()

    def live(self) -> LiveProgress:
        """The run's live snapshot (engine/snapshot.py), as live_progress.json and views get it."""
        return snapshot(self)

    def _write_live(self, force: bool = False) -> None:
        try:
            self.publisher.write_live(force)
        except FileNotFoundError:
            if not self._folder_moved():
                raise

    def _write_manifest(self) -> None:
        try:
            self.manifest = self.publisher.write_manifest(
                self.manifest,
                self.config.fsync,
                state=self.state,
                totals=self.counts.model_copy(),
                halt_reason=self.halt_reason,
            )
        except FileNotFoundError:
            if not self._folder_moved():
                raise
