"""The memory sample finds the engine's children without reading every process of the system.

psutil's ``children(recursive=True)`` reads the parent of every process there is: on a host of
3,000 processes it took 56 ms of the runner's thread, each second. On Linux the sample reads
each of its threads' /proc/PID/task/TID/children (a shell item's command is the child of the
worker thread that started it), then theirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from batchtui.engine import monitor
from batchtui.engine.monitor import MemoryMonitor, descendants

pytestmark = pytest.mark.skipif(
    not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"), reason="no /proc/PID/task/TID/children"
)

# A child that starts a grandchild and reports its pid; both sleep until killed.
FAMILY = (
    "import subprocess, sys, time\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid, flush=True)\ntime.sleep(60)\n"
)


@pytest.fixture
def family() -> Iterator[list[int]]:
    """A child started by a thread of this process (not its main one), which lives on as a
    worker thread does (a thread's children are its own: the main thread's file lists them
    only once that thread has ended), and the child's own child: their pids."""
    procs: list[subprocess.Popen[str]] = []
    started, done = threading.Event(), threading.Event()

    def start() -> None:
        procs.append(subprocess.Popen([sys.executable, "-c", FAMILY], stdout=subprocess.PIPE, text=True))
        started.set()
        done.wait(60)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    assert started.wait(30)
    child = procs[0]
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    try:
        yield [child.pid, grandchild]
    finally:
        done.set()
        for pid in (grandchild, child.pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        child.wait(10)


def test_the_descendants_are_found_through_each_threads_children(family: list[int]) -> None:
    found = descendants(os.getpid())
    assert set(family) <= set(found)
    assert sorted(found) == sorted(p.pid for p in psutil.Process().children(recursive=True))


def test_a_sample_counts_the_children_without_psutils_scan_of_every_process(
    family: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def every_process(*args: Any, **kwargs: Any) -> list[psutil.Process]:
        raise AssertionError("psutil read every process of the system")

    expected = sum(psutil.Process(pid).memory_info().rss for pid in family) / 1048576
    monkeypatch.setattr(psutil.Process, "children", every_process)
    sample = MemoryMonitor().sample(force=True)
    assert sample.children_rss_mb >= round(expected, 1) - 0.5  # the two, and nothing of this test's own


def test_where_the_kernel_has_no_children_files_psutil_finds_them(
    family: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = MemoryMonitor()
    memory._proc = psutil.Process(os.getpid())  # as on a kernel without CONFIG_PROC_CHILDREN, or not Linux
    monkeypatch.setattr(monitor, "descendants", lambda pid: pytest.fail("read /proc's children files"))
    expected = sum(psutil.Process(pid).memory_info().rss for pid in family) / 1048576
    assert memory.sample(force=True).children_rss_mb >= round(expected, 1) - 0.5


def test_a_child_that_ended_is_left_out_with_its_own(family: list[int]) -> None:
    child, grandchild = family
    assert {child, grandchild} <= set(descendants(os.getpid()))
    os.kill(child, 9)
    os.waitpid(child, 0)  # reaped: its child now belongs to init (or a subreaper), not to us
    found = descendants(os.getpid())
    assert child not in found and grandchild not in found


def test_the_linux_sample_reads_what_psutil_reads_without_importing_it(family: list[int]) -> None:
    """Its own RSS and the system's available memory from /proc too: psutil's import (5-10 ms
    of every run's start) is not made."""
    code = (
        "import json, sys\n"
        "from batchtui.engine.monitor import MemoryMonitor\n"
        "m = MemoryMonitor().sample(force=True)\n"
        "print(json.dumps([m.rss_mb, m.system_available_mb, 'psutil' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    rss, available, imported = json.loads(done.stdout)
    assert not imported
    assert 5 < rss < 200  # an interpreter with the engine's models imported
    assert abs(available - psutil.virtual_memory().available / 1048576) < 512
    sample = MemoryMonitor().sample(force=True)
    assert abs(sample.rss_mb - psutil.Process().memory_info().rss / 1048576) < 16
