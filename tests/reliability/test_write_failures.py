"""In-process checks of the write paths when the disk says no (faults injected into os.write /
os.fsync), and of the store's error translation. Fast; the subprocess tests cover the same from
the outside."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from batchtui.engine.errors import UserError
from batchtui.engine.files import ResultsLog, WriteFailed, atomic_write_bytes
from batchtui.engine.store import ItemStore, StoreCorrupt, StoreError


def test_results_append_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "20240101_000000_0123abcd" / "results.jsonl"
    path.parent.mkdir()
    log = ResultsLog(path)
    log.append(b'{"seq": 0}')
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteFailed) as info:
        log.append(b'{"seq": 1, "result": "' + b"x" * 100 + b'"}')
    monkeypatch.setattr(os, "write", real_write)
    assert isinstance(info.value, UserError)
    assert "No space left" in str(info.value) and "batchtui resume 20240101_000000_0123abcd" in str(info.value)
    log.append(b'{"seq": 2}')  # room again: the log goes on, whole
    assert log.sync() == path.stat().st_size
    log.close()
    assert [orjson.loads(x)["seq"] for x in path.read_bytes().splitlines()] == [0, 2]


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifest.json"
    atomic_write_bytes(path, b'{"v": 1}\n', backup=True)

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteFailed):
        atomic_write_bytes(path, b'{"v": 2}\n', backup=True)
    monkeypatch.undo()
    assert path.read_bytes() == b'{"v": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_other_os_errors_are_not_disguised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.json"

    def denied(*_a: object, **_k: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError):
        atomic_write_bytes(path, b"{}")


def test_store_damage_is_a_store_error_and_a_sqlite_error(tmp_path: Path) -> None:
    batch = tmp_path / "20240101_000000_0123abcd"
    batch.mkdir()
    db = batch / "items.db"
    store = ItemStore.create(db, durable=False)
    store.enqueue((f"k{i}", '"x' + "y" * 200 + '"', "line", "pending", *([None] * 6)) for i in range(5000))
    store.close()
    size = db.stat().st_size
    with db.open("r+b") as fh:
        fh.seek(size // 2 // 4096 * 4096)
        fh.write(b"\xde\xad" * 8192)
    ro = ItemStore.open_readonly(db)
    try:
        with pytest.raises(StoreCorrupt) as info:
            list(ro.iter_rows())
    finally:
        ro.close()
    exc = info.value
    assert isinstance(exc, StoreError) and isinstance(exc, sqlite3.DatabaseError)
    assert str(db) in str(exc) and "batchtui recover 20240101_000000_0123abcd" in str(exc)


def test_store_create_never_leaves_a_store_without_schema(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    store = ItemStore.create(db, durable=False)
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("items.db-")) == ["items.db"]
    with pytest.raises(FileExistsError):
        ItemStore.create(db)
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(StoreError, match="batchtui recover"):
        ItemStore.open_readonly(tmp_path / "empty.db")


def test_failed_commit_rolls_back_and_the_connection_goes_on(tmp_path: Path) -> None:
    store = ItemStore.create(tmp_path / "items.db", durable=False)
    store.enqueue([("a", '"a"', "line", "pending", *([None] * 6))])
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("UPDATE items SET status='complete'")
        raise RuntimeError("the body failed")
    assert not store.conn.in_transaction
    assert store.counts().pending == 1
    with store.transaction() as conn:  # usable again
        conn.execute("UPDATE items SET status='complete'")
    assert store.counts().complete == 1
    store.close()
