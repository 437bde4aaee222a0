"""What the runner has decided and not yet committed: the rows of the next group commit.

Outcomes and control changes are staged here as rows of a few kinds (one SQL statement each,
see :data:`STATEMENTS`), with the change of the status counts they make. At a group commit the
runner takes them as one :class:`~.committer.CommitJob`; until that job settles, its counts
stay in :attr:`Staging.unsettled`. The counts committed plus those two are every outcome
decided so far: what the policies decide on (:meth:`Staging.decided`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Final

from .committer import CommitJob
from .models import Counts
from .store import bulk

#: The statement of each kind of row (see store.bulk: each in its executemany and JSON forms).
STATEMENTS: Final = {
    "processing": bulk.PROCESSING,
    "complete": bulk.COMPLETE,
    "failed": bulk.FAILED,
    "retrying": bulk.RETRYING,
    "pending_with_error": bulk.PENDING_WITH_ERROR,
    "requeue": bulk.REQUEUE,
    "skip": bulk.SKIP,
    "skipped_ran": bulk.SKIPPED_RAN,
    "attempt": bulk.ATTEMPT,
}
#: The order the kinds are applied in within one commit.
ORDER: Final = (
    "processing",
    "retrying",
    "pending_with_error",
    "requeue",
    "skip",
    "skipped_ran",
    "failed",
    "complete",
    "attempt",
)


class Staging:
    """The rows and count changes of the next group commit (see the module docstring)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.rows: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
        self.delta: collections.Counter[str] = collections.Counter()
        self.staged = 0  # status changes staged (COMMIT_MAX_CHANGES counts these)
        self.first: float | None = None  # when the oldest staged row was staged
        self.unsettled: collections.Counter[str] = collections.Counter()
        self.meta: dict[str, Any] = {}  # meta rows to write with the changes
        self.ddl: str | None = None  # an index to build in the next commit

    def add_meta(self, key: str, value: Any) -> None:
        """Stage a ``meta`` row, written in the next commit after the changes staged so far."""
        self.meta[key] = value
        if self.first is None:
            self.first = self._clock()

    def build(self, ddl: str) -> None:
        """Build an index in the next commit (on the committer's thread: see engine/committer.py)."""
        self.ddl = ddl
        if self.first is None:
            self.first = self._clock()

    def add(self, kind: str, row: tuple[Any, ...]) -> None:
        """Stage one change. An item's status change counts toward the commit's size; the
        attempt row that logs it goes with it and does not."""
        self.rows[kind].append(row)
        if kind not in ("attempt", "skipped_ran"):
            self.staged += 1
        if self.first is None:
            self.first = self._clock()

    def decided(self, counts: Counts, status: str) -> int:
        """Items of ``status`` counting every outcome decided so far, committed or not."""
        return int(getattr(counts, status)) + self.unsettled[status] + self.delta[status]

    def take(self, results_offset: int, commit_seq: int) -> CommitJob:
        """Everything staged, as one commit job; the staging starts empty again."""
        job = CommitJob(self.rows, results_offset, commit_seq, self.delta, self.meta, self.ddl)
        self.unsettled.update(self.delta)
        self.rows = collections.defaultdict(list)
        self.delta = collections.Counter()
        self.meta, self.ddl = {}, None
        self.staged = 0
        self.first = None
        return job

    def settled(self, job: CommitJob) -> None:
        self.unsettled.subtract(job.delta)

    def clear(self) -> None:
        """Drop everything staged and unsettled (the disk is full: nothing uncommitted is trusted)."""
        self.rows.clear()
        self.delta.clear()
        self.meta, self.ddl = {}, None
        self.staged = 0
        self.first = None
        self.unsettled.clear()
