"""The run's group commits, on a thread of their own.

The runner thread decides every change (it stays the single source of truth for what goes
into the store); the committer only carries out group commits, one at a time and in order,
on its own connection:

1. ``fdatasync`` results.jsonl, so every line the commit's offset covers is durable;
2. one transaction: the staged item changes (each kind as one statement over a JSON array,
   see :class:`~batchtui.engine.store.Bulk`), then ``results_offset`` and ``commit_seq``.

Both steps run in C without the GIL (the fsyncs, SQLite's loop over the rows), so the runner
thread goes on dispatching and collecting outcomes on the other core meanwhile. Each return
from C waits for the GIL, which the runner and the workers hold most of the time: so the
transaction is a single statement, one INSERT of a row per statement into a temporary view
whose INSTEAD OF triggers run the statements (:class:`OneStatement`). In autocommit mode
SQLite begins and commits it within that one step: the GIL is taken back twice a commit
(after the fsync, after the statement), not after BEGIN, every statement, the offsets and
COMMIT, each of which would wait behind the busy runner thread: with quick items the commits
come many times a second, and those waits would add up to a large part of a run.

Jobs queue up to :data:`MAX_QUEUED` deep; past that, :meth:`Committer.submit` waits
(back-pressure). A job may also build an index (:attr:`CommitJob.ddl`: the slowest-first one,
which a view asks for): a scan of the whole table under the write lock, seconds on a large
batch. It runs here, in its place among the commits, so the runner thread goes on handing out
work and taking in outcomes meanwhile; the jobs it submits during the build queue up without
back-pressure (the runner must not wait for the build), and the limit comes back down to
:data:`MAX_QUEUED` as the committer works through them (the runner waits for none of those
either unless the queue grows again).

The runner applies a job's count changes only once it is committed (:meth:`Committer.done`),
so live_progress.json and the manifest always show committed counts, with the commit_seq
that holds them.
"""

from __future__ import annotations

import collections
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .files import ResultsLog
from .store import JSON_BULK, Bulk, ItemStore
from .store.connection import write_transaction

MAX_QUEUED: Final = 2
#: The offsets every commit records, after the item changes.
_META_SQL: Final = "INSERT OR REPLACE INTO meta(k, v) VALUES ('results_offset', ?), ('commit_seq', ?)"
#: SQLite's limit on a statement's parameters is 32766 (3.32+): a bigger job goes statement by statement.
_MAX_PARAMS: Final = 30_000


class OneStatement:
    """A whole group commit as one statement: ``INSERT INTO temp.batchtui_commit VALUES
    (step, blob, p1, p2, ...), ...``, one row per statement of the job, in order, and the
    offsets last. The view's INSTEAD OF triggers, one per statement form (each kind's
    :class:`~batchtui.engine.store.Bulk` grouped or with whole rows, and the offsets), run the
    statement with the row's JSON array and shared values. Nothing of it is stored in
    items.db: the view and its triggers are TEMP, on the committer's connection only.
    """

    VIEW: Final = "batchtui_commit"

    def __init__(self, conn: sqlite3.Connection, bulks: Mapping[str, Bulk], order: Sequence[str]) -> None:
        self._bulks = bulks
        self._order = tuple(order)
        self._width = max([2, *(len(b.shared) for b in bulks.values())])
        cols = ", ".join(["step", "blob", *(f"p{i}" for i in range(1, self._width + 1))])
        nulls = ", ".join(["NULL"] * (self._width + 2))
        self._row = "(" + ", ".join("?" * (self._width + 2)) + ")"
        self._head = f"INSERT INTO temp.{self.VIEW}({cols}) VALUES "
        # Dropping the view drops its triggers: a connection used before gets this job's forms.
        conn.execute(f"DROP VIEW IF EXISTS temp.{self.VIEW}")
        conn.execute(f"CREATE TEMP VIEW {self.VIEW}({cols}) AS SELECT {nulls}")
        bodies = {"meta": _META_SQL.replace("?", "NEW.p{}").format(1, 2)}
        for kind in self._order:
            bulk = bulks[kind]
            bodies[f"{kind}:rows"] = bulk.trigger_body(grouped=False)
            if bulk.grouped_sql is not None:
                bodies[f"{kind}:grouped"] = bulk.trigger_body(grouped=True)
        for i, (step, body) in enumerate(bodies.items()):
            conn.execute(
                f"CREATE TEMP TRIGGER {self.VIEW}_{i} INSTEAD OF INSERT ON {self.VIEW}"
                f" WHEN NEW.step = '{step}' BEGIN {body}; END"
            )

    @classmethod
    def create(cls, conn: sqlite3.Connection, bulks: Mapping[str, Bulk], order: Sequence[str]) -> OneStatement | None:
        """None where this SQLite cannot (before 3.38: no JSON bulk forms)."""
        if not JSON_BULK or any(bulks[kind].json_sql is None for kind in order):
            return None
        try:
            return cls(conn, bulks, order)
        except sqlite3.Error:
            return None

    def statement(self, job: CommitJob) -> tuple[str, list[Any]] | None:
        """The job as (sql, parameters); None when some rows cannot go as JSON (or too many)."""
        params: list[Any] = []
        pad = self._width
        for kind in self._order:
            rows = job.rows.get(kind)
            if not rows:
                continue
            for step in self._bulks[kind].plan(rows):
                if step.blob is None:
                    return None
                params += [f"{kind}:grouped" if step.grouped else f"{kind}:rows", step.blob, *step.values]
                params += [None] * (pad - len(step.values))
        params += ["meta", None, job.offset, job.commit_seq, *[None] * (pad - 2)]
        if len(params) > _MAX_PARAMS:
            return None
        n = len(params) // (pad + 2)
        return self._head + ", ".join([self._row] * n), params


