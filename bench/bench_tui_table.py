"""The dashboard's items table on a big store: first paint, page-down latency, refresh cost, RSS.

Builds an items.db of ``--items`` rows (varied statuses, errors on the failed ones), then runs
:class:`ItemsTable` in a headless ``App.run_test()``.

    python -m bench.bench_tui_table [--items 300000] [--presses 200] [--db PATH]

``--db`` reuses (or creates, once) a fixture at PATH instead of a temporary one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.strip import Strip

from batchtui.engine.store import ItemStore
from batchtui.tui.widgets.items_table import ItemsTable
from bench.common import cleanup, table, workdir

SIZE = (120, 40)


def build_fixture(path: Path, n: int) -> float:
    """Create an items.db of ``n`` rows; returns the seconds it took."""
    started = time.perf_counter()
    store = ItemStore.create(path, durable=False)

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            data = orjson.dumps({"url": f"https://example.com/item/{i}", "n": i}).decode()
            yield (f"https://example.com/item/{i}", data, "lines", "pending", None, None, None, None, None, None)

    try:
        store.enqueue(rows(), chunk=50_000)
        with store.transaction() as conn:
            conn.execute(
                """UPDATE items SET
                status = CASE WHEN seq % 10 < 6 THEN 'complete' WHEN seq % 10 = 6 THEN 'failed'
                              WHEN seq % 10 = 7 THEN 'processing' WHEN seq % 10 = 8 THEN 'skipped'
                              ELSE 'pending' END,
                attempts = CASE WHEN seq % 10 < 7 THEN 1 + seq % 3 ELSE 0 END,
                duration_s = CASE WHEN seq % 10 < 7 THEN (seq % 997) / 100.0 END,
                error_type = CASE WHEN seq % 10 = 6 THEN
                                 CASE WHEN seq % 3 = 0 THEN 'TimeoutError' ELSE 'HTTPError' END END,
                error_category = CASE WHEN seq % 10 = 6 THEN 'item' END,
                error_message = CASE WHEN seq % 10 = 6 THEN
                                    'request failed: status ' || (500 + seq % 4) || char(10) || 'Traceback ...' END
                """
            )
    finally:
        store.close()
    return time.perf_counter() - started


class TimedTable(ItemsTable):
    """Notes when its first full screen of rows has been painted."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(db_path)
        self.mounted_at: float | None = None
        self.first_paint_at: float | None = None

    def _on_mount(self, event: Any) -> None:
        super()._on_mount(event)
        self.mounted_at = time.perf_counter()

    def render_lines(self, crop: Region) -> list[Strip]:
        strips = super().render_lines(crop)
        if self.first_paint_at is None and self.row_count and crop.height >= self.size.height:
            self.first_paint_at = time.perf_counter()
        return strips


class BenchApp(App[None]):
    def __init__(self, db_path: Path) -> None:
        super().__init__()
        self.db_path = db_path

    def compose(self) -> ComposeResult:
        yield TimedTable(self.db_path)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def timings(label: str, samples: list[float]) -> tuple[str, ...]:
    return (label, ms(statistics.mean(samples)), ms(statistics.median(samples)), ms(max(samples)), str(len(samples)))


def paint_all(widget: ItemsTable) -> None:
    """What a repaint of the whole widget costs (the compositor calls render_lines the same way)."""
    widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))


