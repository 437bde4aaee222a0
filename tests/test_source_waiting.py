"""An engine whose source is a pipe that pauses is waiting for its source, not hung; a frozen one
is still not responding.

By hand: ``(seq 100; sleep 20; seq 100) | batchtui run - --cmd true --headless`` made ``ls`` say
``created  0/0``, then from the fifth second ``unresponsive`` and "NOT RESPONDING ... hung":
the engine sat in a read of the pipe with nothing to write, and the 100 lines sent before the
pause were not even in the store (a text read of 256 KiB waits for them all, and the enqueue
commits 20,000 rows at a time). Now the engine touches its lock file while its source keeps it
waiting, commits what it read so far, and the views say so; SIGSTOPped, it touches nothing.

The real-process test writes a FIFO and holds it open (as a program that pauses), so the engine
waits exactly where the test stopped writing, not at a moment a sleep guessed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock
from batchtui.engine.liveness import STALE_AFTER_S, Liveness, engine_status
from batchtui.engine.sources import SourceWait, build_spec, iter_blocks
from batchtui.engine.summary import BatchSummary, reading_text, summarize

from .conftest import CLI, cli_env, feeding, only_batch, wait_until


def _ls(out: Path) -> str:
    return subprocess.run([*CLI, "ls"], env=cli_env(out), capture_output=True, text=True, timeout=60, check=True).stdout


def _ls_row(out: Path) -> dict[str, object]:
    proc = subprocess.run(
        [*CLI, "ls", "--json"], env=cli_env(out), capture_output=True, text=True, timeout=60, check=True
    )
    [row] = json.loads(proc.stdout)
    assert isinstance(row, dict)
    return row


def test_an_engine_whose_pipe_pauses_is_waiting_for_its_source_and_frozen_is_not_responding(
    tmp_path: Path, out_dir: Path
) -> None:
    fifo = tmp_path / "items.fifo"
    os.mkfifo(fifo)
    args = ["run", str(fifo), "--as", "lines", "--cmd", "true", "--headless", "--grace", "0"]
    engine = subprocess.Popen(
        [*CLI, *args], env=cli_env(out_dir), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        with feeding(fifo, "".join(f"line-{i}\n" for i in range(100))):  # then the writer pauses
            wait_until(lambda: out_dir.exists() and any(out_dir.iterdir()), 30, "the batch")
            batch = only_batch(out_dir)

            def waited_past_the_bound() -> bool:
                summary = summarize(batch)
                assert not summary.stale, summary.engine  # judged not responding: the bug
                waited = summary.engine.waiting_for_source_s if summary.engine is not None else None
                # The 100 lines sent are in the store while the pipe is quiet (committed on a wait).
                return summary.totals.total == 100 and waited is not None and waited > STALE_AFTER_S + 1

            wait_until(waited_past_the_bound, STALE_AFTER_S + 20, "waiting past the bound of liveness")
            row = _ls_row(out_dir)
            assert row["state"] == "created" and row["reading_source"] is True, row
            engine_row = row["engine"]
            assert isinstance(engine_row, dict)
            assert engine_row["liveness"] == "alive" and engine_row["problem"] is None, row
            assert engine_row["waiting_for_source_s"] is not None and engine_row["waiting_for_source_s"] > 3, row
            listed = _ls(out_dir)
            assert "NOT RESPONDING" not in listed and "unresponsive" not in listed, listed
            assert f"WAITING FOR SOURCE {batch.name}: created, and its engine (pid {engine.pid})" in listed, listed
            assert "100 items so far; its items run once the source ends (its writer closes it)" in listed, listed
            shown = subprocess.run(
                [*CLI, "show", batch.name], env=cli_env(out_dir), capture_output=True, text=True, timeout=60, check=True
            ).stdout
            assert "(created: waiting for its source)" in shown.splitlines()[1], shown
            assert "  Now:       waiting for its source (nothing new for " in shown, shown

            # Frozen while it waits: no touch any more, so not responding, as any frozen engine.
            os.kill(engine.pid, signal.SIGSTOP)
            try:
                wait_until(
                    lambda: engine_status(batch).liveness == Liveness.STALE, STALE_AFTER_S + 5, "stale when frozen"
                )
                assert engine_status(batch).process == "stopped"
                listed = _ls(out_dir)
                assert "unresponsive" in listed and f"NOT RESPONDING {batch.name}" in listed, listed
                assert "WAITING FOR SOURCE" not in listed, listed
            finally:
                os.kill(engine.pid, signal.SIGCONT)
            wait_until(lambda: engine_status(batch).liveness == Liveness.ALIVE, 10, "alive again")
        # The writer closed the pipe: the batch is read to its end and runs.
        assert engine.wait(timeout=60) == 0, engine.stderr.read() if engine.stderr else ""
    finally:
        if engine.poll() is None:
            os.kill(engine.pid, signal.SIGCONT)
            engine.kill()
            engine.wait()
    row = _ls_row(out_dir)
    assert row["state"] == "finished" and row["totals"]["complete"] == 100, row  # type: ignore[index]


@contextlib.contextmanager
def _run_from_stdin(tmp_path: Path, out_dir: Path, first: bytes) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`producer | batchtui run -`: the engine, sent ``first`` and left waiting for more, and its
    batch once it exists; killed at the end if it still runs."""
    engine = subprocess.Popen(
        [*CLI, "run", "-", "--cmd", "true", "--headless"],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert engine.stdin is not None
    try:
        engine.stdin.write(first)
        engine.stdin.flush()
        wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/lock")), 30, "the batch")
        yield engine, only_batch(out_dir)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()


def test_stdin_from_a_pipe_that_pauses_is_read_as_it_comes(tmp_path: Path, out_dir: Path) -> None:
    """`producer | batchtui run -`: the lines sent before the producer pauses are in the store
    while it is quiet, the engine waits for more, and the rest comes when it goes on."""
    with _run_from_stdin(tmp_path, out_dir, "".join(f"é-{i}\r\n" for i in range(50)).encode()) as (engine, batch):
        assert engine.stdin is not None

        def waiting_with_50() -> bool:
            summary = summarize(batch)
            engine_summary = summary.engine
            waiting = engine_summary is not None and engine_summary.waiting_for_source_s is not None
            return summary.reading_source and waiting and summary.totals.total == 50

        wait_until(waiting_with_50, 30, "waiting for stdin with the 50 lines sent stored")
        engine.stdin.write(b"last\n")
        engine.stdin.close()
        assert engine.wait(timeout=60) == 0, engine.stderr.read() if engine.stderr else b""
    keys = subprocess.run(
        [*CLI, "export", batch.name], env=cli_env(out_dir), capture_output=True, timeout=60, check=True
    ).stdout.decode()
    assert [json.loads(line)["key"] for line in keys.splitlines()] == [*(f"é-{i}" for i in range(50)), "last"]


def test_a_run_killed_while_it_reads_stdin_says_no_resume_can_read_the_rest(tmp_path: Path, out_dir: Path) -> None:
    """kill -9 while `producer | batchtui run -` waits for more: `ls` and `show` said "`batchtui
    resume ID` reads the rest first", and that resume refused (stdin cannot be read again)."""
    with _run_from_stdin(tmp_path, out_dir, "".join(f"{i}\n" for i in range(30)).encode()) as (engine, batch):
        wait_until(lambda: summarize(batch).totals.total == 30, 30, "the 30 lines sent stored")
        engine.kill()  # SIGKILL, mid-read
        engine.wait(timeout=30)
    said = (
        f"ENQUEUE CUT SHORT {batch.name}: the batch's enqueue was cut short while it read stdin, which"
        " cannot be read again: its 30 items are not the whole input and no resume can read the rest;"
        " start a new batch"
    )
    assert said in _ls(out_dir)
    show = subprocess.run(
        [*CLI, "show", batch.name], env=cli_env(out_dir), capture_output=True, text=True, timeout=60, check=True
    )
    assert "no resume can read the rest" in show.stdout and "reads the rest first" not in show.stdout
    resumed = subprocess.run(
        [*CLI, "resume", batch.name, "--headless"],
        env=cli_env(out_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert resumed.returncode == 2 and "stdin, which cannot be read again" in resumed.stderr


# -- the reading side, on a real FIFO --------------------------------------------------------------


@pytest.fixture
def fifo_writer(tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], None], threading.Event]]:
    """A FIFO and its writer, which opens it only when told to write the first text (so a reader
    first waits for the open), writes each text given, and closes at ``done``."""
    fifo = tmp_path / "src.fifo"
    os.mkfifo(fifo)
    texts: list[str] = []
    ready = threading.Condition()
    done = threading.Event()

    def write() -> None:
        with ready:
            ready.wait_for(lambda: bool(texts) or done.is_set(), timeout=30)
        with open(fifo, "w") as f:
            sent = 0
            while True:
                with ready:
                    ready.wait_for(lambda n=sent: len(texts) > n or done.is_set(), timeout=30)
                    more = texts[sent:]
                for text in more:
                    f.write(text)
                    f.flush()
                sent += len(more)
                if done.is_set() and len(texts) == sent:
                    return

    def send(text: str) -> None:
        with ready:
            texts.append(text)
            ready.notify_all()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield fifo, send, done
    finally:
        done.set()
        with ready:
            ready.notify_all()
        writer.join(10)