@dataclass(slots=True)
class CommitJob:
    """One group commit: item changes by kind, the results.jsonl offset they go with."""

    rows: Mapping[str, Sequence[tuple[Any, ...]]]
    offset: int
    commit_seq: int
    delta: collections.Counter[str] = field(default_factory=collections.Counter)
    #: More ``meta`` rows to write in the same transaction, after the changes (how far
    #: control.jsonl is read: recorded after the effects of the commands read).
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: A statement to run first, in the same transaction (an index to build); its seconds are
    #: in :attr:`ddl_s` once the job is committed.
    ddl: str | None = None
    ddl_s: float | None = None


class Committer:
    """Carries out :class:`CommitJob` s in order on its own thread and connection.

    ``order`` names the kinds in the order their statements run; ``statements`` gives each
    kind's statement (a :class:`~batchtui.engine.store.Bulk`, in its hand-written forms).
    ``wake`` is called after every job (the runner's loop waits on its completion queue). A failure (a full disk) stops the committer: later jobs are
    dropped, and :meth:`done` / :meth:`drain` raise it on the runner thread.
    """

    def __init__(
        self,
        store: ItemStore,
        results: ResultsLog,
        *,
        order: Sequence[str],
        statements: Mapping[str, Bulk],
        durable: bool,
        synced_offset: int,
        wake: Callable[[], None],
        one_statement: bool = True,
    ) -> None:
        self._store = store
        self._results = results
        self._order = tuple(order)
        self._bulk = {kind: statements[kind] for kind in self._order}
        self._one = OneStatement.create(store.conn, self._bulk, self._order) if one_statement else None
        self._durable = durable
        self._synced = synced_offset
        self._wake = wake
        self._cond = threading.Condition()
        self._queue: collections.deque[CommitJob | None] = collections.deque()
        self._done: list[CommitJob] = []
        self._busy = False
        self._closed = False
        self._limit = MAX_QUEUED  # the queue's depth where submit waits (lifted by a build)
        self._building = 0  # jobs with a ddl queued or running
        self._settling = 0  # jobs committed since the limit was lifted
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="batchtui-commit", daemon=True)
        self._thread.start()

    # -- runner thread ---------------------------------------------------------------------

    def submit(self, job: CommitJob) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the committer is closed")
            while len(self._queue) >= self._limit and self.failure is None:
                self._cond.wait()
            if job.ddl is not None:
                self._building += 1
                self._limit, self._settling = sys.maxsize, 0
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

    def synced_to(self, offset: int) -> None:
        """results.jsonl was rewritten, durable up to ``offset`` (call it with no job queued):
        the next commit past ``offset`` syncs the file again, whatever offsets came before."""
        with self._cond:
            self._synced = offset

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
                if job.ddl is not None:
                    self._building -= 1
                if not self._building and self._limit > MAX_QUEUED:
                    # After a build: the limit falls with the backlog, by one more every second
                    # job, so the runner waits a job's commit now and then, not for the backlog.
                    self._settling += 1
                    cap = self._limit - (self._settling & 1)
                    self._limit = max(MAX_QUEUED, min(cap, len(self._queue) + 1))
                self._cond.notify_all()
            self._wake()

    def _commit(self, job: CommitJob) -> None:
        if job.offset > self._synced:
            if self._durable:
                self._results.datasync()  # the lines before the offset that records them
            self._synced = job.offset
        conn = self._store.conn
        plain = job.ddl is None and not job.meta
        one = self._one.statement(job) if plain and self._one is not None and not conn.in_transaction else None
        if one is not None:
            try:
                conn.execute(*one)  # autocommit: its own transaction, begun and committed in C
                return
            except sqlite3.OperationalError as exc:
                # Busy: another connection writes (it should not). BEGIN IMMEDIATE below waits.
                if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
        with write_transaction(conn):
            if job.ddl is not None:
                started = time.monotonic()
                conn.execute(job.ddl)
                job.ddl_s = time.monotonic() - started
            for kind in self._order:
                rows = job.rows.get(kind)
                if rows:
                    self._bulk[kind].run(conn, rows)
            conn.execute(_META_SQL, (job.offset, job.commit_seq))
            if job.meta:
                conn.executemany("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", list(job.meta.items()))
