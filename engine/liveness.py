"""Is the engine of a batch alive, frozen, or gone? One answer for every view.

A running engine rewrites live_progress.json several times a second, even when nothing
changes (a heartbeat: ``updated_at``), and holds the batch's ``flock`` from start to exit. So:

- **gone**: nobody holds the lock (the engine exited, or died and the kernel dropped it);
- **stale**: the lock is held but nothing was written for more than :data:`STALE_AFTER_S`
  seconds: the engine is stopped (SIGSTOP, a debugger), hung, or dead while a process it
  left behind still holds the lock;
- **alive**: the lock is held and the heartbeat is recent.

The age counts from the later of ``updated_at`` and the lock's ``started_at``, so a new engine
is not judged by the file its predecessor left; until the engine's first live write (it reads
its source into the store), from the store's last write too, and from the lock file's
modification time: an engine whose source keeps it waiting (a pipe whose writer pauses) touches
its lock file about once a second from the thread that waits (engine/sources/waiting.py), and is
**waiting for its source** while that is its latest sign of life and it has stored nothing new
for :data:`WAITING_AFTER_S` seconds (``waiting_s``). Frozen
(SIGSTOP) or hung elsewhere, it touches nothing and turns stale. An engine that has written its final state
(finished, stopped, halted) and is still running its ``--on-finish`` hook is alive. Ages use
the wall clock (``updated_at`` is UTC): a viewer on another host with a skewed clock sees the
skew, which is why the bound is seconds, not a fraction of one.
"""

from __future__ import annotations

import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Final, NamedTuple

from .batchdir import HOST, BatchDir, engine_alive, parse_iso
from .fmt import fmt_duration as fmt_age
from .models import ACTIVE_STATES, LiveProgress, LockInfo

STALE_AFTER_S: Final = 5.0
#: A touch of the lock is at least a second after the engine took it, and the commit of what it
#: had read when its wait began may land just after the touch: both within this.
TOUCH_SLACK_S: Final = 0.5
#: Waiting for its source only once nothing new was stored for this long: a pipe that sends a
#: burst every second or two keeps its engine's reading thread waiting between bursts (each wait
#: of a second is a touch of the lock and a commit of the burst before it), and a view that
#: asked every second said reading, waiting, reading. Well within :data:`STALE_AFTER_S`.
WAITING_AFTER_S: Final = 3.0


class Liveness(StrEnum):
    ALIVE = "alive"
    STALE = "stale"
    GONE = "gone"


class EngineStatus(NamedTuple):
    """What :func:`engine_status` found: the verdict, how long the engine has been silent,
    who holds the lock, and (same host only) what the holder process is doing."""

    liveness: Liveness
    silent_s: float | None  # seconds since the engine's last write; None when gone
    holder: LockInfo | None
    process: str | None = None  # stale only: running, stopped, zombie, gone; None when unknown
    #: Alive and waiting for its source (its lock touched last): seconds since it stored anything.
    waiting_s: float | None = None

    @property
    def held(self) -> bool:
        """An engine (responding or not) holds the batch: commands go to control.jsonl."""
        return self.liveness != Liveness.GONE

    @property
    def responding(self) -> bool:
        return self.liveness == Liveness.ALIVE

    @property
    def pid(self) -> int | None:
        return self.holder.pid if self.holder is not None else None

    def badge(self) -> str:
        """A short label for a status line: ``NOT RESPONDING 13s`` (empty unless stale)."""
        if self.liveness != Liveness.STALE:
            return ""
        return f"NOT RESPONDING {fmt_age(self.silent_s)}"

    def explain(self) -> str:
        """One sentence for an operator: what is wrong and what to do (empty unless stale)."""
        if self.liveness != Liveness.STALE:
            return ""
        who = f"pid {self.holder.pid} on {self.holder.host}" if self.holder else "the engine"
        text = f"the engine ({who}) has written no progress for {fmt_age(self.silent_s)}"
        pid = self.pid
        if self.process == "stopped":
            text += f"; it is stopped (SIGSTOP or a debugger): `kill -CONT {pid}` lets it go on"
        elif self.process == "zombie":
            text += "; it has exited (a zombie nobody reaped) but the lock is still held"
        elif self.process == "gone":
            text += "; that process is gone, and a process it left behind still holds the lock"
        elif self.process == "running":
            text += "; it is running but not writing (hung, or overloaded)"
        return text


