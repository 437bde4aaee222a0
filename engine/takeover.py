"""Taking a batch over, and letting it go.

An engine that takes a batch first makes good what the last one left: a rewrite of
results.jsonl a kill cut short, a torn last line, an enqueue that died half way (the rest of the
source is read), items left 'processing' (back to pending), result lines past the committed
offset (checked, then adopted: never redone). Then it records the run in the manifest's history
and starts the committer and the executor. Letting go undoes it in the reverse order; the lock
goes last but one (the reaper's mark outlives it, see :meth:`TakeOver.close`).
"""

from __future__ import annotations

import array
import logging
import os
import threading
import time
from typing import Final

from . import fdlimit, staging, warmstart
from .batchdir import HOST, BatchLock, iso_at, now_iso
from .committer import Committer
from .control import ControlWatcher
from .control_file import ControlReader
from .dask_leave import cluster_left, leave_cluster
from .earlyhalt import EarlyHalt
from .enqueue import pipe_note, read_rest, source_unreadable
from .errors import WorkerLost, classify
from .executors import WorkerInitError
from .files import ResultsLog
from .fmt import count
from .grouping import normalize_message
from .growing import finish_cut_add, pending_add
from .inflight import InflightFile, left_by_dead_engine
from .interrupts import held_signals
from .models import (
    ACTIVE_STATES,
    BatchState,
    HistoryEntry,
)
from .reaper import Reaper
from .resultscheck import adopt_tail, finish_staged
from .runstate import RunState
from .sources import SourceSpec, describe, named_pipes
from .store import ItemStore
from .store.queries import Selection
from .timing import batch_timing, close_dead_runs

log = logging.getLogger("batchtui.engine")

#: The failure of an attempt a dead engine was running (engine/inflight.py).
DIED_WHILE_RUNNING: Final = (
    "the engine died while this item ran (a crash in the processor's own process, os._exit,"
    " the OOM killer or a kill -9): counted as an attempt"
)


