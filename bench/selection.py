"""A selection of many items (the dashboard's `a`, the CLI's --status/--group): counted and
applied by one SQL condition against the plain way (the seqs in Python, UPDATE ... IN).

    python -m bench.selection [--items 300000] [--reps 3]

On a store of N items, 99% of them failed: the selection is every failed item plus a range
of marked seqs, minus a range unmarked after the `a`. Each contender runs on a fresh copy:

  selection   ItemQueries.count_selected, then ItemStore.skip_selected (one statement each)
  seqs        SELECT the seqs of the same items into a Python list, then UPDATE ... WHERE seq
              IN (?, ...) in chunks of 500 (SQLite's limit on parameters), the way a view that
              held its marks as a set of seqs would

Python's peak allocation (tracemalloc) is printed beside each time: the selection holds no seq.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from batchtui.engine.store import ItemFilter, ItemQueries, ItemStore
from batchtui.engine.store.queries import Selection

#: Every failed item, 1000 more marked one by one as a range, 500 failed ones unmarked.
SELECTION = Selection.of(ItemFilter(status="failed")).mark_range(1000, 1999).unmark(3).unmark(6)


def build(path: Path, n: int) -> None:
    """A store of ``n`` items, all failed (one error group) but every 100th, pending."""
    store = ItemStore.create(path, durable=False)
    try:
        store.enqueue(((f"item-{i:07d}", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(n)), chunk=50_000)
        with store.transaction() as conn:
            conn.execute(
                "UPDATE items SET status='failed', error_type='exit 1', error_category='item',"
                " error_message='disk full', error_group='disk full', finished_at='t' WHERE seq % 100 != 0"
            )
    finally:
        store.close()


def by_selection(path: Path) -> tuple[int, int]:
    with ItemQueries(path) as view:
        counted = view.count_selected(SELECTION)
    store = ItemStore.open(path, durable=False)
    try:
        changed = sum(store.skip_selected(SELECTION, at="t").values())
    finally:
        store.close()
    return counted, changed


def by_seqs(path: Path) -> tuple[int, int]:
    store = ItemStore.open(path, durable=False)
    try:
        conn = store.conn
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM items WHERE ((status='failed' AND seq NOT IN (3, 6)) OR seq BETWEEN 1000 AND 1999)"
            )
        ]
        changed = 0
        with store.transaction():
            for i in range(0, len(seqs), 500):
                part = seqs[i : i + 500]
                cur = conn.execute(
                    "UPDATE items SET status='skipped', error_message='skipped by operator', finished_at='t'"
                    f" WHERE status IN ('pending', 'processing', 'failed') AND seq IN ({','.join('?' * len(part))})",
                    part,
                )
                changed += cur.rowcount
        return len(seqs), changed
    finally:
        store.close()


def measure(fn: Callable[[Path], tuple[int, int]], master: Path, work: Path) -> tuple[float, float, tuple[int, int]]:
    """(seconds, peak Python MiB, result) of ``fn`` on a fresh copy of ``master``."""
    copy = work / "items.db"
    shutil.copyfile(master, copy)
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn(copy)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    for leftover in work.iterdir():
        leftover.unlink()
    return seconds, peak, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-selection-") as tmp:
        root = Path(tmp)
        master = root / "master.db"
        build(master, args.items)
        work = root / "work"
        work.mkdir()
        rows: dict[str, list[tuple[float, float]]] = {"selection": [], "seqs": []}
        results = set()
        for _ in range(args.reps):
            for name, fn in (("selection", by_selection), ("seqs", by_seqs)):
                seconds, peak, result = measure(fn, master, work)
                rows[name].append((seconds, peak))
                results.add(result)
        if len(results) != 1:
            print(f"the contenders disagree: {results}", file=sys.stderr)
            return 1
        (selected, changed) = results.pop()
        print(f"{args.items} items, {selected} selected, {changed} skipped; median of {args.reps}")
        print(f"{'':<10} {'count+apply s':>14} {'peak Python MiB':>16}")
        for name, runs in rows.items():
            print(
                f"{name:<10} {statistics.median(r[0] for r in runs):>14.3f} {statistics.median(r[1] for r in runs):>16.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
