"""engine/client.py: the one control client every view uses (the CLI's verbs, the TUI's keys).

A live engine's acknowledgement is covered end to end in test_control.py; these tests cover the
other answers: applied offline, no engine for an engine-only command, not acknowledged, and a
brief offline holder of the lock that must not be taken for an engine.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock
from batchtui.engine.client import Applied, NoEngine, NotAcknowledged, Sent, describe_retry, send
from batchtui.engine.liveness import Liveness, engine_status
from batchtui.engine.models import NewerFormat

from .conftest import only_batch, wait_until


def _statuses(batch: Path) -> dict[int, str]:
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT seq, status FROM items").fetchall())
    finally:
        db.close()


@pytest.fixture
def failed_batch(tmp_path: Path, invoke_cli, out_dir: Path) -> BatchDir:  # type: ignore[no-untyped-def]
    src = tmp_path / "in.txt"
    src.write_text("".join(f"item-{i}\n" for i in range(4)))
    proc = invoke_cli(["run", str(src), "--cmd", "exit 3", "--headless", "--max-attempts", "1"])
    assert proc.returncode == 1, proc.stderr
    return BatchDir(only_batch(out_dir))


def test_offline_retry_and_skip_change_the_store(failed_batch: BatchDir) -> None:
    got = send(failed_batch, "retry", seqs=[0, 1])
    assert isinstance(got, Applied) and not got.engine
    assert got.message.startswith("2 failed items back to pending")
    got = send(failed_batch, "skip", seqs=[1, 2])
    assert isinstance(got, Applied) and got.message == "2 skipped"
    assert _statuses(failed_batch.path) == {0: "pending", 1: "skipped", 2: "skipped", 3: "failed"}
    assert not failed_batch.control.exists()  # nothing was sent: no engine to read it
    manifest = failed_batch.read_manifest()
    assert (manifest.totals.pending, manifest.totals.skipped, manifest.totals.failed) == (1, 2, 1)
    # The breakdown every view reads from live_progress.json follows the store, not the run.
    live = failed_batch.read_live()
    assert live is not None and live.counts.failed == 1
    assert live.errors_by_type == {"exit 3": 1}
    assert [(g.error_type, g.count) for g in live.error_groups] == [("exit 3", 1)]


def test_an_engine_only_command_without_an_engine_is_exit_1(failed_batch: BatchDir) -> None:
    with pytest.raises(NoEngine, match="is finished: no engine runs it") as info:
        send(failed_batch, "pause")
    assert info.value.exit_code == 1
    assert not failed_batch.control.exists()


def test_a_brief_offline_holder_is_not_an_engine(failed_batch: BatchDir) -> None:
    """While an offline change (another client, recover) holds the lock, a view must not append
    to control.jsonl and wait for an acknowledgement no engine will ever give."""
    lock = BatchLock(failed_batch.lock, engine=False)
    lock.acquire()
    try:
        assert engine_status(failed_batch).liveness == Liveness.GONE
        with pytest.raises(NoEngine):
            send(failed_batch, "pause", wait=0.1)
    finally:
        lock.release()
    assert not failed_batch.control.exists()


def test_a_holder_that_becomes_an_engine_gets_the_command_through_control(
    failed_batch: BatchDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A skip sent while a resume still plans (it holds the lock, not yet as an engine) waits for
    the lock; when the holder turns into the engine, the skip goes to control.jsonl for it
    instead of failing with "is being run by" (CI saw that under load)."""
    import threading

    from batchtui.engine import client

    looks: list[bool] = []
    real_status = client.engine_status

    def counted(*args: object, **kwargs: object) -> object:
        got = real_status(*args, **kwargs)  # type: ignore[arg-type]
        looks.append(got.held)
        return got

    monkeypatch.setattr(client, "engine_status", counted)
    planner = BatchLock(failed_batch.lock, engine=False)
    planner.acquire()
    outcome: list[object] = []
    sender = threading.Thread(target=lambda: outcome.append(send(failed_batch, "skip", seqs=[3], wait=1.0)))
    sender.start()
    engine = BatchLock(failed_batch.lock, engine=True)
    try:
        wait_until(lambda: len(looks) >= 2, what="the sender looking again after a refused lock")
        planner.release()
        engine.acquire(wait=5)  # the planner hands the batch to its runner
        sender.join(30)
    finally:
        planner.release()
        engine.release()
    assert looks[0] is False and looks[-1] is True
    assert len(outcome) == 1 and isinstance(outcome[0], NotAcknowledged), outcome
    lines = [json.loads(line) for line in failed_batch.control.read_text().splitlines()]
    assert [(c["op"], c["seqs"]) for c in lines] == [("skip", [3])]
    assert _statuses(failed_batch.path)[3] == "failed"  # left to the engine, not changed offline


def test_an_engine_that_does_not_answer(failed_batch: BatchDir) -> None:
    lock = BatchLock(failed_batch.lock)  # an engine's lock, held by an engine that never reads
    lock.acquire()
    try:
        sent = send(failed_batch, "skip", seqs=[3], wait=None)
        assert isinstance(sent, Sent) and sent.status.held
        got = send(failed_batch, "skip", seqs=[2], wait=0.3)
        assert isinstance(got, NotAcknowledged)
        assert "queued in" in got.describe() and str(failed_batch.control) in got.describe()
        assert got.as_json()["acknowledged"] is False
        # A cancelled wait (a TUI worker being cancelled) ends long before its deadline.
        t0 = time.monotonic()
        got = send(failed_batch, "retry", wait=60, cancelled=lambda: True)
        assert isinstance(got, NotAcknowledged) and time.monotonic() - t0 < 10
    finally:
        lock.release()
    lines = failed_batch.control.read_text().splitlines()
    assert [('"op":"skip"' in line, '"op":"retry"' in line) for line in lines] == [
        (True, False),
        (True, False),
        (False, True),
    ]
    assert _statuses(failed_batch.path)[3] == "failed"  # queued for an engine, not applied here


def test_a_newer_batch_is_refused_before_anything_is_sent(failed_batch: BatchDir) -> None:
    data = json.loads(failed_batch.manifest.read_text())
    data["version"] = 99
    failed_batch.manifest.write_text(json.dumps(data))
    (failed_batch.path / "manifest.json.bak").unlink(missing_ok=True)
    with pytest.raises(NewerFormat):
        send(failed_batch, "retry")
    assert set(_statuses(failed_batch.path).values()) == {"failed"}


def test_a_retry_of_one_item_says_one_item(failed_batch: BatchDir) -> None:
    """The answer counts in the singular too: the item detail's r said '1 failed items back to
    pending', and a retry of one skipped item 'and 1 skipped ones'."""
    got = send(failed_batch, "retry", seqs=[3])
    assert isinstance(got, Applied) and got.message.startswith("1 failed item back to pending;"), got.message
    assert describe_retry({"failed": 0, "skipped": 1}) == "0 failed items back to pending, and 1 skipped one"
    assert describe_retry({"failed": 2, "skipped": 3}) == "2 failed items back to pending, and 3 skipped ones"