class TakeOver(RunState):
    """Part of :class:`~batchtui.engine.runner.BatchRunner`: :meth:`open` and :meth:`close`."""

    #: Where the thread executor's workers note the items they run (engine/inflight.py).
    inflight: InflightFile | None = None

    def open(self, *, watch: bool = False) -> None:
        """Take the batch: its lock, its files, the executor. :meth:`run` calls it; a test may
        call it, then drive the loop with :meth:`step`, then :meth:`finish` and :meth:`close`."""
        self.lock.acquire()
        fdlimit.reserve_spare()  # for the final files of a halt when descriptors run out
        # Before the executor starts (the shell processor copies the environment once): every
        # process of this run carries the reaper's mark, and dies with the run, kill -9 included.
        # Each made and started whole (a Ctrl-C between the two left close() a reaper whose mark
        # was never set, a watcher never started: tracebacks, exit 1): see engine/interrupts.py.
        with held_signals():
            self.reaper = Reaper(self.batch.path, lock_fd=self.lock.fileno(), token=warmstart.claim_token())
            self.reaper.start()
        # Where the last engine stopped reading control.jsonl is in the store (_setup).
        self.control.reader = ControlReader(self.batch.control)
        if watch:
            with held_signals():
                self.watcher = ControlWatcher(self.batch.path, lambda: self.completions.put([]))
                self.watcher.start()
        self._setup()

    def close(self) -> None:
        """Let go of the batch: the watcher, the workers, the store, the files, the lock."""
        if self.watcher is not None:
            self.watcher.stop(wait=False)  # joined last: its end takes a while (see its stop())
        if self.executor is not None:
            self.executor.shutdown(wait=1.0)
        if self.committer is not None:
            self.committer.close()
        if self.store is not None:
            self.store.close()
        if self.results is not None:
            self.results.close()
        if self.inflight is not None:
            # Every item this engine ran is settled in the store. Calls a stop gave up on
            # (_abandon_in_flight) are back to pending already: they may still run in this
            # process, but no engine died, and none is charged for them.
            self.inflight.close(forget=True)
            self.inflight = None
        here = getattr(self.executor, "HELD_HERE", False)
        if here and self.executor.held():  # type: ignore[union-attr]
            # Calls given up (ThreadExecutor.abandon) still run in this process: as for those a
            # stop gave up on, no other engine may take the batch and run them again meanwhile.
            self._abandoned = True
        if not self._abandoned:
            self.lock.release()
        elif here:  # the lock goes once those calls have returned (or with this process)
            held = [t for t in self.executor.threads if t.is_alive()]  # type: ignore[union-attr]
            threading.Thread(
                target=_release_after, args=(held, self.lock), name="batchtui-release", daemon=True
            ).start()
        if self.reaper is not None:  # after the release: until then no other engine may take the batch
            self.reaper.close(unlock=not self._abandoned)
            self.reaper = None
        fdlimit.release_spare()
        if self.watcher is not None:
            self.watcher.stop()

    def _setup(self) -> None:
        durable = self.config.fsync
        # The items a dead engine was running: read before this run's own file replaces it.
        dead = left_by_dead_engine(self.batch.path)
        # This run begins now that it holds the batch (a runner may be made well before it runs,
        # the app's for one): its time is counted from here.
        self._t0, self._started_at = time.monotonic(), now_iso()
        self.memory.begin_run()  # and its CPU
        # Before the executor opens anything: room for the workers' open files (items failed
        # with EMFILE under a low soft limit: see .fdlimit), or said when there is none.
        short = fdlimit.ensure(self.config.workers, self.descriptor_kind())
        if short:
            self._warn(short)
        # A resume that moves the batch off the dask cluster it last ran on: nothing of the batch
        # may still run there (ClusterStillRuns refuses it, before anything changed).
        left = cluster_left(self.manifest.config, self.config)
        if left is not None:
            note = leave_cluster(left, self.batch.path, self.spec.kind)
            if note:
                self._warn(note)
        # Made first: a process pool's workers (a fresh interpreter each) start while the store
        # and the files are opened below; executor.start() waits for them.
        self.executor = self._executor_factory(self.spec, self.config, self.completions)
        send_output_to = getattr(self.executor, "send_output_to", None)
        if send_output_to is not None:
            send_output_to(str(self.batch.path))
        prelaunch = getattr(self.executor, "prelaunch", None)
        if prelaunch is not None:
            prelaunch()
        warmstart.discard()  # workers started ahead that this run did not adopt
        # As the last engine left it: a run killed -9 ended at its last write (see .timing).
        last_live = self.batch.read_live()
        self.store = store = ItemStore.open(self.batch.items_db, durable=durable)
        # A rewrite of results.jsonl a kill cut short is finished (or dropped) before it is read.
        finish_staged(self.batch.results, int(store.get_meta("results_offset", 0) or 0))
        self.results = self.outcomes.results = ResultsLog(self.batch.results)
        if self.results.torn_bytes:
            self._warn(f"cut a torn last line ({self.results.torn_bytes} bytes) from results.jsonl")
        if not store.get_meta("enqueue_done"):
            source = SourceSpec.model_validate(self.manifest.source)
            dropped = read_rest(store, source, batch_id=self.batch.batch_id, on_wait=self.lock.touch, say=self._warn)
            self.manifest = self.manifest.model_copy(
                update={"duplicates_dropped": dropped, "unreadable": source_unreadable(store)}
            )
        cut_add = pending_add(store)
        if cut_add is not None:  # an `add` killed half-way: finished before anything runs, as above
            added_spec = SourceSpec.model_validate(cut_add["spec"])
            pipes = named_pipes(e.path for e in added_spec.entries)
            how = f"; {pipe_note(pipes)}" if pipes else ""
            self._warn(
                f"an add to this batch was cut short: reading the rest of its source ({describe(added_spec)}){how}"
            )
            self.manifest, told = finish_cut_add(self.batch, self.manifest, store, durable)
            self._warn(told)
        if dead:
            self._charge_dead(dead)
        requeued = store.requeue_processing()
        if requeued:
            log.info("requeued %d items left processing by a previous engine", requeued)
        if store.has_first():  # items put first (prioritize) while no engine ran
            self.dispatcher.prioritized()
        self.commit_seq = int(store.get_meta("commit_seq", 0) or 0)
        results_notes = self._adopt_results(int(store.get_meta("results_offset", 0) or 0))
        self.counts = store.counts()
        if self.counts.failed:
            groups = store.error_groups(None)
            self.error_tally.reset(groups)
            if self.events.wants("new-group"):  # the groups of earlier runs are not new
                self.events.seed_groups(g.id for g in groups)
        if self.counts.complete:  # a new batch has spent nothing: skip two scans of the table
            self.outcomes.cost_spent, self.outcomes.max_item_cost = store.cost_totals()
        self.outcomes.cost_known = self.counts.complete > 0
        # Every complete item of a batch that had none when this run began completes in this
        # run: their durations are kept here for the report, instead of read back at the end.
        self.outcomes.durations = array.array("d") if self.counts.complete == 0 else None
        if self.timeouts.rule is not None and self.counts.complete:
            self.timeouts.seed(store.durations())  # --timeout P%: the earlier runs' successes count
        self.eta.finished(self.ended, self._clock())  # the run's start

        last_config = self.manifest.config
        history = close_dead_runs(self.manifest.history, last_live)
        self.before_s = batch_timing(history, self.counts).active_s  # the batch's time before this run
        entry = HistoryEntry(
            action="resume" if self.action == "resume" else "run",
            at=self._started_at,
            pid=os.getpid(),
            host=HOST,
            overrides=self.overrides,
            notes=results_notes,
        )
        if self.start_paused:
            self.paused = True
            self.state = BatchState.PAUSED
        self.manifest = self.manifest.model_copy(
            update={
                "state": self.state,
                "started_at": self.manifest.started_at or self._started_at,
                "ended_at": None,
                "halt_reason": None,
                "changing": None,  # an offline change killed half-way: the totals below are the store's
                "config": self.config.model_dump(mode="json"),
                "history": [*history, entry],
                "totals": self.counts,
            }
        )
        self.control.take_over(store.get_meta("control_offset"), store.get_meta("control_file"), self.lock.info)
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
        if hasattr(self.executor, "early_halt"):  # a fatal error halts any run
            self._early_halt = EarlyHalt(
                self.halts.failure_rate,
                self.counts.complete,
                self.counts.failed,
                self.config.max_attempts,
                self.config.min_items,
                rate_watched=self.config.max_failure_rate is not None,
                items=self.counts.total,
            )
            self.executor.early_halt = self._early_halt
        rate, least = self.config.max_failure_rate, self.config.min_items
        if rate is not None and self.counts.total < least:
            self._warn(
                f"--max-failure-rate never halts this batch: it is judged from --min-items {least} items on, "
                f"and the batch has {self.counts.total}"
            )
        keep_inflight = getattr(self.executor, "keep_inflight", None)
        if keep_inflight is not None:
            try:
                self.inflight = InflightFile(self.batch.path)
            except OSError as exc:  # the run goes on; an item that kills it is then not known
                self._warn(f"cannot keep {self.batch.path.name}/inflight: {exc.strerror or exc}")
            else:
                keep_inflight(self.inflight)
        orphans = getattr(self.executor, "orphans", None)
        if orphans is not None:  # dask: only an earlier run of the batch can have left items on a cluster
            orphans.earlier = len(self.manifest.history) > 1
        try:
            self.executor.start()
        except WorkerInitError as exc:
            self.halt_reason = f"worker start failed: {exc}"
            # A run that never started leaves the settings the batch runs with as the last run
            # that did (a resume's --scheduler that never answered is not where it last ran).
            self.manifest = self.manifest.model_copy(update={"config": last_config})
            raise
        short = getattr(self.executor, "shortfall", None)
        if short:
            self._warn(short)

    def _charge_dead(self, dead: list[tuple[int, int, float]]) -> None:
        """Count the attempts the last engine was running when it died, and say so: an item
        that keeps taking the engine down fails at --max-attempts, and the batch goes on."""
        assert self.store is not None
        info = classify(WorkerLost(DIED_WHILE_RUNNING))
        runs = [(seq, attempt, iso_at(at)) for seq, attempt, at in dead]
        error = (info.error_type, info.category, info.message, info.detail)
        charged = self.store.charge_dead_runs(
            runs, error, normalize_message(info.message), self.config.max_attempts, now_iso()
        )
        if not charged:
            return
        # Items that were running at more than one death go first, and one at a time: beside
        # each other (or beside items that did nothing wrong), one that takes the engine down
        # again would count an attempt of every item in flight with it, and only an item that
        # dies alone is known to be the cause (charge_dead_runs fails no other). Items running
        # at one death only go on as the others do: that death was most likely no item's (a
        # kill -9, a reboot), and running them one at a time would cost a long batch dearly.
        suspects = [seq for seq, _attempt, deaths, failed in charged if deaths > 1 and not failed]
        if suspects:
            self.store.prioritize(Selection.of_seqs(suspects))
            self.suspects = set(suspects)
        shown = ", ".join(
            f"#{seq} (failed: it was running, alone, at {deaths} engine deaths)"
            if failed
            else f"#{seq} (attempt {attempt}{f', running at {deaths} deaths' if deaths > 1 else ''})"
            for seq, attempt, deaths, failed in charged[:10]
        )
        more = f" and {len(charged) - 10} more" if len(charged) > 10 else ""
        again = {0: "", 1: "; it runs again first, alone"}.get(len(suspects), "; they run again first, one at a time")
        self._warn(
            f"the last engine died while {count(len(charged), 'item')} ran: {shown}{more};"
            " each such attempt counts (WorkerLost): an item running at two deaths runs again alone,"
            f" and one that dies alone fails at --max-attempts {self.config.max_attempts}{again}"
        )

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


def _release_after(threads: list[threading.Thread], lock: BatchLock) -> None:
    """Let the batch go once ``threads`` (workers holding calls this engine could not stop) have
    ended: a long-lived process, the dashboard's, may then resume it in place."""
    for thread in threads:
        thread.join()
    lock.release()
