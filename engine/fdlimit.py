"""Open files: a run raises this process's soft limit as far as its workers may need, and says
when even the hard limit is too low for them.

A running shell item holds three descriptors in the engine (its two pipes and its pidfd; 852
for 280 running items, measured), five while its two log files are open; a process-pool worker
about four (its pipes and gates). The soft limit many systems start a session with (1024, kept
low for programs that still use ``select()``) runs out somewhere past 200-330 shell workers:
items failed with "Too many open files" before their command started (265 of 300 under a soft
limit of 48 and 32 workers), and the control watcher's thread died with a traceback (seen at 400
workers under 1024). batchtui waits
with ``poll`` and epoll, never ``select()``, so when a run starts (and when its workers are
raised) it raises the soft limit to twice what the workers may need, up to the hard one (Go's
runtime raises it to the hard one for every program since 1.19; only as far as needed here,
since the processes a run starts inherit it). A hard limit that is too low (a container's, a
``ulimit -Hn``) is said, with what the workers may need.
"""

from __future__ import annotations

import os
import resource
from typing import Final

__all__ = ["DESCRIPTORS_PER_WORKER", "ENGINE_DESCRIPTORS", "ensure", "fitting", "shortfall"]

#: Descriptors the engine keeps open whatever its workers (the store and its WAL, results.jsonl,
#: the lock, the logs, the control watcher, the reaper's pipe, Python's own), with room to spare.
ENGINE_DESCRIPTORS: Final = 64
#: Descriptors a running item holds in the engine, by executor: a shell item's pipes, pidfd and
#: logs; a pool worker's pipes and gates. Threads running a callable and dask tasks hold what
#: the user's code opens, which nobody can tell beforehand.
DESCRIPTORS_PER_WORKER: Final = {"shell": 5, "process": 4}


def ensure(workers: int, kind: str) -> str | None:
    """Make room for ``workers`` workers of ``kind`` (``shell``, ``process``; others hold no
    descriptors the engine can count): the soft limit on open files raised to twice what they
    may need, never above the hard limit and never lowered. What to say when even the hard
    limit is too low (:func:`shortfall`), else None.

    Raised only as far as needed, not to the hard limit: the processes a run starts inherit it,
    and some programs walk every descriptor up to it (old daemons closing them all one by one,
    which takes seconds at a limit of a million)."""
    short = _short(workers, kind)
    if short is None:
        return None
    needed, soft, hard = short
    target = 2 * needed if hard == resource.RLIM_INFINITY else min(2 * needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):  # refused (macOS caps it at OPEN_MAX): as it was
            pass
    return shortfall(workers, kind, (soft, hard))


def shortfall(workers: int, kind: str, limits: tuple[int, int] | None) -> str | None:
    """What to say when ``workers`` workers of ``kind`` (``shell``, ``process``; others hold no
    descriptors the engine can count) may need more open files than ``limits`` allow."""
    per = DESCRIPTORS_PER_WORKER.get(kind)
    if per is None or limits is None:
        return None
    soft, hard = limits
    if soft == resource.RLIM_INFINITY:
        return None
    needed = ENGINE_DESCRIPTORS + per * workers
    if needed <= soft:
        return None
    fits = max(1, (soft - ENGINE_DESCRIPTORS) // per)
    return (
        f"{workers} workers may need about {needed:,} open files, and this process may open "
        f"{soft:,} (ulimit -n; its hard limit is {hard:,}): so that the engine keeps room for its own"
        f" files, it runs at most {fits} workers. Raise the limit (ulimit -n {needed}) for all {workers}"
    )


def fitting(workers: int, kind: str) -> tuple[int, int] | None:
    """How many of ``workers`` workers of ``kind`` the soft limit on open files has room for,
    with the engine's own :data:`ENGINE_DESCRIPTORS` kept, and that limit; None when all fit
    (or the limit is unknown, or ``kind`` holds nothing the engine can count)."""
    short = _short(workers, kind)
    if short is None:
        return None
    soft = short[1]
    return max(1, (soft - ENGINE_DESCRIPTORS) // DESCRIPTORS_PER_WORKER[kind]), soft


def _short(workers: int, kind: str) -> tuple[int, int, int] | None:
    """(what ``workers`` of ``kind`` may need, the soft limit, the hard one) when the soft limit
    is under that need; None when it is not, or is unknown, or ``kind`` holds nothing we count."""
    per = DESCRIPTORS_PER_WORKER.get(kind)
    if per is None:
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    needed = ENGINE_DESCRIPTORS + per * workers
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None
    return needed, soft, hard


#: Descriptors kept open on /dev/null while an engine runs, let go when the process has no
#: other left (.files.OutOfDescriptors): the halt's final files (manifest, live progress,
#: report: two descriptors each, one file at a time) need them.
_SPARE: list[int] = []
SPARE: Final = 4


def reserve_spare() -> None:
    """Keep :data:`SPARE` descriptors aside (an engine's start; once per process)."""
    while len(_SPARE) < SPARE:
        try:
            _SPARE.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            return  # none to spare now: the halt's files may not all be written


def release_spare() -> None:
    """Let the spare descriptors go (the process has no other left, or the engine ended)."""
    while _SPARE:
        try:
            os.close(_SPARE.pop())
        except OSError:
            pass
