"""The items table's page cache: the rows of one view, read from ``items.db`` a page at a time.

One query per page miss (:data:`PAGE_SIZE` rows), at most :data:`MAX_PAGES` pages kept (LRU),
so a 1M-item batch costs the table the same as a 100-item one. :class:`RowPages` also holds the
table's read-only connection (:class:`~batchtui.engine.store.queries.ItemQueries`): whether the
store could be opened, and why not, is what the table says when it cannot show rows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from batchtui.engine.fmt import clean
from batchtui.engine.store.queries import ItemFilter, ItemQueries, StoreError

from .items_rows import Row

PAGE_SIZE: Final = 200
"""Rows fetched per query."""
MAX_PAGES: Final = 20
"""Pages kept in the LRU cache (so at most ``PAGE_SIZE * MAX_PAGES`` rows in memory)."""


class RowPages:
    """The pages of rows of one view of the ``items.db`` at ``db_path`` (see the module's
    docstring); ``warn`` logs a page that could not be read (the line is drawn blank);
    ``running`` gives the running items' times so far, which "slowest first" orders them by."""

    def __init__(
        self, db_path: Path, warn: Callable[[str], None], running: Callable[[], Mapping[int, float]] = dict
    ) -> None:
        self.db_path = db_path
        self._running = running
        self.store: ItemQueries | None = None
        self.store_error: str | None = None
        """Why the store could not be opened (None: it is open, or not tried yet)."""
        self.misses = 0
        """Queries issued for pages so far (for tests and benchmarks)."""
        self._warn = warn
        self._pages: OrderedDict[int, list[Row]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pages)

    def open(self) -> bool:
        """Open the store; False (and :attr:`store_error` says why) when it cannot be."""
        try:
            self.store = ItemQueries(self.db_path)
        except StoreError as exc:
            self.store, self.store_error = None, clean(exc, 200)
            return False
        self.store_error = None
        return True

    def close(self) -> None:
        """Close the store and drop the pages."""
        if self.store is not None:
            self.store.close()
            self.store = None
        self._pages.clear()

    def clear(self) -> None:
        """Drop every page (the view or the store changed)."""
        self._pages.clear()

    def snapshot(self) -> dict[int, list[Row]]:
        """The pages held now, by number."""
        return dict(self._pages)

    def changed(self, before: dict[int, list[Row]], first: int, n: int, count: int, f: ItemFilter, order: str) -> bool:
        """Whether the pages of rows ``first .. first+n`` (of ``count`` in the view), each read again
        (one query: they are kept), differ from the ``before`` :meth:`snapshot`."""
        numbers = range(first // PAGE_SIZE, min((first + n) // PAGE_SIZE + 1, -(-count // PAGE_SIZE)))
        return [self.fetch(number, f, order) for number in numbers] != [before.get(number) for number in numbers]

    def index_of(self, seq: int) -> int | None:
        """Where item ``seq`` is in the view, if it is among the rows read (the pages of the
        screen); None otherwise."""
        for number, page in self._pages.items():
            for offset, row in enumerate(page):
                if row.seq == seq:
                    return number * PAGE_SIZE + offset
        return None

    def row(self, index: int, item_filter: ItemFilter, order: str) -> Row | None:
        """Row ``index`` of the view (``item_filter`` in ``order``): from the cache, or its page
        is read; None past the rows read or when the page cannot be read."""
        number, offset = divmod(index, PAGE_SIZE)
        page = self._pages.get(number)
        if page is None:
            page = self.fetch(number, item_filter, order)
            if page is None:
                return None
        else:
            self._pages.move_to_end(number)
        return page[offset] if offset < len(page) else None

    def fetch(self, number: int, item_filter: ItemFilter, order: str) -> list[Row] | None:
        """Read page ``number`` of the view from the store (one query) and keep it."""
        if self.store is None:
            return None
        self.misses += 1
        try:
            items = self.store.page(item_filter, number * PAGE_SIZE, PAGE_SIZE, order, self._running())
        except StoreError as exc:
            self._warn(f"items.db page {number}: {exc}")
            return None
        page = [Row.from_item(item) for item in items]
        self._pages[number] = page
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)
        return page
