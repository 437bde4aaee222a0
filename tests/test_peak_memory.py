"""report.json's peak memory is the run's real peak (issue 15, point 13b).

The monitor samples once a second; a peak between two samples or after the last one (a big
run's finalizing) was missed: a 1M-item run reported 82-89 MB with a kernel high-water mark of
127 MB. The report now also reads the kernel's high-water marks (this process and its exited
children), read when the report is written, as its last figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.config import BatchConfig
from batchtui.engine.models import BatchState, Counts, ErrorGroup, Manifest
from batchtui.engine.report import build_report
from batchtui.engine.timing import BatchTiming

from .conftest import CLI, cli_env, only_batch

MB = 1 << 20


class RecordingStore:
    """The store calls build_report makes, in order."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def errors_by(self, column: str) -> dict[str, int]:
        self.calls.append(f"errors_by {column}")
        return {}

    def error_groups(self, limit: int = 20) -> list[ErrorGroup]:
        self.calls.append("error_groups")
        return []


class FakeMonitor:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def run_peak_mb(self) -> float:
        self.calls.append("peak")
        return 127.0

    def run_cpu_s(self) -> tuple[float, float]:
        return 1.5, 2.25


def test_the_report_reads_the_peak_last(tmp_path: Path) -> None:
    calls: list[str] = []
    manifest = Manifest(
        batch_id="20261118_090000_00000001",
        name="n",
        created_at="2026-11-18T09:00:00+00:00",
        source={},
        processor={"kind": "demo"},
        config={},
    )
    report = build_report(
        BatchDir(tmp_path / manifest.batch_id),
        manifest,
        RecordingStore(calls),  # type: ignore[arg-type]
        state=BatchState.FINISHED,
        halt_reason=None,
        started_at="2026-11-18T09:00:00+00:00",
        ended_at="2026-11-18T09:01:00+00:00",
        timing=BatchTiming(active_s=60.0, run_s=60.0, runs=1, items_per_s=1 / 60),
        counts=Counts(total=1, complete=1),
        durations=[0.5],
        memory=FakeMonitor(calls),
        cost_spent=0.0,
        config=BatchConfig(),
    )
    assert report.peak_memory_mb == 127.0
    assert (report.engine_cpu_s, report.children_cpu_s) == (1.5, 2.25)
    assert calls[-1] == "peak" and calls.count("peak") == 1, calls


# In a fresh interpreter: the peaks of this one (pytest's) say nothing about a run.
MONITOR_SCRIPT = """
import json, subprocess, sys
from batchtui.engine.monitor import MemoryMonitor

monitor = MemoryMonitor()
monitor.sample(force=True)
before = monitor.peak_mb
block = b"x" * (300 << 20)  # touched, so resident; gone before the next sample
del block
own = monitor.run_peak_mb()
subprocess.run([sys.executable, "-c", "block = b'y' * (400 << 20)"], check=True)  # a child, reaped
with_child = monitor.run_peak_mb()
print(json.dumps({"before": before, "own": own, "with_child": with_child}))
"""


#: Attempts of a kernel measurement. The kernel's high-water mark of a process (ru_maxrss) is
#: updated from approximate per-CPU RSS counters: on this 6.18 kernel, under a heavy load, it
#: missed a freed 300 MB block in about one full suite run of three (seen 3 times on
#: 2026-12-03, never quiet or under CPU hogs alone). A product that does not read the mark
#: (the bug these tests guard) fails every attempt; the kernel's miss does not repeat.
KERNEL_ATTEMPTS = 3


@pytest.mark.slow
def test_a_peak_between_samples_and_an_exited_childs_peak_count() -> None:
    """Out of the default run for the same reason as the report's test below: with a full suite
    beside it, this kernel's in-run mark missed the block in all 3 attempts of a CI run."""
    for _ in range(KERNEL_ATTEMPTS):
        proc = subprocess.run(
            [sys.executable, "-c", MONITOR_SCRIPT], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        if got["own"] >= got["before"] + 290:
            break
    assert got["own"] >= got["before"] + 290, got  # the 300 MB block, never sampled
    assert got["with_child"] >= 400, got  # the child's 400 MB, never sampled either


ALLOCATE = """
def f(item):
    if item.seq == 3:
        block = b"x" * (300 << 20)  # resident for a moment, between two samples
        del block
    return {"seq": item.seq}
"""


@pytest.mark.slow
def test_a_runs_report_holds_at_least_the_kernels_high_water_mark(tmp_path: Path) -> None:
    """Out of the default run (`pytest -m slow` runs it): on this machine's 6.18 kernel, with a
    full suite running beside it, the mark the engine reads while it runs missed the 300 MB
    block in all 3 attempts of a CI run (report 49.5 MB) while the same process's mark at its
    exit, from wait4, held it (678 MB). Quiet, it passes; see KERNEL_ATTEMPTS."""
    code = tmp_path / "alloc.py"
    code.write_text(ALLOCATE)
    items = tmp_path / "items.txt"
    items.write_text("".join(f"i{n}\n" for n in range(10)))
    args = ["run", str(items), "--call", f"{code}:f", "--executor", "thread", "-j", "1", "--headless"]
    for attempt in range(KERNEL_ATTEMPTS):  # see KERNEL_ATTEMPTS
        out = tmp_path / f"out{attempt}"
        proc = subprocess.Popen(
            [*CLI, *args], env=cli_env(out), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(proc.pid, 0)  # the engine process's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == 0, err[-2000:]
        report = orjson.loads((only_batch(out) / "report.json").read_bytes())
        if report["peak_memory_mb"] >= 300:
            break
    high_water = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / MB
    assert report["peak_memory_mb"] >= 300, (report["peak_memory_mb"], high_water)
    # What the CLI does after writing the report (its summary lines) allocates next to nothing.
    assert report["peak_memory_mb"] >= high_water - 5, (report["peak_memory_mb"], high_water)
