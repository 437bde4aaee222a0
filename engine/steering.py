"""The engine's end of control.jsonl: read commands, have them applied, answer each.

The runner owns the operations (pause, skip, retry...); this object owns the channel: the
reader of control.jsonl, the queue of commands from other threads (the TUI's in-process
engine), the answers written into live_progress.json (``control_ack``, ``acked``,
``control_results``), and how far the file was read, stored in items.db beside the file's
identity only once the commands read so far have taken effect, so a crash never replays or
loses one and a control.jsonl replaced between engines is read from its start.
"""

from __future__ import annotations

import collections
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Final

from .batchdir import parse_iso
from .control import NOT_APPLIED
from .control_file import ControlReader
from .files import WriteFailed
from .fmt import count
from .models import ControlCommand, LockInfo

ANSWERS_KEPT: Final = 50
#: Ops that change items: they still apply when the engine they were sent to is gone.
ITEM_OPS: Final = frozenset({"skip", "retry", "prioritize"})


class ControlHandler:
    """Commands in, answers out (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[ControlCommand], str],
        save: Callable[[int, str | None], None],
        warn: Callable[[str], None],
    ) -> None:
        self.reader = ControlReader(path)
        self.commands: queue.SimpleQueue[ControlCommand] = queue.SimpleQueue()
        self.last_ack: str | None = None
        self.acked: collections.deque[str] = collections.deque(maxlen=ANSWERS_KEPT)
        self.results: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._apply = apply
        self._save = save
        self._warn = warn
        self._saved: tuple[int, str | None] | None = None
        self._damaged: str | None = None  # what was said of control.jsonl's damage (None: nothing)

    def put(self, cmd: ControlCommand) -> None:
        """A command from another thread of this process (thread-safe)."""
        self.commands.put(cmd)

    def take_over(self, offset: int | None, identity: str | None, holder: LockInfo | None = None) -> None:
        """Commands appended to control.jsonl that no engine read (it died or was killed first).

        Skips and retries still apply (they change items, as they would offline); pause,
        unpause, stop and set_workers were meant for the engine that is gone, so they are
        answered as not applied instead of acting on this one, unless they are its own: sent
        once it held the batch, while it was still getting ready to read them. A command says
        so by naming this engine (``holder``, its lock: :meth:`~.models.LockInfo.token`, or the
        ``--detach`` that took the batch for it: ``handed_from``); one
        that names none (a line written by hand, or by an older version) by its time, at or
        after the lock was taken. Batches made before the offset was kept start at the end of
        the file, as they did.
        """
        if offset is None:
            self.save()
            return
        stored = (int(offset), None if identity is None else str(identity))
        self.reader.seek(*stored)
        self._saved = stored  # written again only when it changes (a damaged store is left alone)
        mine = {holder.token(), holder.handed_from} - {None} if holder is not None else set()
        since = parse_iso(holder.started_at) if holder is not None else None
        stale = 0  # queued for the engine before (applied all the same when they change items)
        for cmd in self._read():
            own = _own(cmd, mine, since)
            stale += not own
            if own or cmd.op in ITEM_OPS:
                self.commands.put(cmd)
            else:
                self.answer(cmd, f"{NOT_APPLIED}: it was sent to an engine that ended before reading it")
        if stale:
            was, it = ("was", "it") if stale == 1 else ("were", "them")
            self._warn(f"{count(stale, 'control command')} {was} queued for the previous engine, which never read {it}")
        self.save()

    def _read(self) -> list[ControlCommand]:
        """The new commands in control.jsonl; a line that is no command (not JSON, an unknown
        op, a bad value: written by hand, or damaged) is said once as a warning, not dropped
        in silence."""
        before = self.reader.bad_lines
        commands = self.reader.read_new()
        if self.reader.damaged != self._damaged:
            self._damaged = self.reader.damaged
            if self._damaged is not None:
                self._warn(
                    f"control.jsonl is damaged ({self._damaged}): no command (pause, stop, skip...) reaches"
                    " this engine until it is removed; the run goes on (Ctrl-C or SIGTERM still stop it)"
                )
            else:
                self._warn("control.jsonl is usable again: commands reach this engine")
        if self.reader.bad_lines > before:
            n = self.reader.bad_lines - before
            self._warn(
                f"control.jsonl: {count(n, 'line')} that {'is' if n == 1 else 'are'} no command ignored"
                " (not JSON, or no op this version knows)"
            )
        return commands

    def handle(self) -> bool:
        """Apply every command waiting (on the runner's thread); True if there was one."""
        if self.reader.changed():
            for cmd in self._read():
                self.commands.put(cmd)
        handled = False
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                break
            try:
                message = self._apply(cmd)
            except WriteFailed:
                raise  # the disk is full: the run halts
            except Exception as exc:  # a bad command must never kill the run
                message = f"failed: {exc}"
                self._warn(f"control command {cmd.op} {cmd.id} failed: {exc}")
            self.answer(cmd, message)
            handled = True
        if handled:
            self.save()
        return handled

    def answer(self, cmd: ControlCommand, message: str) -> None:
        self.last_ack = cmd.id
        self.acked.append(cmd.id)
        self.results[cmd.id] = message
        while len(self.results) > ANSWERS_KEPT:
            self.results.popitem(last=False)

    def save(self) -> None:
        """Record how far control.jsonl is read, after the commands read so far took effect."""
        where = (self.reader.offset, self.reader.identity)
        if where != self._saved:
            self._save(*where)
            self._saved = where


def _own(cmd: ControlCommand, mine: set[str | None], since: float | None) -> bool:
    """Whether ``cmd``, found unread at a take-over, was sent to the engine taking over (see
    :meth:`ControlHandler.take_over`): ``mine`` are its tokens (its own, and the one of the
    process that took the batch for it and handed it the lock)."""
    if cmd.to is not None:
        return cmd.to in mine
    if since is None:
        return False
    try:
        return parse_iso(cmd.ts) >= since
    except (ValueError, OverflowError):  # a time written by hand that is no time
        return False
