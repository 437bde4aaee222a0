"""The items table's marks: which items are marked, how many, and which rows on screen are.

Marks are a :class:`~batchtui.engine.store.queries.Selection` (views and seq ranges, never a
set of rows): ``a`` marks the items a view holds as seq ranges (up to :data:`PIN_LIMIT`), and
every item of a bigger view (300k items) as one filter. Which rows on screen are
marked is one query per paint; how many are marked is one count. :class:`ItemMarks` asks the
table's store (:class:`.items_pages.RowPages`); the table moves the cursor and says when the
marks change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

from batchtui.engine.store.queries import ItemFilter, Selection, StoreError

from .items_pages import RowPages
from .items_rows import Row

#: The most items ``a`` marks one by one (as seq ranges), and a bulk action pins (triage.py):
#: up to this many, the marks are the items the view held then, and a retry retries the items
#: its dialog counted; past it, the view itself (one filter, however many items join it later).
PIN_LIMIT: Final = 10_000


class ItemMarks:
    """The marks of one table (see the module's docstring); ``warn`` logs a failed query,
    ``changed`` is told the marks and their count when the count is set anew."""

    def __init__(self, pages: RowPages, warn: Callable[[str], None], changed: Callable[[Selection, int], None]) -> None:
        self._pages = pages
        self._warn = warn
        self._changed = changed
        self.selection = Selection()
        """The marked items (empty: none)."""
        self.count = 0
        """How many items the marks hold (as of the last count)."""
        self.on_screen: set[int] = set()
        """The marked items among the rows of the last paint."""

    def set_count(self, count: int, *, force: bool = False) -> None:
        """Keep ``count`` as the marks' count; tells ``changed`` when it differs (or ``force``)."""
        if force or count != self.count:
            self.count = count
            self._changed(self.selection, count)

    def with_view(self, f: ItemFilter) -> Selection:
        """The marks plus every item of the view ``f``: the items it holds now (up to
        :data:`PIN_LIMIT`, one query), else the view itself."""
        seqs: list[int] | None = None
        if self._pages.store is not None:
            try:
                seqs = self._pages.store.selected_seqs(Selection.of(f), limit=PIN_LIMIT)
            except StoreError as exc:
                self._warn(f"items.db marks: {exc}")
        return self.selection.add_view(f) if seqs is None else self.selection.add_seqs(seqs)

    def count_of(self, selection: Selection) -> int:
        """How many items ``selection`` holds (one query; the last count when it fails)."""
        if selection.is_empty or self._pages.store is None:
            return 0
        try:
            return self._pages.store.count_selected(selection)
        except StoreError as exc:
            self._warn(f"items.db marks: {exc}")
            return self.count

    def is_marked(self, seq: int) -> bool:
        """Whether item ``seq`` is marked (one query; False when nothing is)."""
        if self.selection.is_empty or self._pages.store is None:
            return False
        try:
            return seq in self._pages.store.selected_among(self.selection, (seq,))
        except StoreError:
            return False

    def among(self, seqs: Sequence[int]) -> set[int]:
        """Which of ``seqs`` are marked: one query."""
        if self.selection.is_empty or self._pages.store is None:
            return set()
        try:
            return self._pages.store.selected_among(self.selection, seqs)
        except StoreError as exc:
            self._warn(f"items.db marks: {exc}")
            return set()

    def among_rows(self, rows: Iterable[Row | None]) -> set[int]:
        """Which of ``rows`` (None: a row not read) are marked: one query, none when nothing is
        marked (``rows`` is not even iterated then: its rows are read on demand)."""
        if self.selection.is_empty or self._pages.store is None:
            return set()
        return self.among([row.seq for row in rows if row is not None])
