"""What the runner has decided and not yet committed: the rows of the next group commit.

Outcomes and control changes are staged here as rows of a few kinds (one SQL statement each,
see :data:`SQL`), with the change of the status counts they make. At a group commit the
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

SQL: Final = {
    "processing": "UPDATE items SET status='processing', started_at=? WHERE seq=?",
    "complete": "UPDATE items SET status='complete', attempts=?, finished_at=?, duration_s=?, cost=?, result=?,"
    " error_type=NULL, error_category=NULL, error_message=NULL, error_detail=NULL, error_group=NULL,"
    " started_at=? WHERE seq=?",
    "failed": "UPDATE items SET status='failed', attempts=?, error_type=?, error_category=?, error_message=?,"
    " error_detail=?, error_group=?, finished_at=?, duration_s=?, started_at=? WHERE seq=?",
    # Waiting out a backoff: 'processing' in the store, so a re-scan never dispatches it twice.
    "retrying": "UPDATE items SET status='processing', attempts=?, error_type=?, error_category=?,"
    " error_message=?, error_detail=?, error_group=?, finished_at=?, duration_s=?, started_at=? WHERE seq=?",
    "pending_with_error": "UPDATE items SET status='pending', attempts=?, error_type=?, error_category=?,"
    " error_message=?, error_detail=?, error_group=?, finished_at=?, duration_s=?, started_at=? WHERE seq=?",
    "requeue": "UPDATE items SET status='pending' WHERE seq=?",
    "skip": "UPDATE items SET status='skipped', error_message=?, finished_at=? WHERE seq=?",
    "attempt": "INSERT OR REPLACE INTO attempts(seq, attempt, status, started_at, finished_at, duration_s,"
    " error_type, error_category, error_message, error_detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
}
#: Parameters of a kind's rows that many rows share (see store.Bulk): completions of one
#: chunk share the attempt, the finish time, the cost (None) and the start time.
SHARED: Final = {"complete": (0, 1, 3, 5)}
#: The order the kinds are applied in within one commit.
ORDER: Final = ("processing", "retrying", "pending_with_error", "requeue", "skip", "failed", "complete", "attempt")


class Staging:
    """The rows and count changes of the next group commit (see the module docstring)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.rows: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
        self.delta: collections.Counter[str] = collections.Counter()
        self.staged = 0  # status changes staged (COMMIT_MAX_CHANGES counts these)
        self.first: float | None = None  # when the oldest staged row was staged
        self.unsettled: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, row: tuple[Any, ...]) -> None:
        """Stage one change. An item's status change counts toward the commit's size; the
        attempt row that logs it goes with it and does not."""
        self.rows[kind].append(row)
        if kind != "attempt":
            self.staged += 1
        if self.first is None:
            self.first = self._clock()

    def move(self, src: str, dst: str, n: int = 1) -> None:
        """``n`` items change status from ``src`` to ``dst`` (the counts views show)."""
        self.delta[src] -= n
        self.delta[dst] += n

    def decided(self, counts: Counts, status: str) -> int:
        """Items of ``status`` counting every outcome decided so far, committed or not."""
        return int(getattr(counts, status)) + self.unsettled[status] + self.delta[status]

    def take(self, results_offset: int, commit_seq: int) -> CommitJob:
        """Everything staged, as one commit job; the staging starts empty again."""
        job = CommitJob(self.rows, results_offset, commit_seq, self.delta)
        self.unsettled.update(self.delta)
        self.rows = collections.defaultdict(list)
        self.delta = collections.Counter()
        self.staged = 0
        self.first = None
        return job

    def settled(self, job: CommitJob) -> None:
        self.unsettled.subtract(job.delta)

    def clear(self) -> None:
        """Drop everything staged and unsettled (the disk is full: nothing uncommitted is trusted)."""
        self.rows.clear()
        self.delta.clear()
        self.staged = 0
        self.first = None
        self.unsettled.clear()
