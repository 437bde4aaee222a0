"""Deep slowest-first pages from anchors (engine/store/keyset.py): the same rows as the full
sort, at every depth and in any order of reading, and a deep page walks no more than the first.

The anchors are spaced :data:`~batchtui.engine.store.keyset.STEP` entries apart; here the step
is made small, so a store of a few hundred items has many of them and every page starts from
one. The reference is test_slowest's full sort (``LIMIT ? OFFSET ?`` over every row).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from batchtui.engine.store import keyset
from batchtui.engine.store.queries import ItemFilter, ItemQueries, page
from batchtui.engine.store.schema import SLOWEST_INDEX

from .test_slowest import N, _make_store, _old_page, _runnings

BY_STATUS = {
    "all": ItemFilter(),
    "complete": ItemFilter(status="complete"),
    "failed": ItemFilter(status="failed"),
    "skipped": ItemFilter(status="skipped"),
    "pending": ItemFilter(status="pending"),
    "in flight": ItemFilter(status="processing"),
}


@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    """test_slowest's items (many ties), with the index, and a few durations edited by hand
    into text (SQLite orders text above every number) or a whole number."""
    path = tmp_path / "items.db"
    _make_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(SLOWEST_INDEX)
        conn.execute("UPDATE items SET duration_s = 'x' WHERE seq IN (3, 40, 41)")
        conn.execute("UPDATE items SET duration_s = 'abc' WHERE seq = 77")
        conn.execute("UPDATE items SET duration_s = 2 WHERE seq IN (90, 91)")
    return path


@pytest.mark.parametrize("step", [1, 4, 9])
@pytest.mark.parametrize("name", list(BY_STATUS))
def test_pages_read_in_any_order_are_the_full_sorts(
    indexed: Path, monkeypatch: pytest.MonkeyPatch, step: int, name: str
) -> None:
    monkeypatch.setattr(keyset, "STEP", step)
    f = BY_STATUS[name]
    rnd = random.Random(step)
    with ItemQueries(indexed) as q:
        for label, running in _runnings(indexed):
            rows = len(_old_page(q._conn, f, 0, 10 * N, running))
            offsets = [*range(0, rows + 3), rows + 40]
            rnd.shuffle(offsets)  # deep first, then back up: anchors found out of order
            for offset in offsets:
                limit = rnd.choice((1, 2, 5, 13, 60))
                want = _old_page(q._conn, f, offset, limit, running)
                assert q.page(f, offset, limit, "duration", running) == want, (label, offset, limit)


def test_anchors_are_dropped_when_the_store_changes(indexed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another connection commits (the engine finishes items, a retry puts some back): the
    pages read after it are the new order's, not the old anchors'."""
    monkeypatch.setattr(keyset, "STEP", 4)
    f = ItemFilter()
    with ItemQueries(indexed) as q:
        rows = len(_old_page(q._conn, f, 0, 10 * N, {}))
        before = [q.page(f, offset, 7, "duration") for offset in range(0, rows, 7)]
        with sqlite3.connect(indexed) as writer:
            writer.execute("UPDATE items SET status = 'complete', duration_s = 50.0 + seq WHERE status = 'pending'")
            writer.execute("UPDATE items SET status = 'pending' WHERE status = 'failed' AND seq % 2 = 0")
        after = [q.page(f, offset, 7, "duration") for offset in range(0, rows, 7)]
        assert after == [_old_page(q._conn, f, offset, 7, {}) for offset in range(0, rows, 7)]
        assert after != before


def _steps(q: ItemQueries, f: ItemFilter, offset: int, limit: int, anchors: bool = True) -> int:
    """SQLite virtual-machine steps a page read takes (counted by a progress handler), through
    ``q``'s anchors (None: with none, as a read inside a caller's transaction)."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    q._conn.set_progress_handler(tick, 1)
    try:
        if anchors:
            q.page(f, offset, limit, "duration")
        else:
            page(q._conn, f, offset, limit, "duration")
    finally:
        q._conn.set_progress_handler(None, 1)
    return count[0]


@pytest.mark.parametrize("name", ["all", "complete", "pending"])
def test_a_deep_page_read_again_costs_what_the_first_does(tmp_path: Path, name: str) -> None:
    """20,000 items: once a depth was reached, a page there (the last one; a middle one) takes
    about the steps of the first page, where an OFFSET takes steps for every entry above it."""
    path = tmp_path / "big.db"
    _make_big(path, 20_000)
    f = BY_STATUS[name]
    with ItemQueries(path) as q:
        rows = q.count(f)
        last = (rows - 1) // 50 * 50
        first_cost = _steps(q, f, 0, 50)
        assert _steps(q, f, last, 50, anchors=False) > 10 * first_cost + 20_000  # OFFSET walks there
        _steps(q, f, last, 50)  # the first read down there hops to it
        assert _steps(q, f, last, 50) < 5 * first_cost + 5000
        assert _steps(q, f, rows // 2, 50) < 5 * first_cost + 5000


def test_a_run_read_again_after_others_pushed_it_out_is_walked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anchors are kept for a few runs: one pushed out by others, then read again, gets its
    anchors back (its length kept alone would leave it reading from its first entry)."""
    monkeypatch.setattr(keyset, "_MAX_RUNS", 1)
    path = tmp_path / "big.db"
    _make_big(path, 20_000)
    complete, failed = BY_STATUS["complete"], BY_STATUS["failed"]
    with ItemQueries(path) as q:
        last = (q.count(complete) - 1) // 50 * 50
        first_cost = _steps(q, complete, 0, 50)
        q.page(complete, q.count(complete) + 10, 50, "duration")  # past the end: walked whole
        q.page(failed, 0, 50, "duration")  # another run: the first one's anchors go
        _steps(q, complete, last, 50)  # hops there again
        assert _steps(q, complete, last, 50) < 5 * first_cost + 5000


def _make_big(path: Path, n: int) -> None:
    """``n`` items: 70% complete (durations with ties), a few failed, the rest pending."""
    from batchtui.engine.store import ItemStore, LineBlock

    store = ItemStore.create(path, durable=False)
    keys = [f"k{i}" for i in range(n)]
    store.enqueue([LineBlock(keys, keys, "lines")])
    rnd = random.Random(5)
    with store.transaction() as conn:
        rows = [(round(rnd.random() * 10, 1 if i % 3 else 4), i) for i in range(int(n * 0.7))]
        conn.executemany("UPDATE items SET status = 'complete', duration_s = ? WHERE seq = ?", rows)
        conn.execute("UPDATE items SET status = 'failed', duration_s = 1.5 WHERE seq % 97 = 0")
        conn.execute(SLOWEST_INDEX)
    store.close()