def test_a_pipe_is_read_as_it_comes_and_its_waits_are_told(
    fifo_writer: tuple[Path, Callable[[str], None], threading.Event],
) -> None:
    fifo, send, done = fifo_writer
    ticks: list[float] = []
    wait = SourceWait(lambda: ticks.append(time.monotonic()), tick=0.1)
    blocks = iter_blocks(build_spec([str(fifo)], as_kind="lines"), wait=wait)
    got: list[list[str]] = []
    reader = threading.Thread(target=lambda: got.extend(blocks), daemon=True)
    reader.start()
    # No writer has opened the FIFO: the open waits, and says so.
    wait_until(lambda: len(ticks) >= 3, 10, "ticks while the FIFO has no writer")
    send("a\nb\n")
    wait_until(lambda: got == [["a", "b"]], 10, "the lines sent, before the pipe ends")
    before = len(ticks)
    send("c")  # a line not ended yet waits for the rest
    wait_until(lambda: len(ticks) >= before + 3, 10, "ticks while the pipe is quiet")
    assert got == [["a", "b"]]
    send("d\r\ne\n")
    wait_until(lambda: got == [["a", "b"], ["cd", "e"]], 10, "the next lines, newlines as a text file reads them")
    done.set()
    send("")
    reader.join(10)
    assert not reader.is_alive() and got == [["a", "b"], ["cd", "e"]]


