"""Outcomes stream: a chunk's quick items are committed while its slow item still runs.

A worker groups its outcomes (one hand-over per quick item would cost more than the item), but
an outcome kept for its group must not wait for the next item of the chunk: before the outbox's
flusher, the quick items of a chunk [quick x7, slow] reached neither results.jsonl nor the store
until the slow one ended (issue 16's leftover).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine import outbox
from batchtui.engine.attempts import Classifier, Outcome, run_items
from batchtui.engine.callables import CallableProcessor
from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.outbox import REPORT_EVERY_S, Outbox
from batchtui.engine.processors import python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.shell.item import Item
from batchtui.engine.sources import build_spec

from .conftest import wait_until
from .test_control_holds import PROCS, complete_seqs, lines_file, logged_seqs, rows


@pytest.fixture(params=["timer", "condition"])
def flusher_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A flusher of its own for the test: on the kernel timer (Linux), or on the condition
    variable used where there is none."""
    kind: str = request.param
    monkeypatch.setattr(outbox, "USE_TIMER", kind == "timer")
    monkeypatch.setattr(outbox, "_FLUSHER", None)
    flusher = outbox._flusher()
    assert isinstance(flusher, outbox._TimedFlusher if kind == "timer" else outbox._Flusher)
    return kind


def test_an_outcome_left_waiting_is_handed_over_without_a_next_one(flusher_kind: str) -> None:
    sent: list[list[Any]] = []
    box = Outbox(sent.append)
    box.add("a", urgent=False, now=time.perf_counter())
    assert sent == []  # grouped: not handed over on its own at once
    wait_until(lambda: sent == [["a"]], timeout=5, what="the lone outcome handed over by the flusher")
    box.add("b", urgent=True, now=time.perf_counter())
    assert sent == [["a"], ["b"]]  # urgent: at once
    box.add("c", urgent=False, now=time.perf_counter())
    box.add("d", urgent=False, now=time.perf_counter() + 2 * REPORT_EVERY_S)  # decided later: goes with c
    assert sent[-1] == ["c", "d"]
    box.close()
    assert sent == [["a"], ["b"], ["c", "d"]]


def test_groups_of_several_outboxes_each_leave_at_their_deadline(flusher_kind: str) -> None:
    """One closed before its deadline, the other left waiting: the flusher still hands that one
    over (on a timer set for the first's deadline, it sets it again for the second's)."""
    sent_a: list[list[Any]] = []
    sent_b: list[list[Any]] = []
    box_a, box_b = Outbox(sent_a.append), Outbox(sent_b.append)
    box_a.add("a", urgent=False, now=time.perf_counter())
    box_b.add("b", urgent=False, now=time.perf_counter() + REPORT_EVERY_S / 2)
    box_a.close()
    assert sent_a == [["a"]] and sent_b == []
    wait_until(lambda: sent_b == [["b"]], timeout=5, what="the group left waiting")


def _timer_left(fd: int) -> float:
    """What the kernel says is left of the timerfd ``fd`` (0: it is not set)."""
    import ctypes

    from batchtui.engine.timerfd import _Itimerspec

    libc = ctypes.CDLL(None, use_errno=True)
    spec = _Itimerspec()
    assert libc.timerfd_gettime(fd, ctypes.byref(spec)) == 0, ctypes.get_errno()
    return spec.it_value.tv_sec + spec.it_value.tv_nsec / 1e9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
