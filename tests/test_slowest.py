"""Slowest first (engine/store/slowest.py): a page is the one the full sort gave, row for row.

The reference is the query the views ran before: every row of the view sorted by the duration
it shows (the running items' times bound in a CASE), ``LIMIT ? OFFSET ?``. Each page of many
views, at every depth, with and without the index and with items running or not, must be its
page exactly: ties, NULLs, items in flight with an older try's duration, durations of items
pending again, a running item the store no longer says is handed out.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.grouping import group_id, normalize_message
from batchtui.engine.store import ItemStore, LineBlock
from batchtui.engine.store.queries import ItemFilter, ItemQueries, item_row
from batchtui.engine.store.schema import ITEM_COLUMNS, SLOWEST_INDEX, has_slowest_index
from batchtui.engine.store.selection import where
from batchtui.engine.store.slowest import finished_sql, walks_index

N = 240
_ERRORS = (("HTTPError", "status 503"), ("TimeoutError", "timed out"), ("exit 3", "boom"))
#: Few values, so ties are many (among finished items, and with the running ones' times).
_DURATIONS = (0.25, 0.5, 1.0, 1.0, 2.0, 7.5)


def _old_page(
    conn: sqlite3.Connection, f: ItemFilter, offset: int, limit: int, running: Mapping[int, float]
) -> list[Any]:
    """The full sort the views ran before (git 5a64e03, queries.page and _shown_duration_sql)."""
    if running:
        cases = " ".join("WHEN ? THEN ?" for _ in running)
        order_args: list[Any] = [v for seq, s in sorted(running.items()) for v in (seq, s)]
        shown = f"(CASE WHEN status = 'processing' THEN (CASE seq {cases} END) ELSE duration_s END)"
    else:
        order_args, shown = [], "(CASE WHEN status = 'processing' THEN NULL ELSE duration_s END)"
    clause, args = where(f)
    sql = f"SELECT {', '.join(ITEM_COLUMNS)} FROM items{clause} ORDER BY {shown} DESC, seq LIMIT ? OFFSET ?"
    return [item_row(r) for r in conn.execute(sql, [*args, *order_args, limit, offset]).fetchall()]


def _make_store(path: Path, seed: int = 11) -> None:
    """N items of every kind: complete, failed (three error types), skipped with and without a
    duration, pending never run and pending again after a try, handed out with and without an
    older try's duration; durations from a few values (ties), a few NULL."""
    rnd = random.Random(seed)
    store = ItemStore.create(path, durable=False)
    keys = [f"item/{i}" for i in range(N)]
    store.enqueue([LineBlock(keys, keys, "lines")])
    at = "2026-01-01T00:00:00+00:00"
    with store.transaction() as conn:
        for seq in range(N):
            kind = rnd.choice(("complete",) * 5 + ("failed",) * 3 + ("skipped", "pending", "pending", "processing") * 2)
            duration = rnd.choice((*_DURATIONS, None))
            etype, message = _ERRORS[seq % 3]
            if kind in ("complete", "skipped", "pending", "processing") and rnd.random() < 0.5:
                etype = message = None  # some with an error of an earlier try, some without
            if kind == "complete":
                etype = message = None
            conn.execute(
                "UPDATE items SET status=?, duration_s=?, error_type=?, error_message=?, error_group=?,"
                " finished_at=? WHERE seq=?",
                (kind, duration, etype, message, message and normalize_message(message), at, seq),
            )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same items in a store without the index (an old store) and in one with it."""
    base = tmp_path_factory.mktemp("slowest")
    plain, indexed = base / "plain.db", base / "indexed.db"
    _make_store(plain)
    _make_store(indexed)
    with sqlite3.connect(indexed) as conn:
        conn.execute(SLOWEST_INDEX)
    return {"old store": plain, "indexed": indexed}


def _processing(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM items WHERE status='processing' ORDER BY seq")]


def _runnings(path: Path) -> Iterator[tuple[str, dict[int, float]]]:
    """Nothing running; most in flight running (times equal to stored durations: ties across
    the two kinds); with a NaN, and a seq the store says is not handed out (it shows its
    stored duration, as before)."""
    handed = _processing(path)
    yield "none", {}
    ties = {seq: _DURATIONS[i % len(_DURATIONS)] for i, seq in enumerate(handed[::2])}
    yield "ties", ties
    odd = dict(ties)
    odd[handed[1]] = float("nan")
    odd[0 if 0 not in handed else 1] = 99.0  # not 'processing' in the store: ignored
    odd[handed[-1]] = 1e9
    yield "odd", odd


FILTERS = {
    "all": ItemFilter(),
    "complete": ItemFilter(status="complete"),
    "failed": ItemFilter(status="failed"),
    "skipped": ItemFilter(status="skipped"),
    "pending": ItemFilter(status="pending"),
    "in flight": ItemFilter(status="processing"),
    "failed, group": ItemFilter(status="failed", error_group=group_id("HTTPError", normalize_message("status 503"))),
    "type": ItemFilter(error_type="TimeoutError"),
    "text": ItemFilter(text="item/1"),
    "text, no match": ItemFilter(text="nothing like it"),
    "complete, text": ItemFilter(status="complete", text="2"),
    "seqs": ItemFilter(seqs=frozenset(range(0, N, 7))),
    "ranges": ItemFilter(seq_ranges=((10, 60), (100, 140))),
    "glob": ItemFilter(key_glob="item/*3"),
}


@pytest.mark.parametrize("store", ["old store", "indexed"])
@pytest.mark.parametrize("name", list(FILTERS))
def test_every_page_is_the_full_sorts(stores: dict[str, Path], store: str, name: str) -> None:
    path, f = stores[store], FILTERS[name]
    with ItemQueries(path) as q:
        conn = q._conn
        for label, running in _runnings(path):
            rows = len(_old_page(conn, f, 0, 10 * N, running))
            assert rows or name == "text, no match"
            for limit in (1, 3, 7, 50, N + 5):
                for offset in sorted({*range(0, rows + 2, max(1, limit // 2 or 1)), rows - 1, rows, rows + 9}):
                    if offset < 0:
                        continue
                    got = q.page(f, offset, limit, "duration", running)
                    want = _old_page(conn, f, offset, limit, running)
                    assert got == want, (label, limit, offset)


def test_a_page_inside_a_snapshot(stores: dict[str, Path]) -> None:
    """Inside the caller's read transaction (a dialog's snapshot): no transaction of its own."""
    path = stores["indexed"]
    running = dict(_runnings(path))["ties"]
    with ItemQueries(path) as q, q.snapshot():
        assert q.page(ItemFilter(), 5, 20, "duration", running) == _old_page(q._conn, ItemFilter(), 5, 20, running)


def _plan(conn: sqlite3.Connection, sql: str, args: list[Any]) -> str:
    return " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))


@pytest.mark.parametrize("name", ["all", "complete", "failed", "skipped", "pending"])
def test_a_view_by_status_walks_the_index_and_sorts_nothing(stores: dict[str, Path], name: str) -> None:
    f = FILTERS[name]
    with ItemQueries(stores["indexed"]) as q:
        assert walks_index(q._conn, f)
        plan = _plan(q._conn, finished_sql(f.status) + " LIMIT 200 OFFSET 0", [])
    assert "USING COVERING INDEX items_slowest" in plan, plan
    assert "TEMP B-TREE" not in plan and "SCAN" not in plan, plan


@pytest.mark.parametrize("name", ["text", "failed, group", "type", "complete, text", "seqs"])
def test_a_view_the_index_cannot_answer_sorts(stores: dict[str, Path], name: str) -> None:
    """Walking the index, each entry would read its row, in a random order: those views sort."""
    with ItemQueries(stores["indexed"]) as q:
        assert not walks_index(q._conn, FILTERS[name])


def test_an_old_store_sorts(stores: dict[str, Path]) -> None:
    """Without the index (a store of an earlier batchtui, or one no view asked for the order)
    every view sorts, but the items in flight (no finished item in that view: nothing to sort)."""
    with ItemQueries(stores["old store"]) as q:
        assert not has_slowest_index(q._conn)
        assert not any(walks_index(q._conn, f) for name, f in FILTERS.items() if name != "in flight")
        assert walks_index(q._conn, FILTERS["in flight"])
