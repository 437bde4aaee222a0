"""The control channel: ``control.jsonl`` in the batch directory.

Clients (the TUI, the CLI) append one JSON command a line with a single ``write`` on an
``O_APPEND`` descriptor, so concurrent writers never interleave. The engine reads new lines
from where it last stopped, applies them on its runner thread, and acknowledges each id in
live_progress.json (``control_ack``, ``acked``, ``control_results``).

The engine learns of new lines from watchfiles (on the batch *directory*, filtered to this file
name: watching the file itself would miss atomic renames) and, as a fallback, from a ``stat`` in
its loop, so a command takes effect within a loop turn even where inotify is unavailable.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from . import tasklimit
from .batchdir import BatchDir, now_iso
from .control_file import open_control
from .files import read_model
from .fmt import cut_percent
from .fmt import fmt_duration as fmt_age
from .liveness import EngineStatus, Liveness
from .models import BatchState, ControlCommand, ControlOp, LiveProgress, Manifest

if TYPE_CHECKING:
    from .inotify import FolderWatch

CONTROL_FILE: Final = "control.jsonl"
# A responsive engine acknowledges within a loop turn (a quarter second): past this, every view
# says the command was not acknowledged, and why.
ACK_TIMEOUT_S: Final = 5.0
#: How long an offline change waits for another brief holder of the lock (another offline
#: change, a recover) before it says the batch is busy.
OFFLINE_LOCK_WAIT_S: Final = 2.0


#: How an engine's answer to a command that took no effect begins (see steering.take_over);
#: the CLI exits 1 on it, as for a command not acknowledged.
NOT_APPLIED: Final = "not applied"


def new_command(
    op: ControlOp,
    *,
    seqs: Sequence[int] | None = None,
    filter: dict[str, Any] | None = None,
    value: Any = None,
    select: dict[str, Any] | None = None,
) -> ControlCommand:
    return ControlCommand(
        id=secrets.token_hex(6),
        ts=now_iso(),
        op=op,
        seqs=list(seqs) if seqs is not None else None,
        filter=filter,
        value=value,
        select=select,
    )


def append_command(batch: BatchDir, cmd: ControlCommand) -> None:
    """Append one command line (one write, O_APPEND: safe with concurrent writers).
    :class:`DamagedControl` when control.jsonl is not a regular file (a folder, a fifo, a link)."""
    line = orjson.dumps(cmd.model_dump(mode="json", exclude_none=True)) + b"\n"
    fd = open_control(batch.control, os.O_WRONLY | os.O_APPEND | os.O_CREAT, cmd.op)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def wait_for_ack(batch: BatchDir, cmd_id: str, timeout: float = 5.0) -> LiveProgress | None:
    """Poll live_progress.json until the engine acknowledges ``cmd_id``; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            live = read_model(batch.live_progress, LiveProgress, use_backup=False)
        except Exception:  # missing or mid-replace: try again
            live = None
        if live is not None and (live.control_ack == cmd_id or cmd_id in live.acked):
            return live
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def unacked_message(
    batch: BatchDir, what: str, op: ControlOp, waited: float, status: EngineStatus, *, brief: bool = False
) -> str:
    """What every view says when ``what`` (a command with ``op``) got no ack in ``waited`` s.

    The command stays in control.jsonl: the engine applies it when it reads the file again
    (a stopped engine that is continued, a hung one that recovers). If that engine ends first,
    a skip or retry is applied by the next engine on resume; the others were meant for it alone.
    """
    later = "applied when the batch is next resumed" if op in ("skip", "retry") else "dropped"
    holder = status.holder
    if holder is not None and holder.hands_over and status.process != "gone":
        # A --detach still reading the sources (or planning): the engine it starts takes the
        # command (it names the --detach as handed_from), whether or not this process lives.
        who = f"pid {holder.pid} on {holder.host}"
        if brief:
            return f"{what}: queued; a --detach ({who}) still prepares the batch, and its background engine applies it"
        return (
            f"{what} not acknowledged yet: {who}, a --detach, is still reading the batch's sources (or planning"
            f" it) and then hands the batch to a background engine, which applies the command when it starts."
            f" The command is queued in {batch.control} (if the --detach ends before it starts that engine,"
            f" killed say, the command is {later})"
        )
    if status.responding and holder is not None and _still_reading(batch, status):
        # It reads the batch's source (state "created", engine/reading.py): it reads the
        # commands once the source is read, before its first item runs.
        who = f"pid {holder.pid} on {holder.host}"
        if brief:
            return f"{what}: queued; the engine ({who}) still reads the batch's source and applies it once it is read"
        return (
            f"{what} not acknowledged yet: the engine ({who}) is still reading the batch's source, and applies"
            f" the command once the source is read, before any item runs. The command is queued in {batch.control}"
        )
    if status.liveness == Liveness.GONE:
        if brief:
            return f"{what}: not acknowledged; the engine has ended (a queued {op} is {later})"
        return f"{what} not acknowledged: the engine ended before reading it; a command it did not read is {later}"
    if brief:
        why = f"engine not responding for {fmt_age(status.silent_s)}" if not status.responding else "engine busy"
        return f"{what}: not acknowledged ({why}); queued in {CONTROL_FILE}, applied if the engine wakes"
    who = f"pid {status.holder.pid} on {status.holder.host}" if status.holder else "the engine"
    if status.responding:
        head = f"{what} not acknowledged: the engine ({who}) did not acknowledge it within {waited:g}s"
    else:
        head = (
            f"{what} not acknowledged (engine not responding for {fmt_age(status.silent_s)}):"
            f" {status.explain()}; it did not acknowledge within {waited:g}s"
        )
    end = (
        "or, if this engine ends first, when the batch is next resumed"
        if op in ("skip", "retry")
        else "dropped if this engine ends first"
    )
    return f"{head}. The command is queued in {batch.control} and applies when the engine reads it ({end})"


