"""Starting a background engine for a batch (``--detach``, and the TUI's hand-off on SIGHUP)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from batchtui.engine.batchdir import BatchDir, BatchLock, BatchLocked
from batchtui.engine.batchsafe import check_batch_dir
from batchtui.engine.errors import UserError
from batchtui.engine.files import NOFOLLOW
from batchtui.engine.fmt import clean, decode_output, shell_line
from batchtui.engine.reaper import clean_env


def detach_engine(
    batch: BatchDir,
    *,
    action: str,
    overrides: dict[str, Any] | None = None,
    wait: float = 15.0,
    lock_wait: float = 0.0,
    must_hold: bool = False,
    on_slow: Callable[[int], None] | None = None,
    slow_after: float = 3.0,
    lock: BatchLock | None = None,
    paused: bool = False,
) -> int:
    """Start the engine for ``batch`` as a background process in its own session.

    Output goes to engine.log in the batch dir. Returns the engine's pid once it holds the
    batch lock (or after ``wait`` seconds, still trying); raises UserError if it died first:
    BatchLocked naming who holds the batch when another engine won the race, else what this
    engine wrote to the log (never another engine's lines).

    ``lock_wait``: how long the engine waits for the batch's lock (the TUI's hand-off: the
    engine it takes over from may not have let go yet); it says so in engine.log.

    ``must_hold`` (the CLI's ``--detach``, whose return promises that the engine holds the
    batch, so that a ``stop`` right after it reaches that engine): past ``wait``, an engine
    that is alive but does not hold the batch yet is :class:`EngineNotReady` (exit 1), not a
    quiet return. ``on_slow(pid)`` is called once when it takes longer than ``slow_after``.

    ``paused``: the engine begins paused (the TUI hands over a batch its operator paused).

    ``lock``: the batch's lock, held by the caller (``run --detach`` from the batch's creation,
    ``resume --detach`` from its plan): the engine inherits it, so the batch is never free
    between this process and that engine; the caller's copy is let go of once the engine runs
    (:meth:`BatchLock.hand_over`), and released if the engine could not start.
    """
    check_batch_dir(batch.path)  # the engine would refuse it too, after the log was opened through a link
    log_fd = os.open(batch.engine_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o600)
    start_offset = os.fstat(log_fd).st_size
    args = [sys.executable, "-m", "batchtui.tui.cli", "resume", str(batch.path), "--headless"]
    args += ["--engine-action", action]
    if overrides:
        args += ["--overrides-json", json.dumps(overrides)]
    if lock_wait:
        args += ["--lock-wait", f"{lock_wait:g}"]
    if paused:
        args += ["--start-paused"]
    held: tuple[int, ...] = ()
    ready: int | None = None  # the read end of the pipe the engine writes to once it holds the batch
    if lock is not None and lock.held:
        fd, dir_fd = lock.descriptors()
        held = (fd,) if dir_fd is None else (fd, dir_fd)
        args += ["--held-lock", ",".join(map(str, held))]
        ready, ready_w = os.pipe()
        args += ["--ready-fd", str(ready_w)]
        held += (ready_w,)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            close_fds=True,
            pass_fds=held,
            env=clean_env(),  # not one of this process's run: it must outlive that run's engine
        )
    except BaseException:
        if lock is not None:
            lock.release()  # no engine got it
        if ready is not None:
            os.close(ready)
        raise
    finally:
        os.close(log_fd)
        if ready is not None:
            os.close(held[-1])  # the engine's end: at its exit the pipe reads as closed
    if lock is not None:
        # The engine holds the lock now (exec succeeded), whatever it does next; the lock file
        # names it from here on, not this process.
        lock.hand_over(to=proc.pid)
    try:
        return _wait_for_engine(batch, proc, ready, wait, must_hold, on_slow, slow_after, start_offset)
    finally:
        if ready is not None:
            os.close(ready)


def _wait_for_engine(
    batch: BatchDir,
    proc: subprocess.Popen[bytes],
    ready: int | None,
    wait: float,
    must_hold: bool,
    on_slow: Callable[[int], None] | None,
    slow_after: float,
    start_offset: int,
) -> int:
    """:func:`detach_engine`'s wait: until the engine holds the batch (it says so on the
    ``ready`` pipe when it was handed the lock, whose file names it from the start; else the
    lock file names it), it exits, or ``wait`` is over."""
    start = time.monotonic()
    deadline = start + wait
    told = on_slow is None
    while time.monotonic() < deadline:
        if not told and time.monotonic() - start >= slow_after:
            told = True
            assert on_slow is not None
            on_slow(proc.pid)
        if ready is None:
            alive = batch.alive()
            if alive is not None and alive.pid == proc.pid:
                return proc.pid
            time.sleep(0.02)
        elif select.select([ready], [], [], 0.02)[0]:
            if os.read(ready, 1):
                return proc.pid
            # Closed unwritten: the engine is ending without having taken the batch.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        code = proc.poll()
        if code is not None:
            if code in (0, 1):
                return proc.pid  # it already finished (a tiny batch)
            holder = batch.alive()
            if holder is not None and holder.pid != proc.pid:
                raise BatchLocked(batch.path, holder)  # another engine won the race
            raise UserError(
                f"the background engine exited with {code}:\n  " + "\n  ".join(_own_lines(batch, start_offset))
            )
    if must_hold and proc.poll() is None:
        raise EngineNotReady(batch, proc.pid, wait, handed=ready is not None)
    return proc.pid


class EngineNotReady(UserError):
    """A background engine is alive but has not taken its batch within the wait."""

    exit_code = 1

    def __init__(self, batch: BatchDir, pid: int, waited: float, *, handed: bool = False) -> None:
        self.pid = pid
        # Handed the lock, it holds the batch already and reads what was sent to it once it runs.
        now = (
            "is still starting: a stop or pause sent now waits for it"
            if handed
            else "is still trying: a stop or pause sent now finds no engine"
        )
        super().__init__(
            f"the background engine (pid {pid}) has not taken batch {clean(batch.batch_id)} after {waited:g} s "
            f"and {now}; "
            f"`{shell_line('batchtui', 'watch', batch.batch_id)}` shows the batch once it runs, and "
            f"{clean(batch.engine_log)} says what the engine is doing"
        )


def _own_lines(batch: BatchDir, offset: int, keep: int = 5) -> list[str]:
    """The last lines engine.log got since ``offset`` (no other engine held the batch then, so
    they are this engine's)."""
    try:
        with batch.engine_log.open("rb") as fh:
            fh.seek(offset)
            text = decode_output(fh.read())
    except OSError:
        return []
    return text.strip().splitlines()[-keep:]
