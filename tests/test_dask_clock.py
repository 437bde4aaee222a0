"""Each item of a dask task on its own clock, on a real cluster (engine/dask_ledger.py: since).

A dask task runs a chunk's items one after another. Every item of a task that had begun was
given the task's start: the --timeout watchdog judged the 4th item of a chunk by the time the
three before it took, and the in-flight list (the dashboard's "running for") and the ETA counted
the chunk-mates waiting behind the running item as running since the chunk began.

The engine runs in a thread of this process on a cluster the test owns (two single-threaded
worker processes), as ``--scheduler`` would reach it: there a timed-out call is failed at once
by the watchdog (it cannot be interrupted), so a wrong clock shows as a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.config import BatchConfig
from batchtui.engine.dispatch import Dispatcher
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

from .conftest import dask_client, wait_until
from .test_control_holds import rows
from .test_dask import needs_dask

pytestmark = pytest.mark.xdist_group("test_dask_clock")

#: Each item logs when it began (its worker's clock), then takes 0.4 s (item SLOW: 1.5 s); item
#: HELD, if any, waits (up to 60 s) for the file RELEASE instead.
STEPS = """
import os
import time


def step(item):
    with open({log!r}, "a") as fh:
        fh.write(f"{{item.seq}} {{time.time()!r}}\\n")
    if item.seq == {held!r}:
        deadline = time.monotonic() + 60
        while not os.path.exists({release!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        time.sleep(1.5 if item.seq == {slow!r} else 0.4)
    return {{"seq": item.seq}}
"""

CHUNK = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A scheduler and two single-threaded worker processes, shared by this module's tests."""
    with dask_client(1) as client:
        yield client


def _began(log: Path) -> dict[int, float]:
    """seq -> when it began (time.time() on its worker), from the items' log."""
    text = log.read_text() if log.exists() else ""
    return {int(seq): float(at) for seq, at in (line.split() for line in text.splitlines() if line.strip())}


def _start(
    tmp_path: Path, cluster: Any, *, held: int | None = None, slow: int | None = None, timeout: float | None = None
) -> tuple[Any, BatchRunner, threading.Thread, Path]:
    """CHUNK items of STEPS, handed out as one chunk, one task: (batch, runner, its thread, the
    items' log). The file ``release`` in tmp_path lets item ``held`` end."""
    log = tmp_path / "began.log"
    steps = tmp_path / "steps.py"
    steps.write_text(STEPS.format(log=str(log), held=held, slow=slow, release=str(tmp_path / "release")))
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{i}\n" for i in range(CHUNK)))
    config = BatchConfig(
        output_dir=str(tmp_path / "out"),
        workers=1,
        executor="dask",
        scheduler=cluster.scheduler.address,
        chunk_size=CHUNK,
        timeout=timeout,
        max_attempts=1,
        fsync=False,
    )
    batch = create_batch(config, build_spec([str(items)]), python_spec(f"{steps}:step"))
    runner = BatchRunner(batch)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return batch, runner, thread, log


@needs_dask
def test_the_item_a_task_runs_is_running_since_its_own_start_and_its_chunk_mates_wait(
    tmp_path: Path, cluster: Any
) -> None:
    """A task of 6 items: 0-3 take 0.4 s each, 4 waits. While 4 runs, live progress lists it
    running since it began, not since its task began 1.6 s earlier, and 5 (behind it in the task)
    as queued: before, 5 was listed running too, both since the task began."""
    batch, runner, thread, log = _start(tmp_path, cluster, held=4)
    live = batch.path / "live_progress.json"

    def in_flight() -> dict[int, dict[str, Any]]:
        try:
            return {int(f["seq"]): f for f in orjson.loads(live.read_bytes())["in_flight"]}
        except (OSError, orjson.JSONDecodeError, KeyError):
            return {}

    try:
        # Item 4 began, and the engine heard that 3 ended (its outcome is committed).
        wait_until(
            lambda: 4 in _began(log) and rows(batch.path, "SELECT status FROM items WHERE seq = 3") == [("complete",)],
            timeout=30,
        )
        wait_until(lambda: 4 in in_flight() and not in_flight()[4]["queued"], timeout=10)
        began = _began(log)
        assert began[4] - began[0] >= 1.5  # 0-3 ran before it, in the same task
        shown = datetime.fromisoformat(in_flight()[4]["started_at"]).timestamp()
        # Its own start, as the engine heard of it: a few ms late, never early.
        assert began[4] - 0.05 <= shown <= began[4] + 1.0, (shown - began[4], began)
        assert in_flight()[5]["queued"] is True
        assert runner.executor is not None and runner.executor.started(5) is None
        since = runner.executor.started(4)
        assert since is not None and time.monotonic() - since < time.time() - began[0] - 1.0
    finally:
        (tmp_path / "release").touch()
        thread.join(60)
    assert not thread.is_alive()
    assert rows(batch.path, "SELECT COUNT(*) FROM items WHERE status = 'complete'") == [(CHUNK,)]


@needs_dask
def test_the_timeout_judges_each_item_of_a_chunk_by_its_own_time(
    tmp_path: Path, cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task of 6 items of 0.4 s, but item 2 takes 1.5 s, under --timeout 1: item 2 alone times
    out (failed at once: a call cannot be interrupted on a cluster the engine does not own), and
    the others complete, each recorded with its own 0.4 s. Counted from their task's start, items
    2-5 were failed as timed out at 1.1 s, 4 and 5 before they had begun; judged by the running
    item's clock, 3-5 (not begun) with it.

    The dispatcher hands out one item at a time under a --timeout on dask (so a timed-out call
    does not take chunk-mates down), and a chunk here is forced: what is tested is the clock."""
    monkeypatch.setattr(Dispatcher, "chunk_size", lambda self, total: CHUNK)
    batch, _, thread, log = _start(tmp_path, cluster, slow=2, timeout=1.0)
    thread.join(60)
    assert not thread.is_alive()
    got = rows(batch.path, "SELECT seq, status, error_type, duration_s FROM items ORDER BY seq")
    want = [(s, "failed", "timeout") if s == 2 else (s, "complete", None) for s in range(CHUNK)]
    assert [(s, st, e) for s, st, e, _ in got] == want, got
    durations = {int(s): float(d) for s, _, _, d in got}  # type: ignore[arg-type]
    assert 1.0 <= durations.pop(2) < 1.5, got  # from its own start to the watchdog's verdict
    assert all(0.39 <= d < 0.9 for d in durations.values()), got
    began = _began(log)
    assert sorted(began) == list(range(CHUNK)) and began[5] - began[0] >= 2.9  # one task, in order