def _still_reading(batch: BatchDir, status: EngineStatus) -> bool:
    """Whether the engine holding ``batch`` still reads its source (engine/reading.py)."""
    from .reading import source_reading

    reading = source_reading(batch, status, batch.read_live())
    return reading is not None and reading.engine


def quiet_watchfiles() -> None:
    """watchfiles logs each change it sees at INFO ("1 change detected"). A ``--call`` module that
    configures logging (``logging.basicConfig(level=logging.INFO)``, imported here by the
    preflight) gave those lines a handler: they ran through the dashboard. batchtui's own
    watching is no news to the user: its logger says warnings only, unless a level was set."""
    import logging  # here: the steering verbs import this module, and stay light

    logger = logging.getLogger("watchfiles")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


class ControlWatcher:
    """A thread that calls ``poke()`` whenever control.jsonl changes.

    On Linux it watches with inotify (.inotify) the batch directory's entries and the writes of
    control.jsonl alone: the writes to items.db and results.jsonl, many a second, wake nothing.
    Elsewhere it uses watchfiles on the directory (filtered to the file). Either starts
    ``delay`` seconds after :meth:`start`: its imports (ctypes, about 15 ms with the watch made,
    on a thread the run's end would wait for; watchfiles and anyio, more) cost a short run more
    than all its items, and until then the runner's loop ``stat`` (at least every quarter
    second) picks commands up, as it does wherever no watcher can run. A run that ends within
    ``delay`` never loads either.
    """

    def __init__(self, batch_dir: Path, poke: Callable[[], None], *, delay: float = 0.5) -> None:
        self.batch_dir = batch_dir
        self.poke = poke
        self.delay = delay
        self._stop = threading.Event()
        self._inotify: FolderWatch | None = None
        #: Set once inotify's watches are in place (what happens from then on wakes it).
        self.watching = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batchtui-control-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self.delay > 0 and self._stop.wait(self.delay):
            return  # stopped before it began watching
        from . import inotify

        if not inotify.available():
            self._watch_watchfiles()
            return
        try:
            watch = inotify.FolderWatch(self.batch_dir, (CONTROL_FILE,), writes=(CONTROL_FILE,))
        except OSError:  # no inotify instance or watch left (the limits): the loop's stat works
            return
        with watch:
            self._inotify = watch
            if self._stop.is_set():
                return  # stop() came before the watch was there to stop
            self.watching.set()
            while watch.changes() is not None:
                self.poke()

    def _watch_watchfiles(self) -> None:
        left = tasklimit.room()
        if left is not None and left < tasklimit.WATCHER_MARGIN:
            return  # near a pids limit, watchfiles could abort the process (see .tasklimit)
        try:
            from watchfiles import watch
        except Exception:  # not installed, or no descriptor left to import it: the loop's stat still works
            return
        quiet_watchfiles()

        def only_control(_change: object, path: str) -> bool:
            return os.path.basename(path) == CONTROL_FILE

        try:
            for _changes in watch(
                self.batch_dir,
                watch_filter=only_control,
                # The batch dir changes all through a run (items.db, results.jsonl, the live
                # file): every yield is Python work and every step takes the GIL to look at
                # stop_event. 50 ms each keeps a command's wake-up under a tenth of a second
                # at 20 wake-ups a second, not 200.
                debounce=50,
                step=50,
                stop_event=self._stop,
                recursive=False,
                rust_timeout=500,
                yield_on_timeout=False,
                raise_interrupt=False,
            ):
                self.poke()
        except Exception:  # a failing watcher must never take the engine down
            return

    def stop(self, wait: bool = True) -> None:
        """Stop watching; ``wait=False`` returns at once, the thread ends meanwhile.

        Its end takes time in the kernel: closing an inotify instance that has watches waits for
        an SRCU grace period (``fsnotify_destroy_group``), 8-16 ms on this 2-core VM, during
        which the closing thread sleeps. The runner asks it to stop as its loop ends and joins
        it in :meth:`.TakeOver.close`, so that wait overlaps the final commit and files
        instead of adding to the run's end (a process's exit waits for it too)."""
        self._stop.set()
        watch = self._inotify
        if watch is not None:
            watch.stop()
        if wait:
            self._thread.join(timeout=2)