async def measure(db: Path, presses: int) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    process = psutil.Process()
    gc.collect()
    rss_before = process.memory_info().rss
    app = BenchApp(db)
    started = time.perf_counter()
    summary: list[tuple[str, ...]] = [("measure", "value")]
    latency: list[tuple[str, ...]] = [("operation (ms)", "mean", "median", "max", "n")]
    async with app.run_test(size=SIZE) as pilot:
        widget = app.query_one(TimedTable)
        while widget.first_paint_at is None:
            await pilot.pause()
            if time.perf_counter() - started > 30:
                raise RuntimeError("no first paint after 30 s")
        assert widget.mounted_at is not None
        summary.append(("app start -> first full paint (ms)", ms(widget.first_paint_at - started)))
        summary.append(("widget mount -> first full paint (ms)", ms(widget.first_paint_at - widget.mounted_at)))
        summary.append(("rows", f"{widget.row_count:,}"))

        # Pilot's own overhead: an unbound key still goes through the whole round trip.
        samples = []
        for _ in range(presses):
            t = time.perf_counter()
            await pilot.press("f12")
            samples.append(time.perf_counter() - t)
        latency.append(timings("unbound key via Pilot (harness baseline)", samples))

        # Through the whole app: key event, action, repaint of the screen (Pilot waits for it).
        samples = []
        for _ in range(presses):
            t = time.perf_counter()
            await pilot.press("pagedown")
            samples.append(time.perf_counter() - t)
        latency.append(timings("pagedown via Pilot (key -> screen)", samples))
        after_presses = widget.cursor_row

        # The widget's own share: the action plus painting every line of the new page.
        samples = []
        for _ in range(presses):
            t = time.perf_counter()
            widget.action_page_down()
            paint_all(widget)
            samples.append(time.perf_counter() - t)
        latency.append(timings("pagedown: action + full paint", samples))

        samples = []
        for _ in range(presses):
            widget.action_page_down()
            t = time.perf_counter()
            for y in range(widget.size.height):
                widget.render_line(y)
            samples.append(time.perf_counter() - t)
        latency.append(timings("pagedown: render_line of every line", samples))

        def timed(fn: Callable[[], None], n: int = 20) -> list[float]:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                paint_all(widget)
                out.append(time.perf_counter() - t)
            return out

        latency.append(timings("end key: action + full paint", timed(widget.action_cursor_end, 5)))
        latency.append(timings("refresh_data, unfiltered + paint", timed(widget.refresh_data)))
        for label, filters in (
            ("status=failed", {"status": "failed"}),
            ("status=complete", {"status": "complete"}),
            ("failed + error_type", {"status": "failed", "error_type": "HTTPError"}),
            ("text 'item/12'", {"status": None, "error_type": None, "text": "item/12"}),
        ):
            t = time.perf_counter()
            widget.set_filter(**filters)
            paint_all(widget)
            latency.append((f"set_filter {label} + paint", ms(time.perf_counter() - t), "", "", "1"))
            latency.append(timings(f"refresh_data {label} + paint", timed(widget.refresh_data, 10)))
            await app.workers.wait_for_complete()
            await pilot.pause()
        widget.set_filter(status=None, error_type=None, text=None)
        for _ in range(presses):  # fill the cache to its bound
            widget.scroll_to(y=widget.scroll_y + 150, animate=False)
            paint_all(widget)

        gc.collect()
        rss_after = process.memory_info().rss
        cache_bytes = sum(
            sys.getsizeof(row) + sys.getsizeof(row.key) + sys.getsizeof(row.error) + sys.getsizeof(row.status)
            for page in widget._pages.values()
            for row in page
        )
        summary.append(("cursor row after pagedowns", f"{after_presses:,}"))
        summary.append(("page queries (misses) in total", str(widget.page_misses)))
        summary.append(("pages cached (bound 20)", str(widget.cached_pages)))
        summary.append(("page cache size (KiB, approx.)", f"{cache_bytes / 1024:.0f}"))
        summary.append(("process RSS before the app (MiB)", f"{rss_before / 2**20:.1f}"))
        summary.append(("process RSS at the end (MiB)", f"{rss_after / 2**20:.1f}"))
        summary.append(("RSS growth over the run (MiB)", f"{(rss_after - rss_before) / 2**20:.1f}"))
    return summary, latency


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=300_000)
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--db", type=Path, help="fixture path to reuse (created if missing)")
    args = ap.parse_args(argv)
    work = None
    if args.db is not None:
        db: Path = args.db
    else:
        work = workdir("bt-tui-table-")
        db = work / "items.db"
    try:
        built = "reused" if db.exists() else f"{build_fixture(db, args.items):.1f} s"
        summary, latency = asyncio.run(measure(db, args.presses))
        summary.insert(1, ("fixture build", built))
        summary.insert(2, ("items.db size (MiB)", f"{db.stat().st_size / 2**20:.1f}"))
        print(table(f"ItemsTable on {args.items:,} items, headless {SIZE[0]}x{SIZE[1]}", summary))
        print(table("Latency", latency))
    finally:
        if work is not None:
            cleanup(work)


if __name__ == "__main__":
    main()
