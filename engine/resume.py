"""Planning a resume: which batch, its lock, the config it runs with, what this resume changes.

Resuming a batch is a handful of decisions taken in a fixed order, each of which can refuse:

1. which batch: the one named, or the newest resumable one that no engine runs (said, with why);
2. its engine lock, taken before the batch is read and held until the engine ends (the runner
   gets it), so a batch another engine runs is refused first, naming who runs it;
3. the stored config merged with the flags: only operational knobs (workers, rate, timeout,
   thresholds) may change, the rest is the batch's identity (UserError naming what may not);
4. a batch whose creation was cut short (no items.db, nothing ran) gets its store built first;
5. items.db's counts, which say whether anything is left to do.

:func:`plan_resume` takes them and returns a :class:`ResumePlan`, which the CLI's ``resume``
prints and executes (the preflight, then the rescan and retry-failed, which a refused resume
never makes; then detach or run) and the TUI's resume runs. Nothing here prints: notes go to
``say`` (the CLI's stderr, a background engine's engine.log).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .batchdir import BatchDir, BatchLock, BatchLocked, now_iso
from .batches import BatchScope, resolve_batch
from .config import OPERATIONAL, BatchConfig, load_config, operational_overrides, stored_config
from .errors import UserError
from .fmt import clean, count
from .models import BatchState, Counts, LockInfo, Manifest
from .preflight import Preflight, preflight_resume
from .processors import ProcessorSpec
from .resumable import NothingToResume, choose_resumable
from .runner import BatchRunner
from .sources import SourceSpec
from .store import ItemStore, ScanOutcome


def _quiet(_line: str) -> None:
    """The default ``say``: a caller that shows nothing (the TUI)."""


@dataclass(frozen=True)
class ResumePlan:
    """What a resume will do, decided before anything runs (see the module docstring).

    ``lock`` is held (None when the caller asked not to hold it: a detached engine takes it
    itself); whoever executes the plan hands it to the runner or releases it.
    """

    batch: BatchDir
    manifest: Manifest
    #: The stored config with this resume's operational overrides.
    config: BatchConfig
    #: The operational knobs this resume changes, {name: new value} (recorded in the history).
    overrides: dict[str, Any]
    #: items.db's counts before the resume (before retry-failed requeues anything).
    counts: Counts
    lock: BatchLock | None
    retry_failed: bool = False
    #: Why this batch was chosen, when none was named.
    reason: str | None = None
    #: items.db was built from the source first (the batch's creation was cut short).
    rebuilt: bool = False
    #: ``--rescan`` was asked for (:meth:`rescanned` reads the sources; ``--drop-missing``).
    rescan_asked: bool = False
    drop_missing: bool = False
    #: What the rescan found (new keys, those missing), once :meth:`rescanned` read the sources.
    rescan: ScanOutcome | None = None
    #: An ``add`` was cut short (killed): the engine finishes it before it runs anything.
    cut_add: bool = False
    #: The items' costs so far (the sum, the largest), read when a cost cap is set.
    cost: tuple[float, float] = (0.0, 0.0)

    @property
    def source(self) -> SourceSpec:
        return SourceSpec.model_validate(self.manifest.source)

    @property
    def processor(self) -> ProcessorSpec:
        return ProcessorSpec.model_validate(self.manifest.processor)

    @property
    def nothing_to_do(self) -> bool:
        """The batch is finished with no item pending, no failed item is to be retried, and no
        rescan is still to read its sources (what it finds is to do)."""
        c = self.counts
        return (
            not self.cut_add
            and not (self.rescan_asked and self.rescan is None)
            and self.manifest.state == BatchState.FINISHED
            and not (c.pending or c.processing)
            and not (self.retry_failed and c.failed)
        )

    @property
    def to_run(self) -> int:
        """How many items this resume runs: those pending, those a crash left processing, and the
        failed ones when it retries them (as counted when planned)."""
        c = self.counts
        return c.pending + c.processing + (c.failed if self.retry_failed else 0)

    def halts_at_once(self, config: BatchConfig | None = None) -> tuple[str, str] | None:
        """Why this resume halts before anything starts with ``config`` (default: the plan's),
        and what would let it run (:func:`halts_before_start`); None when it does not."""
        return halts_before_start(config or self.config, self.counts, self.cost, self.retry_failed)

    def rescanned(self, say: Callable[[str], None] = _quiet) -> ResumePlan:
        """This plan once ``--rescan`` read the batch's sources again (:func:`.growing.rescan_batch`:
        new keys become pending items, missing ones are counted, and skipped with
        ``--drop-missing``), under the plan's lock, with its counts read again; the plan itself
        when no rescan was asked for or it was done. Called after the preflight: a resume it
        refuses adds nothing to the batch (the new keys were pending after a command that did
        not run, and ran at the next resume of another kind)."""
        if not self.rescan_asked or self.rescan is not None:
            return self
        scanned = _rescan(self.batch, self.lock, drop_missing=self.drop_missing, durable=self.config.fsync, say=say)
        counts, cut_add, cost = _store_state(self.batch, self.config, _quiet)  # said when planned
        return replace(
            self, manifest=self.batch.read_manifest(), counts=counts, cut_add=cut_add, cost=cost, rescan=scanned
        )

    def requeue_failed(self) -> int:
        """Put the failed items back to pending under the batch's lock (the plan's, or taken for
        the change and let go); how many were requeued (never one no retry can make succeed:
        store.selection.RETRIABLE; :meth:`left_failed` says which are left)."""
        from .control import mark_changing, write_views

        lock = self.lock if self.lock is not None else BatchLock(self.batch.lock)
        lock.acquire()
        try:
            durable = self.config.fsync
            manifest = mark_changing(self.batch, self.batch.read_manifest(), durable=durable)
            store = ItemStore.open(self.batch.items_db, durable=durable)
            try:
                requeued = len(store.retry_failed())
                write_views(self.batch, manifest, store, durable=durable)  # a kill before the run: views agree
                return requeued
            finally:
                store.close()
        finally:
            if lock is not self.lock:
                lock.release()

    def left_failed(self) -> dict[str, int]:
        """The failed items a retry leaves failed (no retry can make them succeed), by error
        type: for :func:`.client.invalid_note`."""
        from .store.queries import ItemFilter, Selection

        store = ItemStore.open_readonly(self.batch.items_db)
        try:
            return store.unretriable_types(Selection.of(ItemFilter(status="failed")))
        finally:
            store.close()

    def preflight(self) -> Preflight:
        """The checks before the engine starts (the full store check only after a crash)."""
        return preflight_resume(
            self.config, self.batch.path, self.source, self.processor, thorough=None, last=self.manifest.config
        )

    def runner(self, action: str = "resume", *, handle_signals: bool = False, paused: bool = False) -> BatchRunner:
        """The engine for this plan, holding the plan's lock (its own acquire returns at once);
        ``paused``: it begins paused (see RunState.start_paused)."""
        runner = BatchRunner(
            self.batch,
            config=self.config,
            action=action,
            overrides=self.overrides,
            handle_signals=handle_signals,
            start_paused=paused,
        )
        if self.lock is not None:
            runner.lock = self.lock
        return runner

    def repair_results(self) -> list[str]:
        """For a batch with nothing to run: results.jsonl checked against items.db as an engine
        checks it when it starts (deleted, cut or with lines past the committed offset: rebuilt
        from the store, or the lines adopted or cut), under the plan's lock. The warnings given
        (none when the file is whole). Without it, a finished batch whose results.jsonl was
        deleted stayed so: `resume` said "nothing to resume" and no engine would ever start."""
        from .files import ResultsLog
        from .resultscheck import adopt_tail

        path = self.batch.results
        store = ItemStore.open(self.batch.items_db, durable=self.config.fsync)
        try:
            offset = int(store.get_meta("results_offset", 0) or 0)
            try:
                if path.stat().st_size == offset:
                    return []
            except FileNotFoundError:
                pass
            log = ResultsLog(path)
            try:
                return adopt_tail(store, log, offset).messages(after_crash=False)
            finally:
                log.close()
        finally:
            store.close()

    def release(self) -> None:
        """Let go of the lock when the plan is not run after all."""
        if self.lock is not None:
            self.lock.release()


def resume_config(
    bdir: BatchDir,
    manifest: Manifest,
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    on_file: Callable[[Path, bool], None] | None = None,
) -> tuple[BatchConfig, BatchConfig]:
    """The batch's stored config, and the one a resume with the operational ``flags`` runs
    with (``batchtui check --batch`` checks that one too). UserError for a flag that may not
    change on resume."""
    stored = stored_config(manifest.config, bdir.manifest)
    overrides_in = {k: v for k, v in (flags or {}).items() if k in OPERATIONAL}
    new = load_config(
        overrides_in, base=stored.model_dump(mode="json"), config_file=config_file, environ={}, on_file=on_file
    )
    # Only operational knobs may change on resume; the rest is the batch's identity.
    old = stored.model_dump(mode="json")
    changed = sorted(k for k, v in new.model_dump(mode="json").items() if k not in OPERATIONAL and old.get(k) != v)
    if changed:
        raise UserError(f"cannot change {', '.join(changed)} on resume (only operational settings may change)")
    if new.limit_by != stored.limit_by:
        from .limits import check_limit_source

        check_limit_source(new.limit_by, (str(e.get("kind")) for e in manifest.source.get("entries", ())))
    return stored, new


def costs_so_far(bdir: BatchDir, config: BatchConfig) -> tuple[float, float]:
    """The batch's items' costs so far (the sum, the largest) when ``config`` caps the cost,
    else (0, 0) unread; StoreError when the store cannot be read."""
    if config.max_cost is None:
        return 0.0, 0.0
    store = ItemStore.open_readonly(bdir.items_db)
    try:
        return store.cost_totals()
    finally:
        store.close()


def halts_before_start(
    config: BatchConfig, counts: Counts, cost: tuple[float, float], retry_failed: bool = False
) -> tuple[str, str] | None:
    """Why a run of a batch with these ``counts`` and costs so far (the sum, the largest) halts
    before anything starts under ``config``, and what would let it run; None when it does not:
    its failure rate over the limit already (the failed items count unless retried; those no
    retry can make succeed are few, and left out here), or its spend at --max-cost (not one
    more item fits). What BatchRunner.step and the dispatch decide first."""
    from .policy import HaltCheck

    check = HaltCheck(config)
    rate = check.failure_rate(counts.complete, 0 if retry_failed else counts.failed)
    if rate:
        return rate, "raise the failure-rate limit, or retry the failed items"
    budget = check.budget(cost[0], 0, cost[1])
    if budget:
        return budget, "resume with a higher --max-cost"
    return None


def plan_resume(
    output_dir: Path | BatchScope,
    batch: str | Path | BatchDir | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    config_file: str | None = None,
    retry_failed: bool = False,
    rescan: bool = False,
    drop_missing: bool = False,
    hold: bool = True,
    lock_wait: float | None = None,
    lock_try: float = 1.0,
    inherited_lock: tuple[int, int | None] | None = None,
    on_file: Callable[[Path, bool], None] | None = None,
    say: Callable[[str], None] = _quiet,
    detach: bool = False,
) -> ResumePlan:
    """Decide a resume of ``batch`` (a path, an id or part of one; None: the newest resumable
    batch in ``output_dir`` no engine runs) with the operational ``flags`` given.

    ``hold``: take the batch's lock and keep it in the plan (False when another process will
    run the engine). ``lock_wait``: how long to wait for the engine it takes over from (the
    TUI's hand-off), said to ``say`` as it goes; BatchLocked when it does not let go (without
    it, ``lock_try`` seconds: the TUI tries briefly, its screen waits on it).
    UserError for a flag that may not change on resume, a bad stored config, a batch that
    cannot be found; the lock is let go of when planning fails. ``inherited_lock``: the
    descriptors of the lock a ``--detach`` handed to this engine (BatchLock.adopt), used when
    they are this batch's; else the lock is taken as usual.
    ``detach``: the lock is handed to a background engine once planned (the lock file says so,
    for what the views tell of a command sent meanwhile).
    ``rescan``: the plan is to read the batch's sources again (``drop_missing``: and skip the
    items no longer there), which :meth:`ResumePlan.rescanned` does once the preflight passed.
    """
    if drop_missing and not rescan:
        raise UserError("--drop-missing applies only with --rescan")

    handed = [inherited_lock] if inherited_lock is not None else []

    def take(bdir: BatchDir, wait: float | None) -> BatchLock:
        if handed:
            lock = BatchLock(bdir.lock)
            if lock.adopt(*handed.pop()) is not None:
                return lock
        return _hold_lock(bdir, wait, say, lock_try, hands_over=detach)

    try:
        bdir, lock, reason = _target(batch, output_dir, hold=hold, lock_wait=lock_wait, take=take, say=say)
    except NothingToResume as exc:  # a finished batch is never chosen: both flags are for one
        what = "rescan" if rescan else "retry the failed items of" if retry_failed else None
        if what is None or not str(exc).startswith("no unfinished batch"):
            raise
        flag = "--rescan" if rescan else "--retry-failed"
        hint = f"to {what} a finished batch, name it: `batchtui resume ID {flag}` (`batchtui ls` lists them)"
        raise NothingToResume(f"{exc}; {hint}") from None
    try:
        manifest = bdir.read_manifest()
        stored, new = resume_config(bdir, manifest, flags, config_file=config_file, on_file=on_file)
        rebuilt = False
        if not bdir.items_db.exists() and not _has_results(bdir) and manifest.state == BatchState.CREATED:
            # The engine died while creating the batch, before items.db existed: nothing ran,
            # so building the store from the source is exactly what the creation would have done.
            from .recover import recover_batch  # this rare path only: it loads the sources' readers

            say(f"batch {bdir.batch_id} has no items.db yet (creation was cut short): building it")
            if lock is not None:
                lock.release()  # recover_batch takes the lock itself
                lock = None
            recover_batch(bdir)
            if hold:
                lock = take(bdir, lock_wait)
            rebuilt = True
        counts, cut_add, cost = _store_state(bdir, new, say)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return ResumePlan(
        batch=bdir,
        manifest=manifest,
        config=new,
        overrides=operational_overrides(stored, new),
        counts=counts,
        lock=lock,
        retry_failed=retry_failed,
        reason=reason,
        rebuilt=rebuilt,
        rescan_asked=rescan,
        drop_missing=drop_missing,
        cut_add=cut_add,
        cost=cost,
    )


def _store_state(
    bdir: BatchDir, config: BatchConfig, say: Callable[[str], None]
) -> tuple[Counts, bool, tuple[float, float]]:
    """items.db's counts, whether an ``add`` was cut short (said), and the items' costs (the
    sum, the largest) when ``config`` caps them."""
    store = ItemStore.open_readonly(bdir.items_db)
    try:
        counts = store.counts()
        cut_add = bool(store.get_meta("adding"))
        cost = store.cost_totals() if config.max_cost is not None else (0.0, 0.0)
    finally:
        store.close()
    if cut_add:
        say(f"batch {bdir.batch_id}: an add was cut short; the engine reads the rest of its source first")
    return counts, cut_add, cost


def _rescan(
    bdir: BatchDir, lock: BatchLock | None, *, drop_missing: bool, durable: bool, say: Callable[[str], None]
) -> ScanOutcome:
    """The rescan of a resume, under the plan's lock (or, for a detached engine, a lock taken
    for it and let go of after), said to ``say``."""
    from .enqueue import pipe_note
    from .growing import rescan_batch, source_pipes  # only a rescan loads the sources' readers

    held = lock if lock is not None else BatchLock(bdir.lock, engine=False)
    held.acquire()
    try:
        pipes = source_pipes(bdir.read_manifest())
        if pipes:
            say(f"rescan: {pipe_note(pipes, rescan=True)}")
        outcome = rescan_batch(bdir, drop_missing=drop_missing, durable=durable)
    finally:
        if held is not lock:
            held.release()
    say(f"rescan: {rescan_summary(outcome, drop_missing=drop_missing)}")
    return outcome


def rescan_summary(outcome: ScanOutcome, *, drop_missing: bool = False) -> str:
    """One line for a rescan: "3 new, 2 missing (skipped 2: seq 4 'a', ...), 1 duplicate dropped"."""
    text = f"{outcome.new} new, {outcome.missing_total} missing"
    if outcome.missing_total:
        shown = ", ".join(f"{seq} {clean(key)[:60]!r}" for seq, key in outcome.sample)
        more = ", ..." if outcome.missing_total > len(outcome.sample) else ""
        text += f" ({_missing_how(outcome, drop_missing)}; seq {shown}{more})"
    dup = outcome.duplicates
    return text + f", {count(dup, 'duplicate')} dropped"


def _missing_how(outcome: ScanOutcome, drop_missing: bool) -> str:
    """What became of the missing items: --drop-missing never skips a complete one (nor says it
    would), so those are counted as kept."""
    done, settled = outcome.missing.get("complete", 0), outcome.missing.get("skipped", 0)
    if not drop_missing:
        open_ = outcome.missing_total - done - settled
        if not open_:
            return "kept"
        return (
            "kept; --drop-missing skips them"
            if open_ == outcome.missing_total
            else f"kept; --drop-missing skips the {open_} not done"
        )
    parts = [f"skipped {outcome.skipped}"] if outcome.skipped else []
    parts += [f"{done} complete kept"] if done else []
    parts += [f"{settled} skipped before"] if settled else []
    return ", ".join(parts)


def _target(
    arg: str | Path | BatchDir | None,
    out: Path | BatchScope,
    *,
    hold: bool,
    lock_wait: float | None,
    take: Callable[[BatchDir, float | None], BatchLock],
    say: Callable[[str], None],
) -> tuple[BatchDir, BatchLock | None, str | None]:
    """The batch to resume, its lock when ``hold`` (held), and why it was chosen when not named.

    Without an arg it is the newest resumable batch that no engine runs. One that an engine
    took between the choice and the lock is passed over too.
    """
    if isinstance(arg, BatchDir):
        return arg, (take(arg, lock_wait) if hold else None), None
    if arg is not None:  # an empty one is refused there, never read as "none given"
        bdir = resolve_batch(str(arg), out, unfinished=True)
        return bdir, (take(bdir, lock_wait) if hold else None), None
    tried: set[Path] = set()
    while True:
        choice = choose_resumable(out, exclude=frozenset(tried))
        lock = None
        if hold:
            try:
                lock = take(choice.batch, None)
            except BatchLocked:
                tried.add(choice.batch.path)
                continue
        reason = choice.reason()
        say(f"resuming {choice.batch.batch_id} ({reason})")
        return choice.batch, lock, reason


def _hold_lock(
    bdir: BatchDir, wait: float | None, say: Callable[[str], None], lock_try: float = 1.0, *, hands_over: bool = False
) -> BatchLock:
    """Take ``bdir``'s engine lock. ``wait`` (the TUI's hand-off engine): how long to wait for
    the engine it takes over from to let go, said to ``say`` (engine.log) as it goes; without
    it the lock is tried for ``lock_try`` seconds (a viewer's brief probe may hold it)."""
    lock = BatchLock(bdir.lock, hands_over=hands_over)
    if not wait:
        lock.acquire(wait=lock_try)
        return lock
    t0 = time.monotonic()

    def waiting(holder: LockInfo | None) -> None:
        who = f"pid {holder.pid} on {holder.host}" if holder else "another process"
        say(f"[{now_iso()}] waiting up to {wait:.0f} s for {who} to let go of batch {bdir.batch_id}")

    try:
        lock.acquire(wait=wait, on_wait=waiting)
    except BatchLocked as exc:
        exc.args = (f"[{now_iso()}] {exc} (waited {wait:.0f} s to take the batch over)",)
        raise
    if time.monotonic() - t0 > 0.5:
        say(f"[{now_iso()}] took batch {bdir.batch_id} over after {time.monotonic() - t0:.1f} s")
    return lock


def _has_results(bdir: BatchDir) -> bool:
    try:
        return bdir.results.stat().st_size > 0
    except FileNotFoundError:
        return False


__all__ = ["ResumePlan", "plan_resume", "rescan_summary"]
