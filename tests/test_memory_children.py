"""The memory sample finds the engine's children without reading every process of the system.

psutil's ``children(recursive=True)`` reads the parent of every process there is: on a host of
3,000 processes it took 56 ms of the runner's thread, each second. On Linux the sample reads
each of its threads' /proc/PID/task/TID/children (a shell item's command is the child of the
worker thread that started it), then theirs."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from batchtui.engine import monitor
from batchtui.engine.monitor import MemoryMonitor, descendants
from batchtui.engine.shell.spawn_glibc import libc_spawner

from .conftest import wait_until

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
    # This process may have other children that come and go meanwhile (an earlier test's engine
    # watchdog ending its sweep: CI, once): psutil is asked before and after. Every descendant
    # both scans saw is found, and nothing is found that neither saw.
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    found = descendants(os.getpid())
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert set(family) <= set(found)
    assert before & after <= set(found) <= before | after, (before, found, after)
    assert len(found) == len(set(found))


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
    monkeypatch.setattr(monitor, "_family", lambda pid: pytest.fail("read /proc's children files"))
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


def test_a_child_not_yet_execd_by_vfork_is_not_counted_as_a_copy_of_its_parent(tmp_path: Path) -> None:
    """posix_spawn (how every shell item starts) makes the child with vfork: until it execs it
    runs in its parent's memory, and /proc shows it with its parent's RSS. Counted, a run of
    quick commands showed the engine's memory doubled in about one sample in eight. Here the
    child is held before its exec (its stdin is a fifo nobody writes yet), in this process's
    memory, made big."""
    spawner = libc_spawner()
    if spawner is None:
        pytest.skip("no glibc posix_spawn here")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    block = b"x" * (200 << 20)  # resident in this process, so in the child's view of it too
    spawned: list[int] = []
    null = [os.open(os.devnull, os.O_WRONLY) for _ in range(2)]
    argv = (ctypes.c_char_p * 2)(b"true", None)
    envp = (ctypes.c_char_p * 1)(None)
    # The engine's own way (ctypes: the GIL is let go while the child starts; os.posix_spawn
    # keeps it, and this thread could not open the fifo's other end).
    opens = ((0, str(fifo), os.O_RDONLY),)
    sleep = (ctypes.c_char_p * 3)(b"sleep", b"60", None)

    def start() -> None:
        # First a command that execs and runs on, from the same thread: the thread waiting for
        # the held child lists it too, and it has its own memory.
        spawned.append(spawner.spawn(b"/bin/sleep", sleep, envp, null[0], null[1]))
        spawned.append(spawner.spawn_redirected(b"/bin/true", argv, envp, null[0], null[1], opens))

    thread = threading.Thread(target=start, daemon=True)
    before = set(descendants(os.getpid()))
    thread.start()
    held: list[int] = []

    def started() -> bool:
        """The sleep has started, and the second child is there (it cannot return before the fifo opens)."""
        if len(spawned) == 1:
            held[:] = sorted(set(descendants(os.getpid())) - before - set(spawned))
        return bool(held)

    try:
        wait_until(started, what="the vfork child before its exec")
        naive = sum(monitor._rss_bytes(c) for c in descendants(os.getpid()))
        assert naive >= len(block)  # what /proc says of it: this process's memory
        counted = monitor.children_rss_bytes(os.getpid())
        assert counted <= naive - len(block)
        assert counted >= monitor._rss_bytes(spawned[0]) > 0  # the running `sleep` counts
        assert MemoryMonitor().sample(force=True).children_rss_mb < (naive - len(block)) / 1048576 + 16
    finally:
        if spawned:
            os.kill(spawned[0], 9)
        os.close(os.open(fifo, os.O_WRONLY))  # its open returns; it execs /bin/true and ends
        thread.join(30)
        for fd in null:
            os.close(fd)
    assert spawned[1:] == held
    for pid in spawned:
        os.waitpid(pid, 0)
    del block


def test_a_forked_child_that_has_not_execd_counts_with_its_own_memory() -> None:
    """A fork (not a vfork) gives the child its own memory at once, and its parent goes on: such
    a child (a callable's ``os.fork()``, a shell's subshell) counts, though it has not exec'd."""
    before = set(descendants(os.getpid()))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own 100 MB, then wait to be told to go
        os.close(write)
        block = b"y" * (100 << 20)
        os.read(read, 1)
        os._exit(len(block) and 0)
    os.close(read)
    try:
        wait_until(lambda: monitor._rss_bytes(pid) >= 100 << 20, what="the forked child's memory")
        assert set(descendants(os.getpid())) - before == {pid}
        assert monitor.children_rss_bytes(os.getpid()) >= 100 << 20
    finally:
        os.write(write, b"x")
        os.close(write)
        os.waitpid(pid, 0)


# A child of several threads whose grandchild is started by a thread that is not its main one.
THREADED = (
    "import subprocess, sys, threading, time\n"
    "def start():\n"
    "    p = subprocess.Popen(['sleep', '60'])\n"
    "    print(p.pid, flush=True)\n"
    "    time.sleep(60)\n"
    "threading.Thread(target=start, daemon=True).start()\n"
    "time.sleep(60)\n"
)


def test_a_child_of_several_threads_has_each_threads_children_found() -> None:
    """A process of one thread has its children read from that thread's file alone (a sample
    of hundreds of commands reads half the files it did); one of several has every thread's
    read: a command that runs threads (a pool worker, a Python callable's Popen) starts its
    own children from any of them."""
    child = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        found = descendants(os.getpid())
        assert child.pid in found and grandchild in found, (child.pid, grandchild, found)
        # Each one's RSS first, then the sum: a process just started (the grandchild's `sleep`
        # still mapping its libraries) only grows, so the sum read after holds at least both.
        both = monitor._rss_bytes(child.pid) + monitor._rss_bytes(grandchild)
        rss = monitor.children_rss_bytes(os.getpid())
        assert rss >= both > 0
    finally:
        for pid in (child.pid,):
            os.kill(pid, 9)
        child.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, 9)
