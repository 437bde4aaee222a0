"""What an earlier engine run of the batch left running on a dask cluster the engine does not own.

An engine killed -9 (or one that gave up Python calls it could not stop, then ended) leaves its
tasks on an existing cluster (``--scheduler``): the scheduler drops what had not begun once the
engine's client is gone, but the items running then run on. The next engine run of the batch
puts those items back to pending and would run them a second time, at the same time. So first
of all, before its start-up check (a task: behind calls holding every thread it would wait, and
the shell items went unkilled meanwhile), it takes the batch on every worker
(:func:`.dask_worker.take_batch_on_worker`, out of band: it needs no free thread):

- nothing more of the earlier runs of the batch begins there (their queued items are refused,
  and a task of theirs that arrives later begins none of its items);
- their shell items are killed (their process groups, as a stop kills them);
- their items still running (a Python call cannot be stopped in a dask worker's thread, and a
  killed shell takes a moment to end) are held back here: a chunk that holds one waits in the
  hand-off (other chunks go past it; a cancel or a skip still finds it there), until every
  worker says none of them runs any more (asked about once a second).

A LocalCluster the engine starts is new: nothing of another run is on it, and nothing is asked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .dask_worker import orphans_on_worker, take_batch_on_worker
from .fmt import count

if TYPE_CHECKING:
    from .dask_executor import DaskExecutor
    from .handoff import Chunk

log = logging.getLogger("batchtui.engine.dask")


def seq_list(seqs: list[int] | set[int] | frozenset[int]) -> str:
    """``#3, #7, #12`` (the first eight, then ``...``)."""
    shown = sorted(seqs)
    return ", ".join(f"#{s}" for s in shown[:8]) + (" ..." if len(shown) > 8 else "")


class Orphans:
    """The items an earlier run of the batch still runs on the cluster (see the module docstring)."""

    def __init__(self, executor: DaskExecutor) -> None:
        self._ex = executor
        #: Their seqs: replaced whole, never changed in place (the dispatcher reads it unlocked).
        self.seqs: frozenset[int] = frozenset()
        #: Not every worker answered (one whose call holds its GIL cannot, a hung one): what an
        #: earlier run still runs there is not known, so nothing goes out until every one has.
        self.unknown = False
        #: Whether the batch ran before (the engine says; a first run has nothing to take).
        self.earlier = True

    def take_batch(self) -> str | None:
        """Take the batch on every worker; what the operator is told (None: nothing was left)."""
        task = self._ex.task
        answers, complete = self._ex.dask.ask_all(take_batch_on_worker, task.batch, task.engine)
        running = self.seqs = frozenset(seq for reply in answers for seq in reply)
        notes = []
        if not complete:
            self.unknown = True
            notes.append(
                "not every dask worker answered whether an earlier run of this batch left items running there"
                " (one busy with a call that holds its GIL, or hung?): nothing starts here until every worker"
                " has answered (a hung worker: restart it)"
            )
        if running:
            shell = self._ex.spec.kind == "shell"
            notes.append(
                f"{count(len(running), 'item')} of an earlier run of this batch still"
                f" {'run' if len(running) != 1 else 'runs'} on the dask cluster ({seq_list(running)}):"
                f" {'killed, and ' if shell else ''}each runs again here once it has ended"
                f"{'' if shell else ' (a Python call cannot be stopped on a cluster the engine does not own)'}"
            )
        return "; ".join(notes) or None

    def refresh(self) -> None:
        """Ask the workers which of them still run (a worker that does not answer keeps its own);
        while not every worker has answered, take the batch again."""
        task = self._ex.task
        if self.unknown:
            answers, complete = self._ex.dask.ask_all(take_batch_on_worker, task.batch, task.engine)
            if complete:
                self.seqs = frozenset(seq for reply in answers for seq in reply)  # nothing of ours began
                self.unknown = False
                log.info("dask: every worker answered; the earlier run's items %s still run", seq_list(self.seqs))
            return
        if not self.seqs:
            return
        answers, complete = self._ex.dask.ask_all(orphans_on_worker, task.batch, task.engine)
        if not complete:
            return
        running = frozenset(seq for reply in answers for seq in reply)
        ended = self.seqs - running
        self.seqs = running & self.seqs  # never more: an item of ours is never an orphan
        if ended:
            log.info("dask: the earlier run's items %s ended: they go out now", seq_list(ended))

    def blocks(self, chunk: Chunk) -> bool:
        """Whether ``chunk`` holds an item an earlier run still runs, or may (it waits in the hand-off)."""
        seqs = self.seqs
        return self.unknown or (bool(seqs) and any(item.seq in seqs for item in chunk.items))

    @property
    def holding(self) -> bool:
        """Whether any chunk may be held (:meth:`blocks`)."""
        return self.unknown or bool(self.seqs)


__all__ = ["Orphans"]
