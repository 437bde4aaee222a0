"""Deterministic batch directories for TUI tests and snapshots (no engine, fixed times).

``hold_lock`` stands in for a live engine: it holds the batch's flock, which is exactly what
every view checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from batchtui.engine.files import write_model
from batchtui.engine.grouping import normalize_message
from batchtui.engine.models import (
    BatchState,
    Cost,
    ErrorGroup,
    HistoryEntry,
    InFlight,
    LiveCounts,
    LiveProgress,
    Manifest,
    Memory,
    RecentError,
)
from batchtui.engine.store import ItemStore
from batchtui.tui.app import BatchtuiApp

FROZEN = 1_795_000_000.0  # 2026-11-18T...Z: the frozen clock of the snapshots
T0 = "2026-11-18T09:00:00.000+00:00"
T1 = "2026-11-18T09:05:00.000+00:00"
# A running engine rewrites live_progress.json several times a second: its last write is a
# moment before the frozen clock (an older one means a frozen engine).
HEARTBEAT = "2026-11-18T11:06:39.600+00:00"

ERRORS = [
    ("TimeoutError", "transient", "upstream timed out after 30s fetching https://api.example.com/v1/doc/17"),
    ("exit 4", "item", "parse error: unexpected token at line 12"),
    ("ValueError", "item", "unparseable record #31: unexpected token at column 7"),
]


def _status(seq: int, n: int, state: BatchState) -> str:
    if state == BatchState.FINISHED:
        return "failed" if seq % 17 == 3 else ("skipped" if seq == 5 else "complete")
    done = int(n * 0.6)
    if seq < done:
        return "failed" if seq % 17 == 3 else ("skipped" if seq == 5 else "complete")
    if seq < done + 4 and state in (BatchState.RUNNING, BatchState.PAUSED):
        return "processing" if state == BatchState.RUNNING else "pending"
    return "pending"


def make_batch(
    root: Path,
    *,
    state: BatchState = BatchState.RUNNING,
    n: int = 300,
    batch_id: str | None = None,
    keys: list[str] | None = None,
    halt_reason: str | None = None,
    updated_at: str | None = None,
) -> Path:
    """A batch directory with every contract file, in the given state.

    ``updated_at`` of live_progress.json: by default a fresh heartbeat for a running or paused
    batch (T1 otherwise); an old one stands for an engine that stopped writing."""
    batch_id = batch_id or {
        "running": "20261118_090000_aaaa0001",
        "paused": "20261118_090000_aaaa0002",
        "halted": "20261118_090000_aaaa0003",
        "finished": "20261118_090000_aaaa0004",
    }.get(state.value, "20261118_090000_aaaa0009")
    path = root / batch_id
    path.mkdir(parents=True, mode=0o700)
    store = ItemStore.create(path / "items.db")
    rows: list[tuple[Any, ...]] = []
    for seq in range(n):
        key = keys[seq] if keys and seq < len(keys) else f"https://api.example.com/v1/documents/{seq:05d}"
        rows.append((key, orjson.dumps(key).decode(), "line", "pending", None, None, None, None, None, None))
    store.enqueue(rows)
    with store.transaction() as conn:
        for seq in range(n):
            st = _status(seq, n, state)
            if st == "pending":
                continue
            if st == "failed":
                etype, cat, msg = ERRORS[seq % len(ERRORS)]
                conn.execute(
                    "UPDATE items SET status='failed', attempts=?, error_type=?, error_category=?, error_message=?,"
                    " error_detail=?, error_group=?, started_at=?, finished_at=?, duration_s=? WHERE seq=?",
                    (
                        3 if cat == "transient" else 1,
                        etype,
                        cat,
                        msg,
                        f"Traceback (most recent call last):\n  {msg}",
                        normalize_message(msg),
                        T0,
                        T1,
                        0.25,
                        seq,
                    ),
                )
                conn.execute(
                    "INSERT INTO attempts VALUES (?, 1, 'failed', ?, ?, 0.25, ?, ?, ?, ?)",
                    (seq, T0, T1, etype, cat, msg, msg),
                )
            elif st == "complete":
                conn.execute(
                    "UPDATE items SET status='complete', attempts=1, started_at=?, finished_at=?, duration_s=?,"
                    " result=? WHERE seq=?",
                    (T0, T1, 0.1 + (seq % 7) / 10, orjson.dumps({"tokens": seq}).decode(), seq),
                )
                conn.execute(  # replaces the row the store's trigger wrote from the update above
                    "INSERT OR REPLACE INTO attempts VALUES (?, 1, 'complete', ?, ?, 0.2, NULL, NULL, NULL, NULL)",
                    (seq, T0, T1),
                )
            else:
                conn.execute("UPDATE items SET status=?, started_at=? WHERE seq=?", (st, T0, seq))
        store.set_meta("enqueue_done", 1)
        store.set_meta("results_offset", 0)
    counts = store.counts()
    groups = store.error_groups(10)
    by_type = store.errors_by("error_type")
    store.close()
    (path / "results.jsonl").write_bytes(b"")
    os.chmod(path / "results.jsonl", 0o600)
    (path / "logs").mkdir(mode=0o700)
    (path / "logs" / "3.1.err").write_text("fetching...\nTraceback: upstream timed out\n")
    (path / "logs" / "0.1.out").write_text("processed 120 tokens\n")

    manifest = Manifest(
        batch_id=batch_id,
        name="documents to summarize",
        created_at=T0,
        started_at=T0,
        ended_at=T1 if state not in (BatchState.RUNNING, BatchState.PAUSED) else None,
        state=state,
        halt_reason=halt_reason,
        source={"entries": [{"kind": "lines", "path": "/data/urls.txt"}]},
        processor={"kind": "shell", "command": "summarize --url {} --out {out}", "cwd": "/data"},
        config={"workers": 4, "max_attempts": 3},
        totals=counts,
        duplicates_dropped=7,
        history=[HistoryEntry(action="run", at=T0, pid=4242, host="worker-1")],
    )
    write_model(path / "manifest.json", manifest)
    flying = [s for s in range(n) if _status(s, n, state) == "processing"]
    # As the engine writes them: the first ``workers`` items running, the rest queued behind them.
    workers = 4 if state in (BatchState.RUNNING, BatchState.PAUSED) else len(flying)
    in_flight = [
        InFlight(
            seq=s,
            key=f"https://api.example.com/v1/documents/{s:05d}",
            attempt=1 + s % 2,
            started_at=T1,
            queued=i >= workers,
        )
        for i, s in enumerate(flying)
    ]
    running = min(workers, len(flying)) if state in (BatchState.RUNNING, BatchState.PAUSED) else 0
    queued = len(flying) - running if running else 0
    live = LiveProgress(
        batch_id=batch_id,
        state=state,
        updated_at=updated_at or (HEARTBEAT if state in (BatchState.RUNNING, BatchState.PAUSED) else T1),
        commit_seq=42,
        total=counts.total,
        counts=LiveCounts(**counts.model_dump(), running=running, queued=queued),
        percent=round(counts.percent, 2),
        rate_per_s=12.5 if state == BatchState.RUNNING else 0.0,
        eta_s=9.6 if state == BatchState.RUNNING else None,
        elapsed_s=300.0,
        in_flight=in_flight,
        memory=Memory(rss_mb=58.2, peak_rss_mb=71.0, children_rss_mb=12.4, system_available_mb=20480.0),
        cost=Cost(spent=0.42, budget=5.0),
        errors_by_type=by_type,
        error_groups=groups,
        recent_errors=[
            RecentError(
                seq=3,
                key="https://api.example.com/v1/documents/00003",
                error_type=ERRORS[0][0],
                category="transient",
                message=ERRORS[0][2],
                at=T1,
                attempt=3,
            )
        ],
        paused=state == BatchState.PAUSED,
        workers=4,
        pid=4242,
        host="worker-1",
        halt_reason=halt_reason,
    )
    write_model(path / "live_progress.json", live)
    return path


@contextlib.contextmanager
def hold_lock(batch: Path, *, pid: int = 4242, host: str = "worker-1") -> Iterator[None]:
    """Hold the batch lock as a live engine would (views then show the engine as live).

    It is held by this process; ``pid`` and ``host`` are what the lock file says."""
    fd = os.open(batch / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, orjson.dumps({"pid": pid, "host": host, "started_at": T0}) + b"\n")
        # Written when it was taken, as an engine's is: a lock file written since is an engine's
        # sign of life (its touch while its source keeps it waiting: engine/liveness.py).
        took = datetime.fromisoformat(T0).timestamp()
        os.utime(fd, (took, took))
        yield
    finally:
        os.close(fd)


__all__ = ["FROZEN", "ErrorGroup", "hold_lock", "make_batch"]


def frozen_app(out: Path, batch: Path) -> BatchtuiApp:
    """The dashboard of ``batch`` with no file watcher and the clock at FROZEN (the layout and
    event-log tests)."""
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


async def until(pilot: Any, pred: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Pause the app until ``pred()`` holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s")
        await pilot.pause(0.05)
