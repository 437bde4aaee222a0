"""Every batch a view lists: the summaries of the batches of a scope, and the registered ones
whose directory is gone (state ``gone``), newest first. ``ls`` and the browser show this list."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .batches import BatchScope, iter_batches
from .registry import gone_batches
from .summary import BatchSummary, summarize

#: The state of a registered batch whose directory was moved or deleted.
GONE: Final = "gone"


def list_batches(where: Path | BatchScope, *, now: float | None = None) -> list[BatchSummary]:
    """The batches of ``where`` (see :class:`BatchScope`), newest first, with the registered
    batches whose directory is gone as rows of state :data:`GONE` (``batchtui cleanup`` forgets
    them)."""
    rows = [summarize(b, now=now) for b in iter_batches(where)]
    rows += [
        BatchSummary(
            batch_id=e.batch_id,
            path=e.path,
            name=e.name,
            state=GONE,
            created_at=e.created_at or None,
            error=f"{e.path} is gone (moved or deleted)",
        )
        for e in gone_batches(where)
    ]
    # By creation second, newest first; a stable sort keeps iter_batches' order within a second
    # (batches made in the same second, by their creation time).
    rows.sort(key=lambda r: r.batch_id[:15], reverse=True)
    return rows


__all__ = ["GONE", "list_batches"]