def wall_clock() -> float:
    """The time liveness is judged at when the caller gives none (a test freezes it here)."""
    return time.time()


def engine_status(
    batch: BatchDir | Path,
    *,
    live: LiveProgress | None = None,
    now: float | None = None,
    stale_after: float = STALE_AFTER_S,
) -> EngineStatus:
    """Classify the engine of ``batch`` as alive, stale or gone (never blocks).

    ``live`` is live_progress.json if the caller has just read it (else it is read here);
    ``now`` is the wall-clock time (a frozen clock in tests).
    """
    bdir = batch if isinstance(batch, BatchDir) else BatchDir(batch)
    holder = engine_alive(bdir.path)
    if holder is None or not holder.engine:  # none, or a brief offline change (no engine)
        return EngineStatus(Liveness.GONE, None, None)
    if live is None:
        live = bdir.read_live()
    now = wall_clock() if now is None else now
    started = _stamp(holder.started_at)
    written = _stamp(live.updated_at) if live is not None else 0.0
    last = max(started, written)
    waiting_since: float | None = None
    if written < started and started > 0:
        # No live write from this engine yet: it makes the batch, or reads the rest of an
        # enqueue cut short, and each chunk it reads is a commit to the store (a 20M-line source
        # read for a minute was "NOT RESPONDING ... hung" from its fifth second); while its source
        # keeps it waiting, it touches its lock file instead.
        stored = _store_written(bdir)
        touched = _lock_touched(bdir, started)
        last = max(last, stored, touched)
        if touched and touched >= stored - TOUCH_SLACK_S:
            waiting_since = max(started, stored)
    if last <= 0:
        # The lock's content is not written yet (it was taken a moment ago): no verdict.
        return EngineStatus(Liveness.ALIVE, None, holder)
    silent = max(0.0, now - last)
    if live is not None and live.state not in ACTIVE_STATES and written >= started:
        # This engine has written its final state: it is finishing (the --on-finish hook).
        return EngineStatus(Liveness.ALIVE, silent, holder)
    if _pid_exists(holder) is False:
        return EngineStatus(Liveness.STALE, silent, holder, "gone")
    if silent > stale_after:
        return EngineStatus(Liveness.STALE, silent, holder, _process_state(holder))
    waiting = None if waiting_since is None else max(0.0, now - waiting_since)
    if waiting is not None and waiting < WAITING_AFTER_S:
        waiting = None  # a pause between bursts: still reading
    return EngineStatus(Liveness.ALIVE, silent, holder, waiting_s=waiting)


def _lock_touched(bdir: BatchDir, started: float) -> float:
    """When the engine last touched its lock file (:meth:`.batchdir.BatchLock.touch`), or 0 if it
    has not since it wrote the file (when it took the lock, at ``started``)."""
    try:
        mtime = os.stat(bdir.lock).st_mtime
    except OSError:
        return 0.0
    return mtime if mtime > started + TOUCH_SLACK_S else 0.0


def _store_written(bdir: BatchDir) -> float:
    """When the batch's store was last written: its WAL (an empty one is a reader's: a view that
    opens the store makes it), or the database file (a checkpoint); 0 if neither can be read."""
    latest = 0.0
    for path in (bdir.items_db.with_name(bdir.items_db.name + "-wal"), bdir.items_db):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_size > 0:
            latest = max(latest, st.st_mtime)
    return latest


def _stamp(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        return parse_iso(iso)
    except ValueError:
        return 0.0


def _pid_exists(holder: LockInfo) -> bool | None:
    """Whether the lock holder's pid exists; None when it runs on another host (or unknown)."""
    if holder.host != HOST or holder.pid <= 0:
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return True


def _process_state(holder: LockInfo) -> str | None:
    """What the lock holder's process is doing (same host only): running, stopped, zombie,
    gone; None when unknown."""
    exists = _pid_exists(holder)
    if exists is None:
        return None
    if not exists:
        return "gone"
    try:
        import psutil  # only here, for a stale engine: a healthy one never needs it

        status = psutil.Process(holder.pid).status()
    except Exception:  # the process just went, no access
        return None
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return "stopped"
    if status == psutil.STATUS_ZOMBIE:
        return "zombie"
    return "running"
