"""The GIL switch interval is process-wide: runs shorten it while they go on, and leave the
process as they found it, also when two runs in one process overlap and end out of order."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import SWITCH_INTERVAL_S, BatchRunner, RunResult
from batchtui.engine.sources import build_spec

from .conftest import wait_until

DEFAULT = 0.005


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(DEFAULT)
    yield
    sys.setswitchinterval(before)


def _start(tmp_path: Path, name: str) -> tuple[threading.Thread, dict[str, RunResult], Path, Path]:
    """A run on its own thread whose one item waits for a gate file; (thread, result box, gate,
    the file the item writes once it runs)."""
    folder = tmp_path / name
    folder.mkdir()
    items = folder / "items.txt"
    items.write_text("x\n")
    gate, started = folder / "gate", folder / "started"
    config = BatchConfig(output_dir=str(folder / "out"), fsync=False, workers=1)
    spec = shell_spec(f"touch {started}; while [ ! -e {gate} ]; do sleep 0.01; done")
    batch = create_batch(config, build_spec([str(items)]), spec)
    box: dict[str, RunResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", BatchRunner(batch).run()))
    thread.start()
    wait_until(started.exists, what=f"run {name} running its item")
    return thread, box, gate, started


def _end(thread: threading.Thread, box: dict[str, RunResult], gate: Path) -> None:
    gate.touch()
    thread.join(60)
    assert box["result"].exit_code == 0


def test_overlapping_runs_ending_out_of_order_restore_the_interval(tmp_path: Path) -> None:
    first = _start(tmp_path, "a")
    assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    second = _start(tmp_path, "b")
    _end(*first[:3])
    assert sys.getswitchinterval() == SWITCH_INTERVAL_S  # the second run still goes on
    _end(*second[:3])
    assert sys.getswitchinterval() == DEFAULT


def test_an_interval_set_by_the_program_during_a_run_is_kept(tmp_path: Path) -> None:
    thread, box, gate, _ = _start(tmp_path, "a")
    sys.setswitchinterval(0.002)
    _end(thread, box, gate)
    assert sys.getswitchinterval() == 0.002
