"""Room for more threads and processes: what this process's pids cgroup still allows.

A container's pids limit (``docker run --pids-limit``, a systemd unit's ``TasksMax``, a
Kubernetes pod's) counts every thread and process of its members: the engine's worker threads,
the commands they start, and the threads of the libraries it uses. Near that limit a command's
start fails (the engine hands its item back: engine/errors.py ``NoRoomToStart``), a worker
thread does not start (the run goes on with those that did), and watchfiles is worse: when its
Rust watcher cannot start its threads, a panic in a destructor aborts the whole process
(notify 8, seen under ``pids.max`` 16 with 14 threads running: SIGABRT, the batch left
interrupted). So the engine starts watchfiles only with room to spare (:func:`room`), and
otherwise does without it (the runner looks at control.jsonl every turn anyway).

Read from cgroup v1 (``/sys/fs/cgroup/pids/...``) and v2 (``/sys/fs/cgroup/...``, or
``/sys/fs/cgroup/unified/...`` on a hybrid system), every level up to the root: the least room
of them. ``ulimit -u`` (RLIMIT_NPROC) also counts threads, but per user across all of their
processes, which only a walk of /proc could count: it is not read here.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["POOL_WORKER_TASKS", "RESERVE", "WATCHER_MARGIN", "room"]

#: Tasks a run leaves free when it sizes its worker threads under a pids limit: for the other
#: threads of its process (asyncio's, a dashboard's) and a command's own children.
RESERVE: Final = 8

#: Tasks a process-pool worker takes: its process, its feeder thread in the engine, and one more
#: (a thread of its own, or the command of a shell item).
POOL_WORKER_TASKS: Final = 3

#: Tasks a process must have room for before it starts watchfiles' threads: the two it needs,
#: and what the run's commands may take meanwhile.
WATCHER_MARGIN: Final = 64

_V1_ROOT: Final = "/sys/fs/cgroup/pids"
_V2_ROOTS: Final = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def room(proc_cgroup: str = "/proc/self/cgroup") -> int | None:
    """How many more tasks (threads or processes) the pids cgroups of this process allow; None
    when no level sets a limit or none can be read."""
    try:
        with open(proc_cgroup, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    least: int | None = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            roots: tuple[str, ...] = _V2_ROOTS
        elif "pids" in controllers.split(","):
            roots = (_V1_ROOT,)
        else:
            continue
        for root in roots:
            left = _room_under(root, path)
            if left is not None:
                least = left if least is None else min(least, left)
    return least


def _room_under(root: str, path: str) -> int | None:
    """The least room of the cgroup at ``root``/``path`` and each of its parents (None: no limit)."""
    least: int | None = None
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    for depth in range(len(parts), -1, -1):
        where = os.path.join(root, *parts[:depth])
        try:
            with open(os.path.join(where, "pids.max"), encoding="ascii") as f:
                limit = f.read().strip()
            if limit == "max":
                continue
            with open(os.path.join(where, "pids.current"), encoding="ascii") as f:
                current = int(f.read().strip())
            left = max(0, int(limit) - current)
        except (OSError, ValueError):
            continue
        least = left if least is None else min(least, left)
    return least
