"""A frozen engine is visible, and no command is lost to a deleted control.jsonl.

The real-engine tests start ``batchtui run`` headless on slow shell items, freeze it with
SIGSTOP, and check what every client sees: engine_status says stale, ``pause`` says not
acknowledged (the command stays queued), ``ls`` and ``show`` say not responding; after SIGCONT
the queued pause takes effect and is acknowledged. The unit tests pin the classification and
the control reader's position on real files.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import HOST, BatchDir, BatchLock, now_iso
from batchtui.engine.control import append_command, new_command, wait_for_ack
from batchtui.engine.control_file import ControlReader
from batchtui.engine.files import write_model
from batchtui.engine.liveness import STALE_AFTER_S, Liveness, engine_status
from batchtui.engine.models import BatchState, LiveProgress

from .conftest import CLI, cli_env, only_batch, read_live, wait_until


@pytest.fixture
def engine(tmp_path: Path, out_dir: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A real headless engine on 400 slow shell items (one worker), and its batch dir."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(400)))
    proc = subprocess.Popen(
        [*CLI, "run", str(items), "--cmd", "sleep 0.2", "--headless", "--workers", "1", "--grace", "0"],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.iterdir()), 30, "batch dir")
        batch = only_batch(out_dir)
        wait_until(lambda: engine_status(batch).liveness == Liveness.ALIVE, 30, "engine alive")
        # Past its start: it has written live_progress.json and runs items.
        wait_until((batch / "live_progress.json").exists, 30, "live_progress.json")
        wait_until(lambda: read_live(batch)["counts"]["complete"] >= 1, 30, "an item done")  # type: ignore[index]
        yield proc, batch
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_stopped_engine_is_stale_and_its_queued_pause_applies_when_continued(
    engine: tuple[subprocess.Popen[str], Path], invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    proc, batch = engine
    assert engine_status(batch).pid == proc.pid
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        wait_until(lambda: engine_status(batch).liveness == Liveness.STALE, STALE_AFTER_S + 3, "stale")
        assert time.monotonic() - stopped_at < STALE_AFTER_S + 3
        status = engine_status(batch)
        assert status.process == "stopped" and status.silent_s is not None and status.silent_s > STALE_AFTER_S
        assert status.badge().startswith("NOT RESPONDING ")
        assert f"kill -CONT {proc.pid}" in status.explain()

        paused = invoke_cli(["pause", batch.name, "--wait", "1", "--json"])
        assert paused.returncode == 1, paused.stdout + paused.stderr
        err = " ".join(paused.stderr.split())
        assert "pause not acknowledged (engine not responding for" in err, err
        assert "stopped (SIGSTOP" in err and f"queued in {batch / 'control.jsonl'}" in err, err
        answer = json.loads(paused.stdout)
        assert answer["acknowledged"] is False and answer["liveness"] == "stale", answer
        assert answer["silent_s"] > STALE_AFTER_S

        listed = invoke_cli(["ls"])
        assert "unresponsive" in listed.stdout and f"NOT RESPONDING {batch.name}" in listed.stdout, listed.stdout
        listed_json = json.loads(invoke_cli(["ls", "--json"]).stdout)
        assert listed_json[0]["engine"]["liveness"] == "stale"
        shown = invoke_cli(["show", batch.name])
        assert "Engine: NOT RESPONDING" in shown.stdout and "Last seen:" in shown.stdout, shown.stdout
    finally:
        os.kill(proc.pid, signal.SIGCONT)

    # Continued, the engine reads the queued pause, applies it and acknowledges it.
    bdir = BatchDir(batch)
    ack = wait_for_ack(bdir, answer["id"], timeout=10)
    assert ack is not None and ack.state == BatchState.PAUSED and ack.paused
    assert ack.control_results[answer["id"]].startswith("paused")
    wait_until(lambda: engine_status(batch).liveness == Liveness.ALIVE, 5, "alive again")
    # A paused engine keeps its heartbeat: it stays alive, never stale.
    shown = invoke_cli(["show", batch.name])
    assert "Engine: running" in shown.stdout and "Now:" in shown.stdout, shown.stdout
    stopped = invoke_cli(["stop", batch.name])
    assert stopped.returncode == 0, stopped.stderr
    assert proc.wait(timeout=30) == 130


def test_a_command_sent_after_control_jsonl_was_deleted_is_acknowledged(
    engine: tuple[subprocess.Popen[str], Path], invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    proc, batch = engine
    for verb in ("pause", "unpause"):  # the engine has read two lines of the file
        done = invoke_cli([verb, batch.name])
        assert done.returncode == 0, done.stderr
    (batch / "control.jsonl").unlink()
    paused = invoke_cli(["pause", batch.name, "--wait", "5"])  # recreates it with one shorter line
    assert paused.returncode == 0, paused.stderr
    assert f"{batch.name}: pause:" in paused.stdout, paused.stdout
    assert read_live(batch)["state"] == "paused"

    # Replaced by a rename (an editor's save): the next command is read from the new file's start.
    tmp = batch / "control.jsonl.new"
    tmp.write_bytes(b"")
    os.replace(tmp, batch / "control.jsonl")
    resumed = invoke_cli(["unpause", batch.name, "--wait", "5"])
    assert resumed.returncode == 0, resumed.stderr
    assert read_live(batch)["state"] == "running"
    assert proc.poll() is None


# -- engine_status on fixture files -------------------------------------------------------------


def _batch(tmp_path: Path, *, updated_at: str, state: BatchState = BatchState.RUNNING) -> BatchDir:
    path = tmp_path / "20261118_090000_aaaa0001"
    path.mkdir(mode=0o700, exist_ok=True)
    live = LiveProgress.model_validate(
        {
            "batch_id": path.name,
            "state": state.value,
            "updated_at": updated_at,
            "commit_seq": 0,
            "total": 10,
            "counts": {"total": 10, "pending": 10},
            "percent": 0.0,
            "rate_per_s": 0.0,
            "elapsed_s": 1.0,
            "memory": {"rss_mb": 1.0, "peak_rss_mb": 1.0, "children_rss_mb": 0.0, "system_available_mb": 1.0},
        }
    )
    write_model(path / "live_progress.json", live)
    return BatchDir(path)


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def test_status_gone_without_the_lock(tmp_path: Path) -> None:
    bdir = _batch(tmp_path, updated_at=now_iso())
    status = engine_status(bdir)
    assert status.liveness == Liveness.GONE and not status.held and status.badge() == ""


def test_status_alive_then_stale_by_the_heartbeat_age(tmp_path: Path) -> None:
    (tmp_path / "20261118_090000_aaaa0001").mkdir(mode=0o700)
    lock = BatchLock(tmp_path / "20261118_090000_aaaa0001" / "lock")
    lock.acquire()
    try:
        now = time.time() + 1.0  # the heartbeat is written after the lock was taken
        bdir = _batch(tmp_path, updated_at=_iso(now))
        alive = engine_status(bdir, now=now + 1.0)
        assert alive.liveness == Liveness.ALIVE and alive.responding and alive.pid == os.getpid()
        assert alive.silent_s == pytest.approx(1.0, abs=0.01)
        assert engine_status(bdir, now=now + STALE_AFTER_S - 0.1).liveness == Liveness.ALIVE
        stale = engine_status(bdir, now=now + 13.2)
        assert stale.liveness == Liveness.STALE and stale.held and not stale.responding
        assert stale.silent_s == pytest.approx(13.2, abs=0.01)
        assert stale.badge() == "NOT RESPONDING 13s"
        assert stale.process == "running"  # this process: alive, just not writing
    finally:
        lock.release()


def test_status_counts_from_the_lock_for_a_new_engine(tmp_path: Path) -> None:
    # The live file is the previous engine's (an hour old); this engine took the lock just now.
    bdir = _batch(tmp_path, updated_at=_iso(time.time() - 3600), state=BatchState.STOPPED)
    lock = BatchLock(bdir.lock)
    lock.acquire()
    try:
        assert engine_status(bdir).liveness == Liveness.ALIVE
        assert engine_status(bdir, now=time.time() + 10).liveness == Liveness.STALE
    finally:
        lock.release()


def test_status_while_an_engine_reads_its_source_counts_from_the_store(tmp_path: Path) -> None:
    """No live write yet (the batch is being made, its source read into the store): each chunk
    committed is a sign of life. A 6M-line source read for 20 s showed NOT RESPONDING from its
    fifth second; a store untouched as long is still stale."""
    bdir = _batch(tmp_path, updated_at=_iso(time.time() - 3600), state=BatchState.STOPPED)
    wal = bdir.items_db.with_name("items.db-wal")
    bdir.items_db.write_bytes(b"x")
    wal.write_bytes(b"x")  # frames an engine committed
    lock = BatchLock(bdir.lock)
    lock.acquire()
    try:
        now = time.time() + 20
        os.utime(bdir.items_db, (now - 19, now - 19))
        os.utime(wal, (now - 1, now - 1))  # a chunk committed a second ago
        reading = engine_status(bdir, now=now)
        assert reading.liveness == Liveness.ALIVE and reading.silent_s == pytest.approx(1.0, abs=0.01)
        os.utime(wal, (now - 12, now - 12))
        assert engine_status(bdir, now=now).liveness == Liveness.STALE
        wal.write_bytes(b"")  # an empty WAL, made just now by a view that opened the store
        os.utime(wal, (now - 1, now - 1))
        assert engine_status(bdir, now=now).liveness == Liveness.STALE
        wal.write_bytes(b"x")
        # Once the engine writes live progress, the store no longer counts (a run's commits are
        # not its heartbeat: the live file is).
        _batch(tmp_path, updated_at=_iso(now - 8))
        os.utime(wal, (now - 1, now - 1))
        assert engine_status(bdir, now=now).liveness == Liveness.STALE
    finally:
        lock.release()


def test_status_finishing_engine_is_alive(tmp_path: Path) -> None:
    # The final state is written and the lock still held (the --on-finish hook runs): alive.
    lock = BatchLock(tmp_path / "20261118_090000_aaaa0001" / "lock")
    (tmp_path / "20261118_090000_aaaa0001").mkdir(mode=0o700)
    lock.acquire()
    try:
        bdir = _batch(tmp_path, updated_at=now_iso(), state=BatchState.FINISHED)
        assert engine_status(bdir, now=time.time() + 60).liveness == Liveness.ALIVE
    finally:
        lock.release()


def test_status_dead_holder_pid_is_stale_at_once(tmp_path: Path) -> None:
    # The lock names a pid that is gone, yet the lock is held (here by this process; in life by
    # a child the dead engine left): stale at once, whatever the heartbeat says.
    bdir = _batch(tmp_path, updated_at=now_iso())
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = BatchLock(bdir.lock)
    lock.acquire()
    try:
        fd = os.open(bdir.lock, os.O_WRONLY | os.O_TRUNC)  # the flock stays: it is on the file
        try:
            os.write(fd, orjson.dumps({"pid": dead.pid, "host": HOST, "started_at": now_iso()}) + b"\n")
        finally:
            os.close(fd)
        status = engine_status(bdir)
        assert status.liveness == Liveness.STALE and status.process == "gone", status
        assert "a process it left behind still holds the lock" in status.explain()
    finally:
        lock.release()


# -- the control reader's position ----------------------------------------------------------------


def _ops(reader: ControlReader) -> list[str]:
    return [c.op for c in reader.read_new()]


def test_reader_reads_a_recreated_file_from_its_start(tmp_path: Path) -> None:
    bdir = BatchDir(tmp_path)
    for _ in range(3):
        append_command(bdir, new_command("pause"))
    reader = ControlReader(bdir.control)  # an engine starts: what is there was for no one
    assert _ops(reader) == []
    append_command(bdir, new_command("resume"))
    assert reader.changed() and _ops(reader) == ["resume"]
    assert not reader.changed()
    bdir.control.unlink()
    assert not reader.changed() and _ops(reader) == []
    append_command(bdir, new_command("stop"))  # shorter than the offset: was reset to its end
    assert reader.changed() and _ops(reader) == ["stop"]
    append_command(bdir, new_command("skip", seqs=[1]))
    assert _ops(reader) == ["skip"]


def test_reader_rewritten_in_place_past_the_offset(tmp_path: Path) -> None:
    # Truncated on the same inode and refilled past the old offset before the reader looked
    # (or a new file that got the freed inode number): the new lines all count.
    bdir = BatchDir(tmp_path)
    reader = ControlReader(bdir.control)
    append_command(bdir, new_command("pause"))
    assert _ops(reader) == ["pause"]
    ino = bdir.control.stat().st_ino
    with bdir.control.open("r+b") as fh:
        fh.truncate(0)
    for _ in range(4):
        append_command(bdir, new_command("retry"))
    assert bdir.control.stat().st_ino == ino and bdir.control.stat().st_size > reader.offset
    assert _ops(reader) == ["retry"] * 4


def test_reader_truncated_below_the_offset(tmp_path: Path) -> None:
    bdir = BatchDir(tmp_path)
    reader = ControlReader(bdir.control)
    for _ in range(3):
        append_command(bdir, new_command("pause"))
    assert len(_ops(reader)) == 3
    with bdir.control.open("r+b") as fh:
        fh.truncate(0)
    assert _ops(reader) == [] and reader.offset == 0
    append_command(bdir, new_command("stop"))
    assert _ops(reader) == ["stop"]


def test_reader_seek_keeps_the_place_in_the_same_file_only(tmp_path: Path) -> None:
    bdir = BatchDir(tmp_path)
    first = ControlReader(bdir.control)
    for _ in range(2):
        append_command(bdir, new_command("pause"))
    assert len(_ops(first)) == 2
    offset, identity = first.offset, first.identity
    append_command(bdir, new_command("resume"))  # sent, never read: the engine died

    same = ControlReader(bdir.control)
    same.seek(offset, identity)
    assert _ops(same) == ["resume"]

    legacy = ControlReader(bdir.control)  # an offset kept without the identity
    legacy.seek(offset)
    assert _ops(legacy) == ["resume"]

    # Between the engines the file was replaced by one with longer lines: its lines all count.
    bdir.control.unlink()
    for _ in range(2):
        append_command(bdir, new_command("skip", seqs=list(range(40))))
    other = ControlReader(bdir.control)
    other.seek(offset, identity)
    assert _ops(other) == ["skip", "skip"]
    mid_line = ControlReader(bdir.control)
    mid_line.seek(offset)  # no identity: not at a line boundary of this file, so not its offset
    assert _ops(mid_line) == ["skip", "skip"]


def test_a_control_file_replaced_between_engines_is_read_from_its_start(
    tmp_path: Path,
    out_dir: Path,
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    invoke_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(200)))
    fast = tmp_path / "fast"  # slow items until it exists, so the resume is quick
    started = run_cli(["run", str(items), "--cmd", f"[ -e {fast} ] || sleep 0.2", "-j", "1", "--detach", "--json"])
    assert started.returncode == 0, started.stderr
    batch = Path(json.loads(started.stdout)["batch_dir"])
    for verb in ("pause", "unpause", "stop"):
        assert invoke_cli([verb, batch.name]).returncode == 0
    wait_until(lambda: engine_status(batch).liveness == Liveness.GONE, 30, "engine gone")
    offset = (batch / "control.jsonl").stat().st_size  # what the engine read and stored

    # While no engine runs, the file is replaced by one whose first line (a skip, for the next
    # engine) happens to end exactly where the old offset was: only the identity tells them apart.
    skip = orjson.dumps({"id": "feedfacecafe", "ts": now_iso(), "op": "skip", "seqs": [150]})
    line = skip + b" " * (offset - len(skip) - 1) + b"\n"
    assert len(line) == offset
    (batch / "control.jsonl").unlink()
    (batch / "control.jsonl").write_bytes(line)

    fast.touch()
    resumed = invoke_cli(["resume", batch.name, "--headless"])
    assert resumed.returncode == 1, resumed.stderr  # one item skipped
    db = sqlite3.connect(batch / "items.db")
    try:
        assert db.execute("SELECT status FROM items WHERE seq=150").fetchone()[0] == "skipped"
    finally:
        db.close()


def test_reader_seek_tells_a_new_file_on_the_same_inode(tmp_path: Path) -> None:
    # A file replaced between engines may get the freed inode number back (ext4 does this
    # often): the identity also carries a checksum of the bytes read last.
    bdir = BatchDir(tmp_path)
    first = ControlReader(bdir.control)
    for _ in range(3):
        append_command(bdir, new_command("pause"))
    assert len(_ops(first)) == 3
    offset, identity = first.offset, first.identity
    assert identity is not None and identity.count(":") == 3
    ino = bdir.control.stat().st_ino
    # Rewritten in place to the same length, its last line ending where the old offset was.
    skip = orjson.dumps({"id": "feedfacecafe", "ts": now_iso(), "op": "skip", "seqs": [1]})
    with bdir.control.open("r+b") as fh:
        fh.truncate(0)
        fh.write(skip + b" " * (offset - len(skip) - 1) + b"\n")
    assert bdir.control.stat().st_ino == ino and bdir.control.stat().st_size == offset
    second = ControlReader(bdir.control)
    second.seek(offset, identity)
    assert _ops(second) == ["skip"]
    assert second.identity is not None and second.identity != identity

    # The same file, untouched: the place is kept, and handed on unchanged with nothing read.
    third = ControlReader(bdir.control)
    third.seek(second.offset, second.identity)
    assert third.identity == second.identity
    assert _ops(third) == []
    append_command(bdir, new_command("stop"))
    assert _ops(third) == ["stop"]
    # A token from before the checksum was kept still works.
    old_style = ControlReader(bdir.control)
    old_style.seek(third.offset, ":".join((third.identity or "").split(":")[:2]))
    append_command(bdir, new_command("resume"))
    assert _ops(old_style) == ["resume"]