def test_a_group_handed_over_before_its_deadline_unsets_the_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher on a timer is not woken for a group that leaves before its deadline (most
    do: their chunk ended): the group's first outcome sets the kernel timer, its hand-over
    unsets it, as long as no other group waits."""
    monkeypatch.setattr(outbox, "USE_TIMER", True)
    monkeypatch.setattr(outbox, "_FLUSHER", None)
    monkeypatch.setattr(outbox, "REPORT_EVERY_S", 3600.0)  # a stalled test machine cuts no group
    flusher = outbox._flusher()
    assert isinstance(flusher, outbox._TimedFlusher)
    fd = flusher._timer.fd
    assert _timer_left(fd) == 0
    sent: list[list[Any]] = []
    box, other = Outbox(sent.append), Outbox(sent.append)
    box.add("a", urgent=False, now=time.perf_counter())
    assert 3500 < _timer_left(fd) <= 3600  # set for the group's deadline
    other.add("x", urgent=False, now=time.perf_counter())
    box.add("b", urgent=True, now=time.perf_counter())  # handed over, by its urgent outcome
    assert sent == [["a", "b"]]
    assert _timer_left(fd) > 0  # another group still waits: the timer stays set
    assert other.take() == ["x"]  # taken by its worker (a pool worker's chunk end)
    assert _timer_left(fd) == 0
    box.add("c", urgent=False, now=time.perf_counter())
    assert _timer_left(fd) > 0
    box.close()
    assert sent == [["a", "b"], ["c"]] and _timer_left(fd) == 0
    box.add("d", urgent=False, now=time.perf_counter())
    box.discard()
    assert _timer_left(fd) == 0


def test_the_flusher_is_woken_only_from_its_idle_sleep_and_loses_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # The flusher on a condition variable (where there is no kernel timer) is woken by a new
    # outbox only when it sleeps with nothing to watch; one that comes while it waits for
    # another's deadline is looked at when that deadline comes.
    monkeypatch.setattr(outbox, "USE_TIMER", False)
    monkeypatch.setattr(outbox, "_FLUSHER", None)

    def idle() -> bool:
        return outbox._flusher()._idle

    first: list[list[Any]] = []
    Outbox(first.append).add("x", urgent=False, now=time.perf_counter())
    wait_until(lambda: first == [["x"]] and idle(), timeout=5, what="the flusher idle")
    # From its idle sleep: woken at once, and the group leaves about REPORT_EVERY_S later.
    sent_a: list[list[Any]] = []
    t0 = time.perf_counter()
    Outbox(sent_a.append).add("a", urgent=False, now=t0)
    assert not idle()
    wait_until(lambda: sent_a == [["a"]], timeout=5, what="a group added while the flusher slept idle")
    assert time.perf_counter() - t0 < 20 * REPORT_EVERY_S
    # While it waits for A's deadline, B comes (no wake-up) and A is closed early: B still leaves.
    wait_until(idle, timeout=5, what="the flusher idle again")
    sent_b: list[list[Any]] = []
    box_a, box_b = Outbox(sent_a.append), Outbox(sent_b.append)
    box_a.add("a2", urgent=False, now=time.perf_counter())
    box_b.add("b", urgent=False, now=time.perf_counter())
    box_a.close()
    assert sent_a[-1] == ["a2"] and sent_b == []
    wait_until(lambda: sent_b == [["b"]], timeout=5, what="a group added while the flusher waited for another")


def test_a_chunks_last_outcome_goes_at_once_without_the_flusher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk's close() follows its last item at once: that item's group goes with it, and
    the flusher (a thread woken to watch the group, then again at its deadline) is not asked
    to watch it. A chunk of one item: no watch at all; of three: one, for the first group."""
    watched: list[object] = []

    class Flusher:
        def watch(self, box: object, at: float) -> None:
            watched.append(box)

        def forget(self, box: object) -> None:
            pass

    monkeypatch.setattr(outbox, "_flusher", Flusher)
    monkeypatch.setattr(outbox, "REPORT_EVERY_S", 3600.0)  # a stalled test machine cuts no group
    funcs = tmp_path / "funcs.py"
    funcs.write_text("def work(item):\n    return item.data\n")
    processor = CallableProcessor(f"{funcs}:work")
    items = [Item(seq, str(seq), f"v{seq}", 1, str(tmp_path)) for seq in range(3)]
    sent: list[list[Outcome]] = []
    run_items(processor, items[:1], Classifier(), False, None, sent.append)
    assert [[o.seq for o in group] for group in sent] == [[0]] and watched == []
    run_items(processor, items, Classifier(), False, None, sent.append)
    assert [[o.seq for o in group] for group in sent] == [[0], [0, 1, 2]] and len(watched) == 1


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_quick_items_of_a_chunk_are_committed_while_its_slow_item_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    release = tmp_path / "release"
    monkeypatch.setenv("BTUI_TEST_HELD_SEQ", "7")
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    config = BatchConfig(
        output_dir=str(tmp_path / "out"), workers=1, executor=executor, chunk_size=8, max_attempts=1, fsync=False
    )
    # One worker, one chunk of 8: items 0-6 return at once, item 7 waits for the release file.
    batch = create_batch(config, build_spec([str(lines_file(tmp_path, 8))]), python_spec(f"{PROCS}:held_one"))
    runner = BatchRunner(batch)
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(result=runner.run()), daemon=True)
    thread.start()

    def committed() -> list[int]:
        return complete_seqs(batch.path)

    def logged() -> list[int]:
        return logged_seqs(batch.path)

    try:
        wait_until(lambda: committed() == list(range(7)), timeout=15, what="items 0-6 committed")
        assert logged() == list(range(7))
        assert not release.exists()  # item 7 cannot have ended: it waits for this file
        assert thread.is_alive()
    finally:
        release.touch()
        thread.join(30)
    assert not thread.is_alive()
    assert committed() == list(range(8)) and logged() == list(range(8))


