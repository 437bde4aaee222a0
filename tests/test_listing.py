"""BatchLister (what the browser lists every 2 s): a batch is read again when a file its summary
is made of changed or an engine holds it, and only then; what it lists is what list_batches
(what ``ls`` lists) says at that moment."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path

import orjson

from batchtui.engine.listing import BatchLister, list_batches
from batchtui.engine.models import BatchState

from .tui.fixtures import T0, hold_lock, make_batch

FINISHED = "20261118_090000_aaaa0004"
HALTED = "20261118_090000_aaaa0003"


def _rename(batch: Path, name: str) -> None:
    """Rewrite the manifest as every writer does: a new file put in place of the old one."""
    data = orjson.loads((batch / "manifest.json").read_bytes())
    data["name"] = name
    tmp = batch / "manifest.json.tmp"
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, batch / "manifest.json")


def _by_id(rows: list) -> dict:  # type: ignore[type-arg]
    return {r.batch_id: r for r in rows}


def test_a_batch_is_read_again_only_when_one_of_its_files_changed(tmp_path: Path) -> None:
    finished = make_batch(tmp_path, state=BatchState.FINISHED, n=20)
    halted = make_batch(tmp_path, state=BatchState.HALTED, n=20)
    make_batch(tmp_path, state=BatchState.PAUSED, n=20, batch_id="20261118_090000_aaaa0005")
    lister = BatchLister(tmp_path)

    first = lister.list()
    assert lister.read == 3
    assert first == list_batches(tmp_path)
    again = lister.list()
    assert lister.read == 0
    assert again == first
    assert all(a is b for a, b in zip(again, first, strict=True))  # the very summaries kept

    _rename(finished, "renamed")
    rows = _by_id(lister.list())
    assert lister.read == 1
    assert rows[finished.name].name == "renamed"
    assert rows[halted.name] is _by_id(first)[halted.name]
    assert list(rows.values()) == list_batches(tmp_path)


def test_an_interrupted_batch_is_read_again_when_its_store_changes(tmp_path: Path) -> None:
    """No engine holds a batch whose manifest says running: it is interrupted, and its counts are
    items.db's. An offline command (retry, skip) changes items.db: the counts follow."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING, n=20)
    (batch / "live_progress.json").unlink()  # the dead engine's progress is no more
    lister = BatchLister(tmp_path)
    (row,) = lister.list()
    assert row.state == "interrupted" and row.counts_from == "store"
    pending = row.totals.pending
    assert pending > 0
    lister.list()
    assert lister.read == 0

    with sqlite3.connect(batch / "items.db") as conn:
        conn.execute("UPDATE items SET status = 'skipped' WHERE status = 'pending'")
    conn.close()
    (row,) = lister.list()
    assert lister.read == 1
    assert row.totals.pending == 0
    assert row == list_batches(tmp_path)[0]


def test_a_lock_taken_since_is_seen_before_the_engine_writes_anything(tmp_path: Path) -> None:
    """The lock file an earlier engine left is in place and unchanged; an engine takes its flock
    and has written nothing yet: the batch is read again and shows that engine."""
    finished = make_batch(tmp_path, state=BatchState.FINISHED, n=20)
    (finished / "lock").write_bytes(orjson.dumps({"pid": 4242, "host": "worker-1", "started_at": T0}) + b"\n")
    lister = BatchLister(tmp_path)
    (row,) = lister.list()
    assert row.engine is None

    fd = os.open(finished / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        (row,) = lister.list()
        assert lister.read == 1
        assert row.engine is not None and row.engine.pid == 4242
    finally:
        os.close(fd)


def test_a_held_batch_is_read_every_time_and_once_more_when_its_engine_lets_go(tmp_path: Path) -> None:
    """An engine's liveness moves with the clock: a held batch is never kept. When the engine
    lets go without a word (kill -9: no file changes), the batch is read again."""
    halted = make_batch(tmp_path, state=BatchState.HALTED, n=20)
    lister = BatchLister(tmp_path)
    with hold_lock(halted):
        for _ in range(2):
            (row,) = lister.list()
            assert lister.read == 1
            assert row.engine is not None
    (row,) = lister.list()
    assert lister.read == 1
    assert row.engine is None
    lister.list()
    assert lister.read == 0


def test_a_batch_deleted_or_made_since_is_listed_as_it_is_now(tmp_path: Path) -> None:
    finished = make_batch(tmp_path, state=BatchState.FINISHED, n=20)
    lister = BatchLister(tmp_path)
    assert [r.batch_id for r in lister.list()] == [FINISHED]
    make_batch(tmp_path, state=BatchState.HALTED, n=20)
    assert sorted(r.batch_id for r in lister.list()) == [HALTED, FINISHED]
    assert lister.read == 1
    shutil.rmtree(finished)
    assert [r.batch_id for r in lister.list()] == [HALTED]
