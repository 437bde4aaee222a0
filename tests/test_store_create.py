"""A new items.db is durable whole before its name exists, for one fsync of its own.

The store is built under a temporary name without a sync (nobody can open that name) and made
durable by one fsync of the file before it is linked into place as ``items.db``; the folder is
synced after the link. A crash at any point leaves either no items.db or a whole one.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from batchtui.engine.store import items as items_module
from batchtui.engine.store.schema import SCHEMA_VERSION, create_schema

TABLES = {"items", "attempts", "meta", "run_first"}


def _is_whole_store(image: bytes, where: Path) -> bool:
    """Whether ``image`` (a database file's bytes) is a complete store in WAL mode."""
    where.write_bytes(image)
    conn = sqlite3.connect(f"file:{where}?mode=ro", uri=True)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone()
        trigger = conn.execute("SELECT 1 FROM sqlite_master WHERE type='trigger'").fetchone()
    finally:
        conn.close()
    # Bytes 18 and 19 of the header are 2 in WAL mode (1: rollback journal).
    return names == TABLES and version == (SCHEMA_VERSION,) and trigger is not None and image[18:20] == b"\x02\x02"


def test_the_file_is_synced_whole_before_it_is_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    db = batch / "items.db"
    events: list[str] = []
    real_fsync, real_dir = items_module.full_fsync, items_module.fsync_dir

    def file_sync(fd: int) -> None:
        real_fsync(fd)
        image = os.pread(fd, os.fstat(fd).st_size, 0)
        ok = _is_whole_store(image, tmp_path / "image.db")
        events.append(f"sync file (whole={ok}, named={db.exists()}, ino={os.fstat(fd).st_ino})")

    def dir_sync(path: Path) -> None:
        real_dir(path)
        events.append(f"sync dir {path.name} (named={db.exists()})")

    monkeypatch.setattr(items_module, "full_fsync", file_sync)
    monkeypatch.setattr(items_module, "fsync_dir", dir_sync)
    items_module.ItemStore.create(db).close()
    assert events == [
        f"sync file (whole=True, named=False, ino={db.stat().st_ino})",
        "sync dir batch (named=True)",
    ]
    assert sorted(p.name for p in batch.iterdir() if not p.name.startswith("items.db-")) == ["items.db"]


def test_a_store_made_without_durability_syncs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sync(*_a: object) -> None:
        raise AssertionError("synced")

    monkeypatch.setattr(items_module, "full_fsync", no_sync)
    monkeypatch.setattr(items_module, "fsync_dir", no_sync)
    items_module.ItemStore.create(tmp_path / "items.db", durable=False).close()
    assert _is_whole_store((tmp_path / "items.db").read_bytes(), tmp_path / "image.db")


def test_the_schema_is_one_transaction(tmp_path: Path) -> None:
    """One commit (one sync on a durable connection), and never a store with part of a schema."""
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    create_schema(conn)
    conn.set_trace_callback(None)
    assert not conn.in_transaction
    conn.close()
    first, *inner, last = (s.strip().rstrip(";") for s in statements)
    assert first.startswith("BEGIN") and last == "COMMIT"
    assert not [s for s in inner if s.upper().startswith(("BEGIN", "COMMIT", "END", "ROLLBACK"))]
    assert len(inner) >= 8  # every CREATE and the version, inside it