def test_a_chunk_sent_ahead_behind_a_slow_item_is_run_by_another_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process executor sends a worker its next chunk before the running one ends (no idle
    round trip between chunks); a chunk so sent that waits behind a slow item goes back to the
    hand-off, and the other worker runs it."""
    release = tmp_path / "release"
    monkeypatch.setenv("BTUI_TEST_HELD_SEQ", "0")
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    config = BatchConfig(
        output_dir=str(tmp_path / "out"), workers=2, executor="process", chunk_size=1, max_attempts=1, fsync=False
    )
    batch = create_batch(config, build_spec([str(lines_file(tmp_path, 12))]), python_spec(f"{PROCS}:held_one"))
    runner = BatchRunner(batch)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()

    def committed() -> list[int]:
        return [int(s) for (s,) in rows(batch.path, "SELECT seq FROM items WHERE status = 'complete' ORDER BY seq")]

    try:
        # Item 0 holds its worker; the chunk sent to that worker after it must not wait for it.
        wait_until(lambda: committed() == list(range(1, 12)), timeout=15, what="items 1-11 committed")
        assert not release.exists() and thread.is_alive()
    finally:
        release.touch()
        thread.join(30)
    assert not thread.is_alive()
    assert committed() == list(range(12))
    (attempts,) = rows(batch.path, "SELECT SUM(attempts) FROM items")[0]
    assert attempts == 12  # each item ran once: the chunk taken back did not run where it was sent


def test_a_reclaimed_item_is_in_one_place_for_the_runner() -> None:
    from batchtui.engine.handoff import CANCELLED, QUEUED, Handoff
    from batchtui.engine.processors import Item

    handoff = Handoff()
    handoff.put([Item(seq, str(seq), str(seq), 1, "/tmp") for seq in range(3)])
    chunk = handoff.take()
    assert chunk is not None
    assert chunk.gate.begin(0)  # item 0 runs; 1 and 2 wait behind it
    assert handoff.reclaim(chunk) == 2
    assert [chunk.gate.state(i) for i in range(3)] == [1, CANCELLED, CANCELLED]  # never start there
    fresh = handoff.take()
    assert fresh is not None and [it.seq for it in fresh.items] == [1, 2]
    assert fresh.gate.state(0) == QUEUED
    assert handoff.cancel([1, 0]) == [1]  # the runner takes item 1 back from its new chunk; 0 runs
    handoff.done(chunk)  # the old chunk ends: the reclaimed item 2 is still known, in its new chunk
    assert handoff.state(2) == QUEUED and handoff.counts() == (1, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
@pytest.mark.parametrize("ctypes_loaded", [True, False])
def test_with_no_descriptor_left_for_a_timer_the_flusher_waits_on_a_condition(ctypes_loaded: bool) -> None:
    """A process out of descriptors (its soft limit reached) gets the condition variable's
    flusher, which needs none, and its groups still leave: whether ctypes was loaded before
    (the timer is refused) or is first imported then (its library cannot be opened)."""
    import subprocess

    code = (
        "import os, resource, sys, time\n"
        "from batchtui.engine import outbox\n"
        "from batchtui.engine.outbox import Outbox\n"
        "if sys.argv[1] == 'loaded':\n"  # ctypes and its libc loaded while descriptors are left
        "    import batchtui.engine.timerfd\n"
        "    batchtui.engine.timerfd._load()\n"
        "keep = []\n"
        "try:\n"
        "    while True:\n"
        "        keep.append(os.open(os.devnull, os.O_RDONLY))\n"
        "except OSError:\n"
        "    pass\n"
        "sent = []\n"
        "Outbox(sent.append).add('a', urgent=False, now=time.perf_counter())\n"
        "deadline = time.monotonic() + 10\n"
        "while not sent and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(type(outbox._flusher()).__name__, sent)\n"
    )
    prelude = "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + code, "loaded" if ctypes_loaded else "not"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["_Flusher", "[['a']]"]
