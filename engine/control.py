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

import errno
import os
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson
from pydantic import ValidationError

from .batchdir import BatchDir, now_iso
from .errors import UserError
from .files import FILE_MODE, NOFOLLOW, read_model
from .fmt import cut_percent
from .fmt import fmt_duration as fmt_age
from .liveness import EngineStatus, Liveness
from .models import BatchState, ControlCommand, ControlOp, LiveProgress, Manifest

CONTROL_FILE: Final = "control.jsonl"
MAX_LINE: Final = 1 << 20
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
    """Append one command line (one write, O_APPEND: safe with concurrent writers)."""
    line = orjson.dumps(cmd.model_dump(mode="json", exclude_none=True)) + b"\n"
    try:
        fd = os.open(batch.control, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(
                f"refusing to write {batch.control}: it is a symbolic link, and batch files are never "
                "written through one (remove it)"
            ) from None
        raise
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


class ControlReader:
    """The engine's reader of control.jsonl: returns commands appended since the last read.

    The position is an offset *in one file*: the reader also keeps the file's identity
    (``st_dev``, ``st_ino``) and the last bytes it consumed. When control.jsonl is deleted and
    made anew (the next ``append_command`` creates it), replaced, or truncated (to below the
    offset, or rewritten in place), the new content is read from its start, so the command
    that recreated the file is never lost. An inode number can be reused at once by a new
    file, so identity alone is not enough: the consumed tail must still be where it was.
    """

    TAIL: Final = 64

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        self.path = path
        self.offset = 0
        self.bad_lines = 0
        self.restarts = 0  # how often the file was found replaced or truncated
        self._ident: tuple[int, int] | None = None
        self._seen: tuple[int, int, int, int] | None = None  # dev, ino, size, mtime at the last read
        self._tail = b""  # the bytes just before ``_tail_at``: what was consumed last
        self._tail_at = -1
        self._tail_sum: tuple[int, int] | None = None  # (length, crc32) of a tail handed to seek()
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                self._ident = (st.st_dev, st.st_ino)
                if not from_start:
                    # Commands written while no engine ran were applied to the store directly.
                    self.offset = st.st_size
                    self._remember_tail(fh)
        except FileNotFoundError:
            pass

    @property
    def identity(self) -> str | None:
        """The file the offset refers to, as a token (None before the file existed) for an
        engine to store beside the offset and hand to :meth:`seek` on resume:
        ``dev:ino:length:crc32`` of the bytes consumed last. The checksum tells a new file that
        got the freed inode number (common on ext4) from the one that was read."""
        if self._ident is None:
            return None
        token = f"{self._ident[0]}:{self._ident[1]}"
        if self._tail_at == self.offset:
            if self._tail:
                token += f":{len(self._tail)}:{zlib.crc32(self._tail):08x}"
            elif self._tail_sum is not None:  # handed over by seek(), nothing read since
                token += f":{self._tail_sum[0]}:{self._tail_sum[1]:08x}"
        return token

    def seek(self, offset: int, identity: str | None = None) -> None:
        """Continue from ``offset``, where a previous reader of the same file stopped.

        With ``identity`` (see :attr:`identity`), a different file restarts at 0. Without it,
        an offset that is past the end or not at a line boundary of today's file restarts at 0
        too: that offset belonged to a file that was replaced meanwhile.
        """
        self.offset = max(0, offset)
        self._seen = None
        self._tail, self._tail_at, self._tail_sum = b"", -1, None
        if identity is not None:
            self._ident, self._tail_sum = _parse_identity(identity)
            if self._tail_sum is not None:
                self._tail_at = self.offset

    def changed(self) -> bool:
        """Whether control.jsonl may hold something unread: a cheap ``stat``, for the loop."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._seen or st.st_size != self.offset

    def read_new(self) -> list[ControlCommand]:
        try:
            with self.path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if not self._continues(fh, st):
                    self.offset = 0  # a new file (or rewritten): everything in it is unread
                    self.restarts += 1
                self._ident = (st.st_dev, st.st_ino)
                self._seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                size = st.st_size
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
        except FileNotFoundError:
            return []  # deleted: the identity is kept, so the file made next is read from 0
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_LINE:  # a runaway partial line: drop it
                self.offset += len(data)
                self._set_tail(data)
                self.bad_lines += 1
            return []
        self.offset += end + 1
        self._set_tail(data[: end + 1])
        out: list[ControlCommand] = []
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                out.append(ControlCommand.model_validate(orjson.loads(raw)))
            except (orjson.JSONDecodeError, ValidationError):
                self.bad_lines += 1
        return out

    def _continues(self, fh: BinaryIO, st: os.stat_result) -> bool:
        """Whether the open file is the one ``offset`` points into, unchanged up to it."""
        if self.offset == 0:
            return True
        if self._ident is not None and (st.st_dev, st.st_ino) != self._ident:
            return False  # deleted and made anew, or replaced by a rename
        if st.st_size < self.offset:
            return False  # truncated
        if self._tail_at == self.offset and self._tail:
            start = self.offset - len(self._tail)
            return os.pread(fh.fileno(), len(self._tail), start) == self._tail
        if self._tail_at == self.offset and self._tail_sum is not None:
            length, crc = self._tail_sum
            return length <= self.offset and zlib.crc32(os.pread(fh.fileno(), length, self.offset - length)) == crc
        # An offset handed over by seek(): it must end a line of this file.
        return os.pread(fh.fileno(), 1, self.offset - 1) == b"\n"

    def _set_tail(self, consumed: bytes) -> None:
        self._tail_sum = None
        if len(consumed) >= self.TAIL:
            self._tail = consumed[-self.TAIL :]
        else:
            self._tail = (self._tail if self._tail_at == self.offset - len(consumed) else b"") + consumed
            self._tail = self._tail[-self.TAIL :]
        self._tail_at = self.offset

    def _remember_tail(self, fh: BinaryIO) -> None:
        self._tail_sum = None
        start = max(0, self.offset - self.TAIL)
        self._tail = os.pread(fh.fileno(), self.offset - start, start)
        self._tail_at = self.offset


def _parse_identity(text: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """``dev:ino[:length:crc32]`` -> ((dev, ino), (length, crc32)); None for what is missing."""
    parts = text.split(":")
    try:
        ident = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return None, None
    try:
        return ident, (int(parts[2]), int(parts[3], 16))
    except (IndexError, ValueError):
        return ident, None


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
    """A thread that calls ``poke()`` whenever control.jsonl changes (watchfiles, inotify).

    It starts watching ``delay`` seconds after :meth:`start`: importing watchfiles (and anyio
    with it) costs a short run more than all its items, and until then the runner's loop
    ``stat`` (at least every quarter second) picks commands up, as it does wherever inotify is
    unavailable. A run that ends within ``delay`` never loads watchfiles.
    """

    def __init__(self, batch_dir: Path, poke: Callable[[], None], *, delay: float = 0.5) -> None:
        self.batch_dir = batch_dir
        self.poke = poke
        self.delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batchtui-control-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self.delay > 0 and self._stop.wait(self.delay):
            return  # stopped before it began watching
        try:
            from watchfiles import watch
        except ImportError:  # pragma: no cover - a dependency; the loop's stat still works
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

    def stop(self) -> None:
        self._stop.set()
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
