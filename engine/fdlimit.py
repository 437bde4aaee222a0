"""Open files: a run raises this process's soft limit to its hard one, and says when even that
is too low for its workers.

A running shell item holds three descriptors in the engine (its two pipes and its pidfd; 852
for 280 running items, measured), five while its two log files are open; a process-pool worker
about four (its pipes and gates). The soft limit many systems start a session with (1024, kept
low for programs that still use ``select()``) runs out somewhere past 200-330 shell workers:
items failed with "Too many open files" before their command started (265 of 300 under a soft
limit of 48 and 32 workers), and the control watcher's thread died with a traceback (seen at 400
workers under 1024). batchtui waits
with ``poll`` and epoll, never ``select()``, so it raises the soft limit to the hard one when a
run starts, as Go's runtime does for every program since 1.19; processes it starts inherit the
raised limit. A hard limit that is still too low (a container's, a ``ulimit -Hn``) is said once,
with what the workers may need.
"""

from __future__ import annotations

import resource
from typing import Final

__all__ = ["DESCRIPTORS_PER_WORKER", "ENGINE_DESCRIPTORS", "raise_soft_limit", "shortfall"]

#: Descriptors the engine keeps open whatever its workers (the store and its WAL, results.jsonl,
#: the lock, the logs, the control watcher, the reaper's pipe, Python's own), with room to spare.
ENGINE_DESCRIPTORS: Final = 64
#: Descriptors a running item holds in the engine, by executor: a shell item's pipes, pidfd and
#: logs; a pool worker's pipes and gates. Threads running a callable and dask tasks hold what
#: the user's code opens, which nobody can tell beforehand.
DESCRIPTORS_PER_WORKER: Final = {"shell": 5, "process": 4}


def raise_soft_limit() -> tuple[int, int] | None:
    """Raise the soft limit on open files to the hard one; the (soft, hard) limits in force
    after it, or None where there are none to read. A refusal leaves the limit as it was."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):  # macOS refuses RLIM_INFINITY (OPEN_MAX caps it): try that
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 10240), hard))
                soft = max(soft, 10240)
            except (OSError, ValueError):
                pass
    return soft, hard


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
        f"{soft:,} (ulimit -n; its hard limit is {hard:,}): items may fail with 'Too many open "
        f"files' before they start. Raise the limit (ulimit -n {needed}) or run at most {fits} workers"
    )
