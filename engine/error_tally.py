"""The run's error breakdown, kept in step with its committed counts.

live_progress.json carries the failed count and the error breakdown (``errors_by_type``, the
biggest ``error_groups``). Both must describe the same committed state: a breakdown read from
the store now and then lagged the count by whatever failed since (``failed 456`` beside
``{'exit 1': 435}``). So the runner keeps the breakdown the way it keeps the counts: a failure
counts in it when the group commit that marks the item failed settles, in the same step that
adds it to ``counts.failed`` (:meth:`ErrorTally.settled`). What the store changes on its own
(a retry or skip of failed items, the start of a run) is read back from the store with the
counts, when both are at rest (:meth:`ErrorTally.reset`).

The groups are the store's (:func:`~batchtui.engine.store.queries.error_groups`): by error type
and normalized message, biggest first, then by their first item.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Iterable, Sequence
from typing import Any, Final

from .grouping import group_id
from .models import ErrorGroup
from .store import ItemStore

__all__ = ["ErrorTally"]

# A row of the staged "failed" kind (outcomes.OutcomeRecorder._failed, store.bulk.FAILED):
# (attempt, error_type, category, message, detail, normalized message, finished_at,
#  duration_s, started_at, seq).
_TYPE: Final = 1
_CATEGORY: Final = 2
_MESSAGE: Final = 3
_GROUP: Final = 5
_FINISHED: Final = 6
_SEQ: Final = 9


class _Group:
    """One error group as the tally counts it (updated in place as failures come)."""

    __slots__ = (
        "category",
        "count",
        "error_type",
        "example_message",
        "example_seq",
        "first_seen",
        "last_seen",
        "message",
    )

    def __init__(
        self,
        error_type: str,
        category: str,
        message: str,
        count: int,
        example_seq: int,
        example_message: str,
        first_seen: str | None,
        last_seen: str | None,
    ) -> None:
        self.error_type, self.category, self.message, self.count = error_type, category, message, count
        self.example_seq, self.example_message = example_seq, example_message
        self.first_seen, self.last_seen = first_seen, last_seen

    def view(self) -> ErrorGroup:
        return ErrorGroup(
            error_type=self.error_type,
            category=self.category,
            message=self.message,
            count=self.count,
            example_seq=self.example_seq,
            example_message=self.example_message,
            id=group_id(self.error_type, self.message),
            first_seen=self.first_seen,
            last_seen=self.last_seen,
        )


def _min(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else max(a, b)


class ErrorTally:
    """Failed items by error group and by type, as committed (see the module docstring)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], _Group] = {}
        self._by_type: collections.Counter[str] = collections.Counter()
        self._top: tuple[int, list[ErrorGroup]] = (0, [])
        self._version = 0

    @property
    def groups(self) -> int:
        """How many error groups there are."""
        return len(self._groups)

    def reset(self, groups: Iterable[ErrorGroup]) -> None:
        """The breakdown as the store has it (every group: ``error_groups(None)``)."""
        self._groups = {
            (g.error_type, g.message): _Group(
                g.error_type,
                g.category,
                g.message,
                g.count,
                g.example_seq,
                g.example_message,
                g.first_seen,
                g.last_seen,
            )
            for g in groups
        }
        self._by_type = collections.Counter()
        for g in self._groups.values():
            self._by_type[g.error_type] += g.count
        self._version += 1

    def reread(self, store: ItemStore) -> None:
        """The breakdown read back from ``store`` after a change it made on its own (a retry or
        skip of failed items), or as a run takes the batch: call it with every commit settled,
        so the store holds exactly what the counts say."""
        self.reset(store.error_groups(None))

    def settled(self, failed_rows: Sequence[Sequence[Any]]) -> None:
        """The rows of a settled group commit that marked items failed, counted."""
        if not failed_rows:
            return
        groups = self._groups
        for row in failed_rows:
            etype = row[_TYPE] or "unknown"
            message = row[_GROUP] or ""
            seq, finished = int(row[_SEQ]), row[_FINISHED]
            category = row[_CATEGORY] or "item"
            group = groups.get((etype, message))
            if group is None:
                groups[etype, message] = _Group(
                    etype, category, message, 1, seq, row[_MESSAGE] or "", finished, finished
                )
            else:
                group.count += 1
                group.category = max(group.category, category)  # the store's MAX(error_category)
                if seq < group.example_seq:
                    group.example_seq, group.example_message = seq, row[_MESSAGE] or ""
                group.first_seen, group.last_seen = _min(group.first_seen, finished), _max(group.last_seen, finished)
            self._by_type[etype] += 1
        self._version += 1

    def by_type(self) -> dict[str, int]:
        """Failed items by error type, biggest first."""
        return dict(sorted(self._by_type.items(), key=lambda kv: (-kv[1], kv[0])))

    def top(self, n: int) -> list[ErrorGroup]:
        """The ``n`` biggest groups, biggest first (ties: the one whose first item comes first)."""
        version, shown = self._top
        if version != self._version or len(shown) < min(n, len(self._groups)):
            biggest = heapq.nsmallest(n, self._groups.values(), key=lambda g: (-g.count, g.example_seq))
            shown = [g.view() for g in biggest]
            self._top = (self._version, shown)
        return list(shown[:n])
