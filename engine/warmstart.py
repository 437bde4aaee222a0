"""Pool worker processes started ahead of their run, while the command line still imports.

A pool worker is a fresh interpreter (the spawn start method) that imports what running items
needs before it can take its first chunk: about 0.1 s of one core. ``batchtui run --call``
spends about 0.25 s importing the CLI and the settings models on one core before its run
begins, while the other core has nothing to do. :func:`start` uses that idle core: it starts the
workers the run is likely to want the moment the command line names a callable (see
``tui/cli/group.py``), and the run's :class:`~.pool.ProcessExecutor` adopts them (:func:`take`)
instead of starting its own. A guess that was wrong (a thread executor after all, fewer workers)
costs only that idle time: :func:`discard` ends what the run did not adopt.

A warm worker has no batch yet: it gets its processor spec and settings (the batch directory
among them, where its output goes) through its pipe when it is adopted, before it imports the
callable's module (.poolworker.child_main). It carries the run token the run's reaper will use
(:func:`claim_token`), so it is one of the run's processes like any worker the engine starts
itself; and it dies with this process (``die_with_parent``), adopted or not.

Only what starting a process needs is imported here (multiprocessing's context, lazily): the
command line calls :func:`start` before it imports the engine.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Final

from . import fdlimit

#: Slots in each shared gate of a warm worker: :data:`.executors.MAX_CHUNK_SLOTS` (a run whose
#: chunks may be bigger, ``--chunk-size`` above it, starts workers of its own).
CAPACITY: Final = 256
#: The signals a worker starts with blocked (it unblocks them once it ignores or handles them).
STARTING_BLOCKED: Final = frozenset({signal.SIGINT, signal.SIGHUP})
#: Gates a worker is given (:data:`.pool.AHEAD`: one for the running chunk, one for the next).
GATES: Final = 2

_lock = threading.Lock()
#: Started, not yet adopted: (process, the engine's end of its pipe, its gates' parts).
_warm: list[tuple[Any, Any, list[tuple[Any, ...]]]] = []
_token: str | None = None


def launch(ctx: Any, capacity: int, gates: int) -> tuple[Any, Any, list[tuple[Any, ...]]]:
    """Start one pool worker process in multiprocessing context ``ctx``: its shared gates (each
    ``capacity`` slots), its pipe, the process. It waits for its spec and settings (``go``)."""
    _tracker_started()
    parts = [
        (ctx.RawArray("b", capacity), ctx.RawArray("d", capacity), ctx.RawValue("i", -1), ctx.Lock())
        for _ in range(gates)
    ]
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=worker_entry, args=(child, parts), daemon=True, name="batchtui-pool-worker")
    # It starts with SIGINT and SIGHUP blocked (a mask survives the exec) until it has put its
    # own dispositions in place (poolworker.child_main): a Ctrl-C or a hang-up sent to the
    # process group while it imports printed a KeyboardInterrupt traceback from each worker.
    # Blocked in this thread alone, for the start: one meant for the engine reaches it after.
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STARTING_BLOCKED)
    try:
        proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    child.close()
    return proc, parent, parts


def _tracker_started() -> None:
    """multiprocessing's resource tracker (it unlinks the gates' semaphores should the engine
    die), started with SIGHUP blocked, which it keeps: it ignores SIGINT and SIGTERM itself, not
    SIGHUP, and a hang-up sent to the engine's process group (a closed terminal) killed it: the
    run then printed "resource_tracker: process died unexpectedly" and a KeyError traceback
    for each semaphore. Blocked in this thread only, for the start: a SIGHUP meant for the
    engine meanwhile reaches it once unblocked."""
    from multiprocessing import resource_tracker

    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def worker_entry(conn: Any, gate_parts: list[tuple[Any, ...]]) -> None:
    """A pool worker's first function: the worker module is imported here, in the worker, so the
    process that starts it need not import it first."""
    from .poolworker import child_main

    child_main(conn, gate_parts)


def start(workers: int) -> None:
    """Start ``workers`` pool worker processes now, for the run this process is about to begin.

    Call it from the main thread (a worker dies with the thread that started it). Each starts
    with SIGINT and SIGHUP blocked (:func:`launch`).
    """
    global _token
    fit = fdlimit.fitting(workers, "process")  # under a low limit on open files, those that fit
    if fit is not None:
        workers = fit[0]
    if workers < 1:
        return
    import multiprocessing

    from .reaper import RUN_TOKEN_VAR

    ctx = multiprocessing.get_context("spawn")
    token = os.urandom(16).hex()
    with _lock:
        if _warm or _token is not None:
            return  # already started, not yet adopted or ended
        before = os.environ.get(RUN_TOKEN_VAR)
        os.environ[RUN_TOKEN_VAR] = token
        try:
            for _ in range(workers):
                _warm.append(launch(ctx, CAPACITY, GATES))
        except OSError:
            pass  # the run starts its workers itself
        finally:
            if before is None:
                os.environ.pop(RUN_TOKEN_VAR, None)
            else:
                os.environ[RUN_TOKEN_VAR] = before
        _token = token if _warm else None


def claim_token() -> str | None:
    """The run token the warm workers carry, for the reaper of the run that adopts them; None
    when there are none (the reaper makes its own). Given once."""
    global _token
    with _lock:
        token, _token = _token, None
        return token if _warm else None


def take(capacity: int) -> tuple[Any, Any, list[tuple[Any, ...]]] | None:
    """A warm worker whose gates hold ``capacity`` slots, still alive; None if there is none."""
    with _lock:
        while _warm:
            proc, conn, parts = _warm.pop(0)
            if capacity <= CAPACITY and proc.is_alive():
                return proc, conn, parts
            _end(proc, conn)
        return None


def discard() -> None:
    """End the warm workers no run adopted (their run wanted fewer, or none)."""
    with _lock:
        left, _warm[:] = list(_warm), []
    for proc, conn in ((p, c) for p, c, _ in left):
        _end(proc, conn)


def count() -> int:
    """How many warm workers wait to be adopted."""
    with _lock:
        return len(_warm)


def _end(proc: Any, conn: Any) -> None:
    """Kill a warm worker nothing adopted. Not asked to leave: one still starting would then
    find its gates' semaphores gone (unlinked with their last reference here) and print a
    traceback; a SIGKILL prints nothing, and it has done nothing yet."""
    proc.kill()
    proc.join(1)
    conn.close()
