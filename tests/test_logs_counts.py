"""Honest in-flight numbers (issue 18, point 5): each item's own start and end in results.jsonl and
items.db (a run rebuilt from them never has more items running than workers), and running vs
queued in live_progress.json against a real engine with slow items."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from batchtui.engine.batchdir import parse_iso
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.store.queries import ItemQueries

from .conftest import read_live, wait_until

#: Times are written to the millisecond (cut, not rounded): an item's end may read up to 1 ms
#: early, so its start may read up to 1 ms before the end of the one before it on its worker.
_MS = 0.001


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e - _MS, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_a_run_rebuilt_from_its_files_never_has_more_items_running_than_workers(tmp_path: Path) -> None:
    workers = 4
    source = tmp_path / "items.txt"
    source.write_text("".join(f"{i}\n" for i in range(300)))
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": workers}, environ={})
    batch = create_batch(config, build_spec([str(source)]), shell_spec("true {}"))
    BatchRunner(batch, config=config).run()
    lines = [orjson.loads(line) for line in (batch.path / "results.jsonl").read_bytes().splitlines()]
    assert len(lines) == 300
    spans = [(parse_iso(x["finished_at"]) - x["duration_s"], parse_iso(x["finished_at"])) for x in lines]
    assert _most_at_once(spans) <= workers
    with ItemQueries(batch.path / "items.db") as store:
        rows = list(store.rows())
    db_spans = []
    for row in rows:
        assert row.started_at and row.finished_at and row.duration_s is not None
        start, end = parse_iso(row.started_at), parse_iso(row.finished_at)
        assert abs((end - start) - row.duration_s) <= 2 * _MS  # the item's own start and end
        db_spans.append((start, end))
    assert _most_at_once(db_spans) <= workers


def test_live_progress_separates_running_from_queued_against_a_real_engine(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    source = tmp_path / "items.txt"
    source.write_text("".join(f"{i}\n" for i in range(12)))
    cmd = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2}, environ={})
    batch = create_batch(config, build_spec([str(source)]), shell_spec(cmd))
    runner = BatchRunner(batch, config=config)
    engine = threading.Thread(target=runner.run)
    engine.start()
    try:
        wait_until(
            lambda: (batch.path / "live_progress.json").exists() and read_live(batch.path)["counts"]["running"] == 2,  # type: ignore[index]
            what="two items running",
        )
        live = read_live(batch.path)
        counts = live["counts"]
        flights = live["in_flight"]
        assert isinstance(counts, dict) and isinstance(flights, list)
        assert counts["running"] == 2 and counts["queued"] >= 1
        assert counts["running"] + counts["queued"] == len(flights)
        running = [f for f in flights if not f["queued"]]
        assert len(running) == 2
        assert [f["queued"] for f in flights] == sorted(f["queued"] for f in flights)  # running first
        starts = [parse_iso(f["started_at"]) for f in running]
        assert starts == sorted(starts)  # the longest-running on top
    finally:
        gate.touch()
        engine.join(60)
    assert read_live(batch.path)["counts"] == {  # type: ignore[comparison-overlap]
        "pending": 0,
        "processing": 0,
        "complete": 12,
        "failed": 0,
        "skipped": 0,
        "running": 0,
        "queued": 0,
        "retrying": 0,
        "total": 12,
    }


def test_items_waiting_out_a_retry_backoff_are_counted_as_retrying(tmp_path: Path) -> None:
    """Of the items in flight ('processing'), those waiting out a backoff before their next
    attempt are neither running nor queued: live_progress says how many, so the status line's
    running + queued + retry wait add up to the In flight tab's count."""
    source = tmp_path / "items.txt"
    source.write_text("".join(f"{i}\n" for i in range(4)))
    settings = {"output_dir": str(tmp_path / "out"), "workers": 2, "retry_exit_codes": [75], "backoff": 60.0}
    config = load_config({**settings, "backoff_max": 60.0, "max_attempts": 3, "grace": 0}, environ={})
    batch = create_batch(config, build_spec([str(source)]), shell_spec("exit 75"))
    runner = BatchRunner(batch, config=config)
    engine = threading.Thread(target=runner.run)
    engine.start()
    try:
        wait_until(
            lambda: (batch.path / "live_progress.json").exists() and read_live(batch.path)["counts"]["retrying"] == 4,  # type: ignore[index]
            what="four items waiting out their backoff",
        )
        counts = read_live(batch.path)["counts"]
        assert isinstance(counts, dict)
        assert (counts["processing"], counts["running"], counts["queued"], counts["retrying"]) == (4, 0, 0, 4)
    finally:
        runner.request_stop("test over", grace=0)
        engine.join(60)
    counts = read_live(batch.path)["counts"]
    assert isinstance(counts, dict)
    assert (counts["pending"], counts["processing"], counts["retrying"]) == (4, 0, 0)  # back to pending