def apply_offline(
    batch: BatchDir, change: Callable[[Any], str], *, durable: bool = True, lock_wait: float = OFFLINE_LOCK_WAIT_S
) -> str:
    """Change the store of a batch no engine is running, under the batch lock.

    Afterwards the manifest's totals and live_progress.json's counts are rewritten from the
    store, so every view agrees with it. Raises BatchLocked if an engine holds the batch.
    """
    from .batchdir import BatchLock
    from .store import ItemStore

    lock = BatchLock(batch.lock, engine=False)
    lock.acquire(wait=lock_wait)
    try:
        # Read first: a batch of a newer batchtui (or a damaged one) is refused before its
        # store is touched.
        manifest = mark_changing(batch, batch.read_manifest(), durable=durable)
        store = ItemStore.open(batch.items_db, durable=durable)
        try:
            message = change(store)
            write_views(batch, manifest, store, durable=durable)
        finally:
            store.close()
        return message
    finally:
        lock.release()


def mark_changing(batch: BatchDir, manifest: Manifest, *, durable: bool = True) -> Manifest:
    """Before an offline change to the store (under the batch lock): the manifest says one is
    under way (``changing``), so that a change killed before :func:`write_views` leaves views
    that count in items.db, not totals from before it."""
    from .batchdir import now_iso
    from .files import write_model

    manifest = manifest.model_copy(update={"changing": now_iso()})
    write_model(batch.manifest, manifest, durable=durable, backup=True)
    return manifest


def _report_duplicates(batch: BatchDir, dropped: int, durable: bool) -> None:
    """report.json (the last run's) gets the batch's duplicate count when an add or a rescan
    changed it: every file says the manifest's (the next run's report is built from it)."""
    from .files import DamagedFile, read_model, write_model
    from .models import Report

    try:
        report = read_model(batch.report, Report, use_backup=False)
    except (FileNotFoundError, DamagedFile):
        return
    if report.duplicates_dropped != dropped:
        write_model(batch.report, report.model_copy(update={"duplicates_dropped": dropped}), durable=durable)


def write_views(batch: BatchDir, manifest: Manifest, store: Any, *, durable: bool = True, **update: Any) -> None:
    """After an offline change to ``store`` (under the batch lock): the manifest's totals (and
    the other fields in ``update``) and live_progress.json's counts and error breakdown are
    rewritten from the store, so every view agrees with it; the change is no longer under way."""
    from .files import write_model
    from .publish import LIVE_ERROR_GROUPS

    update.setdefault("changing", None)

    counts = store.counts()
    groups, by_type = store.error_groups(None), store.errors_by("error_type")
    if manifest.state == BatchState.FINISHED and counts.pending:
        # A retry or an add gave a finished batch work again: it is resumable, not "finished
        # 46/52" (ls, the browser and the resume list go by the state).
        update.setdefault("state", BatchState.STOPPED)
    manifest = manifest.model_copy(update={"totals": counts, **update})
    write_model(batch.manifest, manifest, durable=durable, backup=True)
    _report_duplicates(batch, manifest.duplicates_dropped, durable)
    live = batch.read_live()
    if live is not None:
        live = live.model_copy(
            update={
                **({"state": update["state"]} if "state" in update else {}),
                "counts": counts,
                "total": counts.total,
                "percent": cut_percent(counts.percent, 2),
                "updated_at": now_iso(),
                "in_flight": [],
                # A retry or skip changes the breakdown too: every view shows the store's.
                "error_groups": groups[:LIVE_ERROR_GROUPS],
                "error_groups_total": len(groups),
                "errors_by_type": by_type,
            }
        )
        write_model(batch.live_progress, live, durable=False)
