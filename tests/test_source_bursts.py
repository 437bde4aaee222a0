"""A pipe that sends a line at a time, or a burst every second or two, is being read: every view
says so, not "waiting for its source" between bursts, and never "not responding".

By hand: a writer that sent a line every 0.3 s kept `batchtui ls` at ``reading  0/0``, then
from the fifth second ``unresponsive`` ("NOT RESPONDING ... hung"): its reading thread never
waited a whole tick, so nothing was committed (the enqueue held the lines for a chunk of 20,000)
and the lock was not touched. And bursts 1.5 s apart made each view's answer flip between
reading and waiting (each wait of a second between bursts is a touch of the lock).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock
from batchtui.engine.liveness import WAITING_AFTER_S
from batchtui.engine.summary import summarize

from .conftest import CLI, cli_env, only_batch, wait_until
from .test_source_waiting import _reading_batch


class _Writer:
    """The writer of a FIFO as a program that trickles, then sends bursts: a line every 0.3 s
    until :attr:`trickled` is set, then ``bursts`` bursts of 20 lines 1.5 s apart, then it holds
    the pipe open (its reader waits) until :attr:`done`."""

    def __init__(self, fifo: Path, bursts: int) -> None:
        self.fifo, self.bursts = fifo, bursts
        self.trickled, self.burst_done, self.done = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        n = 0
        with open(self.fifo, "w") as f:
            while not self.trickled.wait(0.3):
                f.write(f"t{n}\n")
                f.flush()
                n += 1
            for b in range(self.bursts):
                f.write("".join(f"b{b}-{i}\n" for i in range(20)))
                f.flush()
                if b < self.bursts - 1:
                    time.sleep(1.5)  # the writer's pace, which the test is about (no assertion waits on it)
            self.burst_done.set()
            self.done.wait(60)


@pytest.fixture
def engine_on_fifo(tmp_path: Path, out_dir: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    fifo = tmp_path / "items.fifo"
    os.mkfifo(fifo)
    engine = subprocess.Popen(
        [*CLI, "run", str(fifo), "--as", "lines", "--cmd", "true", "--headless", "--grace", "0"],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield engine, fifo
    finally:
        if engine.poll() is None:
            engine.send_signal(signal.SIGKILL)
            engine.wait()


def test_a_trickle_and_bursts_read_as_reading_and_a_pause_as_waiting(
    engine_on_fifo: tuple[subprocess.Popen[str], Path], out_dir: Path
) -> None:
    engine, fifo = engine_on_fifo
    writer = _Writer(fifo, bursts=5)
    writer.thread.start()
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/items.db")), 30, "the batch")
        batch = only_batch(out_dir)

        def counted() -> bool:
            summary = summarize(batch)
            assert not summary.stale, summary.engine
            return summary.totals.total >= 5

        # A line every 0.3 s, the writer never pausing: its lines are counted while it trickles.
        wait_until(counted, 10, "the trickled lines stored while they come")
        writer.trickled.set()

        # Bursts 1.5 s apart: reading all along, never waiting nor stale.
        seen = []
        while not writer.burst_done.is_set():
            summary = summarize(batch)
            assert summary.reading_source and summary.engine is not None, summary
            assert not summary.stale and summary.engine.waiting_for_source_s is None, (seen, summary.engine)
            seen.append(summary.totals.total)
            time.sleep(0.1)  # sampling while the bursts come; the loop ends with the writer's bursts
        assert len(seen) > 30 and seen[-1] > seen[0], seen

        # The writer pauses for good: waiting, once nothing came for WAITING_AFTER_S.
        def waiting() -> bool:
            engine_row = summarize(batch).engine
            return engine_row is not None and engine_row.waiting_for_source_s is not None

        wait_until(waiting, WAITING_AFTER_S + 5, "waiting for the source")
        got = summarize(batch)
        assert got.engine is not None and got.engine.waiting_for_source_s is not None
        assert got.engine.waiting_for_source_s >= WAITING_AFTER_S
    finally:
        writer.trickled.set()
        writer.done.set()
        writer.thread.join(30)
    assert engine.wait(timeout=60) == 0, engine.stderr.read() if engine.stderr else ""
    row = summarize(batch)
    assert row.state == "finished" and row.totals.complete == row.totals.total > 100, row


def test_a_pause_between_bursts_is_reading_a_longer_one_waiting(tmp_path: Path, out_dir: Path) -> None:
    """On the files: the lock touched after the last commit is a wait only once that commit is
    WAITING_AFTER_S old."""
    batch = _reading_batch(tmp_path, out_dir, 10)
    bdir = BatchDir(batch)
    lock = BatchLock(bdir.lock)
    lock.acquire()  # this process is the engine that reads the source now
    try:
        now = os.stat(bdir.lock).st_mtime + 60
        wal = batch / "items.db-wal"
        os.utime(wal, (now - 1.5, now - 1.5))  # a burst committed 1.5 s ago, at a wait's tick
        os.utime(bdir.lock, (now - 1.5, now - 1.5))  # and the lock touched with it
        between = summarize(bdir, now=now)
        assert between.reading_source and between.engine is not None and not between.stale
        assert between.engine.waiting_for_source_s is None, between.engine

        os.utime(wal, (now - WAITING_AFTER_S - 1, now - WAITING_AFTER_S - 1))
        os.utime(bdir.lock, (now - 0.5, now - 0.5))
        paused = summarize(bdir, now=now)
        assert paused.engine is not None and paused.engine.waiting_for_source_s == pytest.approx(WAITING_AFTER_S + 1)
    finally:
        lock.release()
