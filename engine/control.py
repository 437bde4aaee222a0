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
from typing import Any, Final

import orjson
from pydantic import ValidationError

from .batchdir import BatchDir, now_iso
from .files import FILE_MODE, read_model
from .models import ControlCommand, ControlOp, LiveProgress

CONTROL_FILE: Final = "control.jsonl"
MAX_LINE: Final = 1 << 20


def new_command(
    op: ControlOp,
    *,
    seqs: Sequence[int] | None = None,
    filter: dict[str, Any] | None = None,
    value: Any = None,
) -> ControlCommand:
    return ControlCommand(
        id=secrets.token_hex(6),
        ts=now_iso(),
        op=op,
        seqs=list(seqs) if seqs is not None else None,
        filter=filter,
        value=value,
    )


def append_command(batch: BatchDir, cmd: ControlCommand) -> None:
    """Append one command line (one write, O_APPEND: safe with concurrent writers)."""
    line = orjson.dumps(cmd.model_dump(mode="json", exclude_none=True)) + b"\n"
    fd = os.open(batch.control, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
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


class ControlReader:
    """The engine's reader of control.jsonl: returns commands appended since the last read."""

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        self.path = path
        self.offset = 0
        self._size = -1
        self.bad_lines = 0
        if not from_start:
            try:
                # Commands written while no engine ran were applied to the store directly.
                self.offset = path.stat().st_size
            except FileNotFoundError:
                self.offset = 0

    def changed(self) -> bool:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        return size != self.offset

    def read_new(self) -> list[ControlCommand]:
        try:
            with self.path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # truncated or replaced by hand: start over at its end
                    self.offset = size
                    return []
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_LINE:  # a runaway partial line: drop it
                self.offset += len(data)
                self.bad_lines += 1
            return []
        self.offset += end + 1
        out: list[ControlCommand] = []
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                out.append(ControlCommand.model_validate(orjson.loads(raw)))
            except (orjson.JSONDecodeError, ValidationError):
                self.bad_lines += 1
        return out


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

        def only_control(_change: object, path: str) -> bool:
            return os.path.basename(path) == CONTROL_FILE

        try:
            for _changes in watch(
                self.batch_dir,
                watch_filter=only_control,
                debounce=10,
                step=5,
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


def apply_offline(batch: BatchDir, change: Callable[[Any], str], *, durable: bool = True) -> str:
    """Change the store of a batch no engine is running, under the batch lock.

    Afterwards the manifest's totals and live_progress.json's counts are rewritten from the
    store, so every view agrees with it. Raises BatchLocked if an engine holds the batch.
    """
    from .batchdir import BatchLock
    from .files import write_model
    from .models import Manifest
    from .store import ItemStore

    lock = BatchLock(batch.lock)
    lock.acquire(wait=0.5)
    try:
        store = ItemStore.open(batch.items_db, durable=durable)
        try:
            message = change(store)
            counts = store.counts()
        finally:
            store.close()
        manifest = read_model(batch.manifest, Manifest)
        write_model(batch.manifest, manifest.model_copy(update={"totals": counts}), durable=durable, backup=True)
        live = batch.read_live()
        if live is not None:
            live = live.model_copy(
                update={
                    "counts": counts,
                    "total": counts.total,
                    "percent": round(counts.percent, 2),
                    "updated_at": now_iso(),
                    "in_flight": [],
                }
            )
            write_model(batch.live_progress, live, durable=False)
        return message
    finally:
        lock.release()
