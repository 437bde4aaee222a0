"""``--detach`` returns once its engine holds the batch, so that a ``stop`` sent right after it
reaches that engine. An engine that took longer than the wait (15 s, on a loaded machine) was
announced as running all the same: a stop sent then found no engine (exit 2), and the engine
took the batch a moment later and ran it to its end. Now the CLI waits longer, says that it
waits, and says so plainly (exit 1) if the engine still has not taken the batch."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock, engine_alive
from batchtui.tui.cli import summary
from batchtui.tui.launch import EngineNotReady, detach_engine

from .conftest import only_batch, wait_until


def _manifest(batch: Path) -> dict[str, object]:
    data = orjson.loads((batch / "manifest.json").read_bytes())
    assert isinstance(data, dict)
    return data


def _slow_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every engine this test starts in the background spends ``seconds`` starting up (a
    ``sitecustomize`` on its path that sleeps when it is a background engine)."""
    site = tmp_path / "slow-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f'import sys, time\nif "--engine-action" in sys.argv:\n    time.sleep({seconds})\n'
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


def test_run_detach_says_when_its_engine_has_not_taken_the_batch_yet(
    tmp_path: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    invoke_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    _slow_engines(tmp_path, monkeypatch, 6.0)
    monkeypatch.setattr(summary, "DETACH_WAIT_S", 2.0)
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")

    t0 = time.monotonic()
    done = invoke_cli(["run", str(items), "--cmd", "true", "--detach"])
    waited = time.monotonic() - t0
    assert done.returncode == 1, done.stdout + done.stderr
    assert waited >= 2.0
    assert "waiting for the background engine (pid " in done.stderr
    assert "has not taken batch " in done.stderr and "after 2 s and is still trying" in done.stderr
    assert "engine running in the background" not in done.stdout  # no promise it cannot keep
    assert "Traceback" not in done.stderr

    # The engine was still starting: it takes the batch and runs it.
    batch = only_batch(out_dir)
    wait_until(lambda: _manifest(batch)["state"] == "finished", 60, "the slow engine finishes the batch")
    totals = _manifest(batch)["totals"]
    assert isinstance(totals, dict) and totals["complete"] == 2


def test_a_detach_that_gets_the_batch_in_time_returns_its_engine(
    tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(40)))
    done = invoke_cli(["run", str(items), "--cmd", "sleep 0.2", "-j", "1", "--detach"])
    assert done.returncode == 0, done.stderr
    assert "engine running in the background (pid " in done.stdout
    batch = only_batch(out_dir)
    holder = engine_alive(batch)
    assert holder is not None  # it holds the batch as the CLI returns: a stop reaches it
    stop = invoke_cli(["stop", batch.name])
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: _manifest(batch)["state"] == "stopped", 60, "the engine stops")


def test_detach_engine_must_hold_raises_for_an_engine_still_waiting_for_the_lock(tmp_path: Path) -> None:
    """The function itself: the engine waits for a lock this test holds (a hand-off's lock
    wait), past ``wait``; told once it is slow; the engine goes on and takes the batch later."""
    from .test_resume_pick import _stopped_batch

    out = tmp_path / "out"
    batch = _stopped_batch(tmp_path, out, "held")
    lock = BatchLock(batch / "lock")
    lock.acquire()
    told: list[int] = []
    try:
        with pytest.raises(EngineNotReady) as raised:
            detach_engine(
                BatchDir(batch),
                action="resume",
                lock_wait=30,
                wait=1.5,
                must_hold=True,
                on_slow=told.append,
                slow_after=0.3,
            )
    finally:
        lock.release()
    assert told == [raised.value.pid]
    assert raised.value.exit_code == 1
    wait_until(lambda: _manifest(batch)["state"] == "finished", 60, "the engine takes the batch once it is free")
