"""Selections applied by a real engine: prioritize while it runs (the start order proves it),
prioritize offline surviving a resume, skip and retry of a selection while it runs, and a
batch made before the run-first table getting it on open."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.client import Applied, send
from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.store import ItemFilter, ItemStore
from batchtui.engine.store.queries import Selection

from .conftest import wait_until
from .test_control_holds import PROCS, lines_file, rows, starts


def _batch(tmp_path: Path, n: int, proc: str) -> BatchDir:
    config = BatchConfig(output_dir=str(tmp_path / "out"), workers=1, executor="thread", max_attempts=1)
    return create_batch(config, build_spec([str(lines_file(tmp_path, n))]), python_spec(f"{PROCS}:{proc}"))


def _in_thread(runner: BatchRunner) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["result"] = runner.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_items_prioritized_while_the_engine_runs_start_before_every_other_pending_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, release = tmp_path / "runs.log", tmp_path / "release"
    monkeypatch.setenv("BTUI_TEST_EXEC_LOG", str(log))
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    batch = _batch(tmp_path, 40, "wait_for_file")  # every item waits for the release file
    runner = BatchRunner(batch)
    thread, out = _in_thread(runner)
    try:
        wait_until(lambda: starts(log) == [0], what="item 0 running")
        # Through control.jsonl, acknowledged by the engine (the CLI's and the TUI's way).
        got = send(batch, "prioritize", select=Selection().mark_range(30, 31).mark(22), wait=30)
        assert isinstance(got, Applied) and got.engine, got
        assert got.message == "3 items moved to the front"
        release.touch()
        thread.join(60)
        assert not thread.is_alive()
    finally:
        release.touch()
        if thread.is_alive():
            runner.request_stop("test over")
            thread.join(30)
    assert out["result"].counts.complete == 40
    order = starts(log)
    assert sorted(order) == list(range(40))  # each once
    first = order.index(22)
    # Items the engine had already handed to its worker (a few, in seq order) run first; then
    # the prioritized ones, in seq order; then every other item in seq order.
    assert 1 <= first <= 8 and order[:first] == list(range(first)), order
    assert order[first : first + 3] == [22, 30, 31], order
    assert order[first + 3 :] == [s for s in range(first, 40) if s not in (22, 30, 31)], order


def test_offline_prioritize_survives_to_the_resume_that_runs_them_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "runs.log"
    monkeypatch.setenv("BTUI_TEST_EXEC_LOG", str(log))
    batch = _batch(tmp_path, 300, "record_and_work")
    first = BatchRunner(batch)
    first.on_progress = lambda live: first.request_stop("test") if live.counts.complete >= 3 else None
    assert first.run().state.value == "stopped"
    pending = [int(r[0]) for r in rows(batch.path, "SELECT seq FROM items WHERE status='pending' ORDER BY seq")]
    assert len(pending) > 100
    last2, middle = pending[-2:], pending[len(pending) // 2]
    # No engine: applied to the store under the lock; then a second prioritize goes in front.
    got = send(batch, "prioritize", select=Selection.of(ItemFilter(seq_ranges=((last2[0], last2[1]),))))
    assert isinstance(got, Applied) and not got.engine and got.message.startswith("2 items moved to the front")
    got = send(batch, "prioritize", seqs=[middle])  # the old seqs field works too
    assert isinstance(got, Applied) and got.message.startswith("1 item moved to the front")
    assert rows(batch.path, "SELECT seq FROM run_first ORDER BY ord") == [(middle,), (last2[0],), (last2[1],)]
    log.unlink()
    result = BatchRunner(batch, action="resume").run()
    assert result.counts.complete == 300
    order = starts(log)
    assert order[:3] == [middle, *last2], order[:10]
    assert order[3:] == [s for s in pending if s not in (middle, *last2)]


def test_skip_and_retry_of_a_selection_while_the_engine_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, release = tmp_path / "runs.log", tmp_path / "release"
    monkeypatch.setenv("BTUI_TEST_EXEC_LOG", str(log))
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    batch = _batch(tmp_path, 50, "wait_for_file")
    runner = BatchRunner(batch)
    thread, out = _in_thread(runner)
    try:
        wait_until(lambda: starts(log) == [0], what="item 0 running")
        # Item 0 runs (a Python call: it finishes, then ends skipped); 10..49 are pending.
        got = send(batch, "skip", select=Selection.of(ItemFilter(seq_ranges=((0, 0), (10, 49)))), wait=30)
        assert isinstance(got, Applied) and got.engine
        assert got.message == "40 skipped, and 1 running item ends skipped (killed where it can be)", got.message
        got = send(batch, "retry", select=Selection.of(ItemFilter(seq_ranges=((40, 49),))), wait=30)
        assert isinstance(got, Applied) and got.message == "0 failed items back to pending, and 10 skipped ones"
        # None of these runs: the answer says only what was skipped (nothing: they are already).
        got = send(batch, "skip", select=Selection.of(ItemFilter(seq_ranges=((10, 12),))), wait=30)
        assert isinstance(got, Applied) and got.message == "0 skipped", got.message
        release.touch()
        thread.join(60)
        assert not thread.is_alive()
    finally:
        release.touch()
        if thread.is_alive():
            runner.request_stop("test over")
            thread.join(30)
    counts = out["result"].counts
    assert (counts.complete, counts.skipped) == (19, 31)
    assert sorted(starts(log)) == [*range(10), *range(40, 50)]
    assert rows(batch.path, "SELECT COUNT(*) FROM items WHERE status='skipped' AND seq BETWEEN 10 AND 39") == [(30,)]


def test_a_bad_selection_in_control_jsonl_is_answered_not_applied(tmp_path: Path) -> None:
    from batchtui.engine.control import append_command, new_command

    batch = _batch(tmp_path, 3, "noop")
    ItemStore.open(batch.items_db).close()  # the offset of control.jsonl is kept from here on
    bad = new_command("skip", select={"views": [{"status": "gone"}]})
    append_command(batch, bad)
    result = BatchRunner(batch).run()  # reads the command at start: answered, the run goes on
    assert result.counts.complete == 3
    live = batch.read_live()
    assert live is not None
    assert live.control_results[bad.id].startswith("failed: unknown status 'gone'"), live.control_results


def test_an_old_store_gets_the_run_first_table_on_open(tmp_path: Path) -> None:
    batch = _batch(tmp_path, 5, "noop")
    db = sqlite3.connect(batch.items_db)
    db.execute("DROP TABLE run_first")  # as a batch made before prioritize existed
    db.commit()
    db.close()
    got = send(batch, "prioritize", seqs=[3])
    assert isinstance(got, Applied) and got.message.startswith("1 item moved to the front")
    assert rows(batch.path, "SELECT seq FROM run_first") == [(3,)]


def test_report_and_live_progress_carry_the_group_ids(tmp_path: Path) -> None:
    from batchtui.engine.grouping import group_id

    batch = _batch(tmp_path, 4, "always_transient")  # TimeoutError: upstream slow for N
    result = BatchRunner(batch).run()
    assert result.counts.failed == 4
    report = orjson.loads(batch.report.read_bytes())
    (group,) = report["error_groups"]
    assert group["id"] == group_id("TimeoutError", "upstream slow for <n>") and group["count"] == 4
    assert group["first_seen"] <= group["last_seen"]
    live = batch.read_live()
    assert live is not None and [g.id for g in live.error_groups] == [group["id"]]
