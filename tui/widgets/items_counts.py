"""The items table's counting: how many rows its view has, how many the store holds (what sizes
the seq column) and how many items its marks hold.

A count is three queries (:func:`count_rows`): the store's size is one index lookup, and so is
the view's count when nothing is filtered. A filtered count may scan the store: one that took
longer than :data:`COUNT_BUDGET_S` last time is run by :meth:`ItemsTable.refresh_data
<.items_table.ItemsTable.refresh_data>` in a worker thread, on a connection of its own, and
comes back as a :class:`~.items_messages.CountReady`. One such count runs at a time (a refresh
asked for meanwhile runs once when it ends), and one started before the latest filter change is
dropped: each change bumps :attr:`ViewCounts.generation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

from batchtui.engine.store.queries import ItemFilter, ItemQueries, Selection, StoreError

from .items_messages import CountReady

COUNT_BUDGET_S: Final = 0.015
"""A filtered recount slower than this moves off the UI thread on the table's next refresh."""


def count_rows(store: ItemQueries, item_filter: ItemFilter, selection: Selection) -> tuple[int, int, int]:
    """(rows in the filtered view, rows in the store: what sizes the seq column, marked items)."""
    total = store.size()
    marked = 0 if selection.is_empty else store.count_selected(selection)
    return (total if item_filter.is_everything else store.count(item_filter)), total, marked


class ViewCounts:
    """The counting of one table's view of the ``items.db`` at ``db_path`` (see the module's
    docstring); ``warn`` logs a count that failed on the UI thread (the last figures stay)."""

    def __init__(
        self,
        db_path: Path,
        warn: Callable[[str], None],
        marks: Callable[[], Selection],
        post: Callable[[CountReady], object],
    ) -> None:
        self.db_path = db_path
        self.total = 0
        """Rows in the whole store, as of the last count."""
        self.generation = 0
        """Bumped on every filter change: a background count of an older one is dropped."""
        self.elapsed = 0.0
        """How long the last count took (seconds)."""
        self._warn = warn
        self._marks = marks  # the marks as they are now
        self._post = post
        self._running = False
        self._again = False

    @property
    def is_slow(self) -> bool:
        """Whether the last count took longer than :data:`COUNT_BUDGET_S`."""
        return self.elapsed > COUNT_BUDGET_S

    def now(self, store: ItemQueries, item_filter: ItemFilter, selection: Selection) -> tuple[int, int] | None:
        """Count on this thread: (rows in the view, marked items); None when the store failed."""
        started = time.perf_counter()
        try:
            count, self.total, marked = count_rows(store, item_filter, selection)
        except StoreError as exc:
            self._warn(f"items.db count: {exc}")
            return None
        self.elapsed = time.perf_counter() - started
        return count, marked

    def background(self, item_filter: ItemFilter, selection: Selection) -> Callable[[], None] | None:
        """The count to run in a worker thread; None when one runs (it is run again when it ends)."""
        if self._running:
            self._again = True
            return None
        self._running = True
        return partial(self._in_thread, item_filter, selection, self.generation)

    def _in_thread(self, item_filter: ItemFilter, selection: Selection, generation: int) -> None:
        """On a connection of its own (a long COUNT would hold the UI's); posts the
        :class:`CountReady` whatever happens."""
        count = total = marked = None
        started = time.perf_counter()
        try:
            with ItemQueries(self.db_path) as store:
                count, total, marked = count_rows(store, item_filter, selection)
        except StoreError:
            pass
        finally:
            if selection != self._marks():  # marked meanwhile: that count is set_selection's
                marked = None
            self._post(CountReady(generation, count, total, marked, time.perf_counter() - started))

    def end(self, message: CountReady) -> tuple[int | None, bool]:
        """A background count came back: (the view's count when it is current, else None;
        whether to count again, asked for while it ran)."""
        self._running = False
        count = None
        if message.generation == self.generation and message.count is not None:
            count = message.count
            self.elapsed = message.elapsed
            self.total = message.total if message.total is not None else self.total
        again, self._again = self._again, False
        return count, again
