"""The items table's "slowest first" page on a big store: what one page read costs.

Builds an items.db of ``--items`` rows the way a batch half-way through looks (the first 70%
finished, complete with a few failed and skipped, 64 items in flight, the rest pending, some
retried), through the engine's own enqueue and bulk statements, then times one page of rows
(200, the table's page) in slowest-first order at several depths and under the filters the
table can ask for, with 32 items running. ``--index`` builds the slowest-first index into the
fixture first (a view asks the engine for it), so the views by status read it; a page deep in
one is then timed with OFFSET (as before anchors), at its first read through anchors, and read
again (engine/store/keyset.py). Target: a deep page read again costs about what page 0 does.

    python -m bench.bench_slowest [--items 1000000] [--db PATH] [--reps 5] [--index]

``--db`` reuses (or creates, once) a fixture at PATH.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from batchtui.engine.errors import group_id, normalize_message
from batchtui.engine.store import ItemStore, LineBlock
from batchtui.engine.store.bulk import COMPLETE, FAILED, PENDING_WITH_ERROR, PROCESSING, SKIP
from batchtui.engine.store.keyset import Anchors
from batchtui.engine.store.queries import ItemFilter, ItemQueries, page
from batchtui.engine.store.schema import SLOWEST_INDEX
from bench.common import cleanup, table, workdir

PAGE = 200
IN_FLIGHT = 64
_ERRORS = (("HTTPError", "request failed: status 503"), ("TimeoutError", "timed out after 30 s"))


def build_fixture(path: Path, n: int, seed: int = 7) -> float:
    """Create an items.db of ``n`` items as a batch looks half-way through; the seconds it took."""
    started = time.perf_counter()
    rnd = random.Random(seed)
    store = ItemStore.create(path, durable=False)
    try:
        for start in range(0, n, 50_000):
            lines = [f"https://example.com/item/{i}" for i in range(start, min(n, start + 50_000))]
            store.enqueue([LineBlock(lines, lines, "lines")])
        done = int(n * 0.7)
        at = "2026-01-01T00:00:00.000+00:00"
        complete, failed, skipped, retried = [], [], [], []
        for seq in range(done):
            # Times as the engine keeps them (to the microsecond); one in 50 a round figure: ties.
            d = round(rnd.lognormvariate(-0.7, 1.0), 6 if seq % 50 else 1)
            kind = seq % 100
            if kind < 94:
                complete.append((1, at, d, None, None, at, seq))
            elif kind < 99:
                etype, msg = _ERRORS[seq % 2]
                failed.append((1, etype, "item", msg, "", normalize_message(msg), at, d, at, seq))
            else:
                skipped.append(("skipped by the operator", at, seq))
        for seq in range(done + IN_FLIGHT, n, 997):  # pending again after a failed try
            etype, msg = _ERRORS[0]
            d = round(rnd.lognormvariate(-0.7, 1.0), 6)
            retried.append((1, etype, "transient", msg, "", normalize_message(msg), at, d, at, seq))
        flying = [(at, seq) for seq in range(done, min(n, done + IN_FLIGHT))]
        with store.transaction() as conn:
            COMPLETE.run(conn, complete)
            FAILED.run(conn, failed)
            SKIP.run(conn, skipped)
            PENDING_WITH_ERROR.run(conn, retried)
            PROCESSING.run(conn, flying)
    finally:
        store.close()
    return time.perf_counter() - started


def running_times(path: Path) -> dict[int, float]:
    """Half the items in flight running (times like the finished ones'), the rest queued."""
    with ItemQueries(path) as q:
        seqs = [row.seq for row in q.page(ItemFilter(status="processing"), 0, IN_FLIGHT)]
    rnd = random.Random(3)
    return {seq: round(rnd.lognormvariate(-0.7, 1.0), 3) for seq in seqs[::2]}


def timed(fn: Callable[[], Any], reps: int) -> float:
    """The median of ``reps`` calls, in ms."""
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


FILTERS: dict[str, ItemFilter] = {
    "all": ItemFilter(),
    "complete": ItemFilter(status="complete"),
    "failed": ItemFilter(status="failed"),
    "processing": ItemFilter(status="processing"),
    "pending": ItemFilter(status="pending"),
    "type HTTPError": ItemFilter(error_type="HTTPError"),
    "failed+type": ItemFilter(status="failed", error_type="TimeoutError"),
    "group": ItemFilter(error_group=group_id(*(_ERRORS[0][0], normalize_message(_ERRORS[0][1])))),
    "text 'item/12'": ItemFilter(text="item/12"),
    "text 'item/123456'": ItemFilter(text="item/123456"),
}


def measure(path: Path, reps: int) -> list[tuple[str, ...]]:
    """Per filter: page 0, then the middle and the last page three ways: with OFFSET (the read
    before anchors, engine/store/keyset.py, and still the read just after a change), the first
    read at that depth through anchors on a quiet store (it hops there), and the same page read
    again (from an anchor)."""
    running = running_times(path)
    rows: list[tuple[str, ...]] = [
        ("filter", "rows", "page 0 (ms)", "middle: offset / first / again (ms)", "last: offset / first / again (ms)")
    ]
    with ItemQueries(path) as q:
        conn = q._conn
        for label, f in FILTERS.items():
            n = q.count(f)
            cells = [
                label,
                f"{n:,}",
                f"{timed(partial(page, conn, f, 0, PAGE, 'duration', running), reps):.1f}",
            ]
            for offset in ((n // 2) // PAGE * PAGE, max(0, n - 1) // PAGE * PAGE):

                def once(f: ItemFilter = f, o: int = offset, anchors: Anchors | None = None) -> Any:
                    return page(conn, f, o, PAGE, "duration", running, anchors)

                def first(once: Callable[..., Any] = once) -> float:
                    fresh = Anchors()
                    once(anchors=fresh)  # a read after a change (here: the first): OFFSET
                    started = time.perf_counter()
                    once(anchors=fresh)  # the store was quiet since: hops to the page
                    return time.perf_counter() - started

                kept = Anchors()
                once(anchors=kept)
                once(anchors=kept)
                offset_ms = timed(once, reps)
                first_ms = statistics.median(first() for _ in range(reps)) * 1000
                again_ms = timed(partial(once, anchors=kept), reps)
                cells.append(f"{offset_ms:.1f} / {first_ms:.1f} / {again_ms:.1f}")
            rows.append(tuple(cells))
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--index", action="store_true", help="build the slowest-first index into the fixture first")
    args = ap.parse_args(argv)
    work = None
    if args.db is None:
        work = workdir("bt-slowest-")
        db = work / "items.db"
    else:
        db = args.db
    try:
        if not db.exists():
            print(f"building {args.items:,} items: {build_fixture(db, args.items):.1f} s")
        if args.index:
            store = ItemStore.open(db, durable=False)
            try:
                with store.transaction() as conn:
                    conn.execute(SLOWEST_INDEX)  # IF NOT EXISTS: a fixture that has it keeps it
            finally:
                store.close()
        rows = measure(db, args.reps)
        print(table(f"slowest first, one page of {PAGE} rows, {args.items:,} items", rows))
        return rows
    finally:
        if work is not None:
            cleanup(work)


if __name__ == "__main__":
    main()