def test_a_regular_file_is_read_as_before_and_never_waits(tmp_path: Path) -> None:
    src = tmp_path / "items.txt"
    src.write_text("x\ny\n")
    ticks: list[int] = []
    blocks = list(iter_blocks(build_spec([str(src)]), wait=SourceWait(lambda: ticks.append(1), tick=0.01)))
    assert blocks == [["x", "y"]] and ticks == []


# -- liveness and the summary on fixture files ------------------------------------------------------


def _reading_batch(tmp_path: Path, out: Path, lines: int) -> Path:
    """A batch being made: its enqueue stopped on the test's FIFO, the process killed, and the
    batch's lock then taken by this test (as the engine reading its source holds it)."""
    fifo = tmp_path / "slow.fifo"
    os.mkfifo(fifo)
    with (tmp_path / "engine.err").open("w") as err:
        proc = subprocess.Popen(
            [*CLI, "run", str(fifo), "--as", "lines", "--cmd", "true", "--headless"],
            env=cli_env(out),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    # Killed while the writer still holds the pipe open: once the block below ends, the pipe's
    # end reaches the engine, which would finish its enqueue if it ran first.
    with feeding(fifo, "".join(f"k{i}\n" for i in range(lines))):
        try:
            wait_until(lambda: out.exists() and any(out.glob("*/items.db")), 30, "the batch's store")
            batch = only_batch(out)
            wait_until(lambda: _stored(batch) == lines, 30, "the lines committed")
        except AssertionError as exc:  # a wait ran out: what the engine said (once, under load)
            raise AssertionError(f"{exc}; the engine's stderr: {(tmp_path / 'engine.err').read_text()}") from None
        finally:
            proc.kill()
            proc.wait()
    return batch


def _stored(batch: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM items").fetchone()[0])
    except sqlite3.Error:
        return 0


def _cell(summary: BatchSummary) -> str:
    """The browser's state cell of ``summary``, 40 columns wide."""
    from batchtui.tui.screens.browser_columns import cell_text

    return cell_text("state", summary, 40, time.time(), "yellow", "red").plain


def test_the_views_say_reading_then_waiting_and_a_silent_one_is_stale(tmp_path: Path, out_dir: Path) -> None:
    batch = _reading_batch(tmp_path, out_dir, 30)
    bdir = BatchDir(batch)
    lock = BatchLock(bdir.lock)
    lock.acquire()  # this process is the engine that reads the source now
    try:
        started = os.stat(bdir.lock).st_mtime
        wal = batch / "items.db-wal"
        now = started + 20
        os.utime(wal, (now - 1, now - 1))  # it committed a chunk a second ago
        reading = summarize(bdir, now=now)
        assert reading.state == "created" and reading.reading_source and reading.totals.total == 30
        assert reading.engine is not None and reading.engine.waiting_for_source_s is None
        assert reading_text(reading) == "reading its source: 30 items so far"
        assert _cell(reading) == "reading source, 30 so far"
        # ls on the real clock: a chunk committed just now.
        os.utime(wal)
        listed = _ls(out_dir)
        assert f"{batch.name}  reading " in listed, listed
        said = (
            f"READING SOURCE {batch.name}: created, and its engine (pid {os.getpid()}) is reading its source: 30 items"
        )
        assert f"{said} so far; its items run once the whole source is read" in listed, listed

        os.utime(wal, (now - 12, now - 12))  # nothing stored for 12 s, but the lock touched just now
        os.utime(bdir.lock, (now - 0.5, now - 0.5))
        waiting = summarize(bdir, now=now)
        assert waiting.engine is not None and waiting.engine.liveness == "alive"
        assert waiting.engine.waiting_for_source_s == pytest.approx(12.0, abs=0.05)
        assert reading_text(waiting) == "waiting for its source (nothing new for 12s): 30 items so far"
        assert _cell(waiting) == "waiting for source, 30 so far"

        os.utime(bdir.lock, (now - 8, now - 8))  # touched nothing for 8 s either: frozen or hung
        stale = summarize(bdir, now=now)
        assert stale.stale and stale.engine is not None and stale.engine.waiting_for_source_s is None
        assert stale.state == "created" and stale.engine.badge.startswith("NOT RESPONDING")
        assert _cell(stale) == f"created {stale.engine.badge}"
    finally:
        lock.release()
    # Its engine gone (killed -9 while it read): cut short, as before.
    gone = summarize(bdir)
    assert gone.state == "interrupted" and gone.enqueue_cut_short and not gone.reading_source
