"""Stopping a killed Python call on the engine's own LocalCluster: its worker is restarted.

A Python call cannot be interrupted in a dask worker's thread (see :mod:`.dask_executor`, Kills).
A kill of one (a timeout, a skip, a stop) is put here; the reaper thread salvages every task of
this engine on that worker (the outcomes decided so far, the items not begun) and restarts the
worker. A task lost with a worker restarted here is put down to the restart, not to its items
(:meth:`WorkerReaper.restarted_for`). Nothing is submitted while a restart is under way
(:meth:`.dask_ledger.Ledger.hold`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from typing import TYPE_CHECKING, Final

from .dask_worker import processing_on, salvage_tasks

if TYPE_CHECKING:
    from .dask_executor import DaskExecutor

log = logging.getLogger("batchtui.engine.dask")

#: How long after a restart of ours a task lost with that worker is put down to the restart.
RESTART_WINDOW_S: Final = 30.0


class WorkerReaper:
    """The killed items of a :class:`~.dask_executor.DaskExecutor` (task key, index in it), and
    the workers restarted to stop them."""

    def __init__(self, executor: DaskExecutor) -> None:
        self._ex = executor
        self._queue: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._restarted: dict[str, float] = {}  # worker address -> when it was restarted here

    def put(self, where: tuple[str, int]) -> None:
        """Stop the item at ``where`` (task key, index) by restarting its worker."""
        self._queue.put(where)

    def restarted_for(self, exc: BaseException) -> bool:
        """The task died with a worker the reaper restarted to stop another item (a task that
        reached it after the salvage): not its items' failure."""
        address = getattr(getattr(exc, "last_worker", None), "address", None)
        at = self._restarted.get(address) if isinstance(address, str) else None
        return at is not None and time.monotonic() - at < RESTART_WINDOW_S

    def run(self) -> None:
        """The reaper thread: stop the killed items put here, a group at a time."""
        while not self._ex._closing.is_set():
            try:
                killed = {self._queue.get(timeout=0.2)}
            except queue.Empty:
                continue
            with contextlib.suppress(queue.Empty):
                while True:
                    killed.add(self._queue.get_nowait())
            self._ex.ledger.hold()
            try:
                self._reap_now(killed)
            except Exception:
                if not self._ex._closing.is_set():
                    log.exception("dask reaper")
            finally:
                self._ex.ledger.unhold()

    def _reap_now(self, killed: set[tuple[str, int]]) -> None:
        """On each worker still running a ``killed`` item (task key, index): salvage every task
        of ours there (the outcomes decided, the items not begun), then restart the worker."""
        sizes = self._ex.ledger.sizes()
        where: dict[str, str] = self._ex.client.run_on_scheduler(processing_on, list(sizes))
        workers = {where[k] for k, _ in killed if k in where}
        for address in sorted(workers):
            on_worker = [k for k, a in where.items() if a == address]
            try:
                wanted = {k: sizes[k] for k in on_worker}
                mine = [(k, i) for k, i in killed if where.get(k) == address]
                replies = self._ex.client.run(salvage_tasks, wanted, mine, workers=[address], on_error="return")
                reply = replies.get(address)
            except Exception as exc:
                reply = exc
            if reply is None:
                continue  # the killed items ended before: their outcomes come as usual
            restart = False
            for key in on_worker:
                salvaged = self._ex.ledger.salvaged(key, reply)
                if salvaged is None:
                    continue
                out, lost, future, began_at = salvaged
                restart = restart or bool(lost)
                if future is not None:
                    with contextlib.suppress(Exception):
                        self._ex.client.cancel([future])
                # The item killed ran from when its worker's gate began it (this machine's clock).
                self._ex.completions.put(out + self._ex._lost(lost, None, "killed by the engine", began_at))
            if restart and not self._ex._closing.is_set():
                log.info("restarting dask worker %s to stop a killed item", address)
                self._restarted[address] = time.monotonic()
                self._ex.client.restart_workers([address], raise_for_error=False)
                self._restarted[address] = time.monotonic()  # the window counts from its end


__all__ = ["RESTART_WINDOW_S", "WorkerReaper"]
