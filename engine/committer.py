"""The run's group commits, on a thread of their own.

The runner thread decides every change (it stays the single source of truth for what goes
into the store); the committer only carries out group commits, one at a time and in order,
on its own connection:

1. ``fdatasync`` results.jsonl, so every line the commit's offset covers is durable;
2. one transaction: the staged item changes (each kind as one statement over a JSON array,
   see :class:`~batchtui.engine.store.Bulk`), then ``results_offset`` and ``commit_seq``.

Both steps run in C without the GIL (the fsyncs, SQLite's loop over the rows), so the runner
thread goes on dispatching and collecting outcomes on the other core meanwhile. Jobs queue up
to :data:`MAX_QUEUED` deep; past that, :meth:`Committer.submit` waits (back-pressure).

The runner applies a job's count changes only once it is committed (:meth:`Committer.done`),
so live_progress.json and the manifest always show committed counts, with the commit_seq
that holds them.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .files import ResultsLog
from .store import Bulk, ItemStore

MAX_QUEUED: Final = 2


@dataclass(slots=True)
class CommitJob:
    """One group commit: item changes by kind, the results.jsonl offset they go with."""

    rows: Mapping[str, Sequence[tuple[Any, ...]]]
    offset: int
    commit_seq: int
    delta: collections.Counter[str] = field(default_factory=collections.Counter)
    finished: int = 0  # items that reached a final status in this job (for the rate)


class Committer:
    """Carries out :class:`CommitJob` s in order on its own thread and connection.

    ``order`` names the kinds in the order their statements run; ``sql`` gives each kind's
    ``executemany`` statement, ``shared`` the parameters many of a kind's rows share (see
    :class:`~batchtui.engine.store.Bulk`). ``wake`` is called after every job (the runner's loop waits
    on its completion queue). A failure (a full disk) stops the committer: later jobs are
    dropped, and :meth:`done` / :meth:`drain` raise it on the runner thread.
    """

    def __init__(
        self,
        store: ItemStore,
        results: ResultsLog,
        *,
        order: Sequence[str],
        sql: Mapping[str, str],
        shared: Mapping[str, tuple[int, ...]] | None = None,
        durable: bool,
        synced_offset: int,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._results = results
        self._order = tuple(order)
        self._bulk = {kind: Bulk.of(sql[kind], (shared or {}).get(kind, ())) for kind in self._order}
        self._durable = durable
        self._synced = synced_offset
        self._wake = wake
        self._cond = threading.Condition()
        self._queue: collections.deque[CommitJob | None] = collections.deque()
        self._done: list[CommitJob] = []
        self._busy = False
        self._closed = False
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="batchtui-commit", daemon=True)
        self._thread.start()

    # -- runner thread ---------------------------------------------------------------------

    def submit(self, job: CommitJob) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the committer is closed")
            while len(self._queue) >= MAX_QUEUED and self.failure is None:
                self._cond.wait()
            self._queue.append(job)
            self._cond.notify_all()

    def done(self) -> list[CommitJob]:
        """Jobs committed since the last call, in order. Raises the committer's failure."""
        with self._cond:
            jobs, self._done = self._done, []
            failure = self.failure
        if failure is not None:
            raise failure
        return jobs

    def drain(self) -> list[CommitJob]:
        """Wait until every submitted job is committed; returns those not yet collected."""
        with self._cond:
            while (self._queue or self._busy) and self.failure is None and not self._closed:
                self._cond.wait()
        return self.done()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread and close its connection."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.append(None)
            self._cond.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._store.close()

    def abandon(self) -> None:
        """Drop the queued jobs (after a failure), wait for the one running, stop."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._queue.append(None)
            self._cond.notify_all()
        self._thread.join(30.0)
        if not self._thread.is_alive():
            self._store.close()

    # -- committer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                job = self._queue.popleft()
                if job is None:
                    self._cond.notify_all()
                    return
                self._busy = self.failure is None
                self._cond.notify_all()  # room in the queue
            if self._busy:
                try:
                    self._commit(job)
                except BaseException as exc:  # a full disk: the runner halts the batch
                    with self._cond:
                        self.failure = exc
                else:
                    with self._cond:
                        self._done.append(job)
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            self._wake()

    def _commit(self, job: CommitJob) -> None:
        if job.offset > self._synced:
            if self._durable:
                self._results.datasync()  # the lines before the offset that records them
            self._synced = job.offset
        conn = self._store.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind in self._order:
                rows = job.rows.get(kind)
                if rows:
                    self._bulk[kind].run(conn, rows)
            conn.execute(
                "INSERT OR REPLACE INTO meta(k, v) VALUES ('results_offset', ?), ('commit_seq', ?)",
                (job.offset, job.commit_seq),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
