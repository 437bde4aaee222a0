"""A named pipe read again: the resume of a run killed -9 while it read the pipe, and a rescan.

The pipe gave its lines once, to the engine that died; its writer is gone with that reader. A
resume used to open the pipe again with no limit (it waited, silent, for a writer that would not
come) and skipped the first N lines its next writer sent, N the lines read before: a writer that
went on from where it was lost as many lines. Now the items stored are kept, the pipe is opened
again for at most ``REREAD_WAIT_S`` seconds (said on stderr), the part skipped is only what the
batch holds, and with no writer by then the batch goes on with what it has and says so; a
rescan with no writer is refused, nothing changed.

Each CLI here is a process of its own (a resume that hangs fails the test through its timeout,
not the test session); the wait is shortened for it by a wrapper that sets the constant first.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import CLI, cli_env, feeding, only_batch, wait_until

#: The CLI with the named pipe's wait for a writer set to WAIT_S.
WAIT_S = 1.5
SHORT_WAIT = [
    sys.executable,
    "-c",
    "import sys; import batchtui.engine.sources.waiting as w; w.REREAD_WAIT_S = float(sys.argv.pop(1));"
    " from batchtui.tui.cli.entry import run; run()",
    str(WAIT_S),
]


def _keys(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [k for (k,) in conn.execute("SELECT key FROM items ORDER BY seq")]
    finally:
        conn.close()


def _stored(out: Path) -> int:
    dbs = list(out.glob("*/items.db")) if out.exists() else []
    if not dbs:
        return 0
    try:
        return len(_keys(dbs[0]))
    except sqlite3.Error:  # created, its tables not yet
        return 0


def _killed_mid_enqueue(work: Path, out: Path, first: list[str]) -> Path:
    """A batch whose `run` was killed -9 while it read the named pipe work/src.txt: the lines
    ``first`` sent and committed, the writer still holding the pipe open, then gone."""
    fifo = work / "src.txt"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*CLI, "run", "src.txt", "--cmd", "true", "--headless"],
        env=cli_env(out),
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with feeding(fifo, "".join(f"{k}\n" for k in first)):
        try:
            wait_until(lambda: _stored(out) == len(first), timeout=60, what="the pipe's lines committed")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return only_batch(out)


def _resume(work: Path, out: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHORT_WAIT, "resume", *args, "--headless"],
        env=cli_env(out),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _write_later(fifo: Path, lines: list[str]) -> threading.Thread:
    """A new writer of the pipe: it opens it (waiting for the resume's reader), sends, closes."""

    def feed() -> None:
        with open(fifo, "w") as f:
            f.write("".join(f"{k}\n" for k in lines))

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return t


FIRST = [f"k{i}" for i in range(5)]
REST = [f"k{i}" for i in range(5, 9)]


def test_a_resume_with_no_writer_keeps_what_was_read_says_so_and_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = _killed_mid_enqueue(tmp_path, out, FIRST)
    started = time.monotonic()
    proc = subprocess.Popen(
        [*SHORT_WAIT, "resume", batch.name, "--headless"],
        env=cli_env(out),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # While it waits, the views can say for how long (the dashboard: "its items run in 1s
    # unless a writer opens it"): the batch's source_reading carries the end of the wait.
    from batchtui.engine.batchdir import BatchDir
    from batchtui.engine.liveness import engine_status
    from batchtui.engine.reading import source_reading

    def waiting_until() -> float | None:
        reading = source_reading(BatchDir(batch), engine_status(batch), None)
        return reading.writer_until if reading is not None else None

    wait_until(lambda: waiting_until() is not None, timeout=30, what="the wait for a writer shown to the views")
    assert 0 < waiting_until() - time.time() <= WAIT_S  # type: ignore[operator]
    stdout, stderr = proc.communicate(timeout=60)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started < 30  # the wait's 1.5 s, the run, the start-ups
    assert "the 5 items it read are kept" in res.stderr and "is a named pipe" in res.stderr
    assert f"waiting up to {WAIT_S:g} s for a writer" in res.stderr
    assert f"no writer opened {tmp_path / 'src.txt'} within {WAIT_S:g} s: not read again" in res.stderr
    assert _keys(batch / "items.db") == FIRST
    assert "(finished)" in res.stdout
    conn = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:  # the wait is over: no view says it waits
        assert conn.execute("SELECT count(*) FROM meta WHERE k='pipe_writer_until'").fetchone()[0] == 0
    finally:
        conn.close()


def test_the_note_of_a_resume_waiting_for_a_pipes_writer_says_how_long_it_waits() -> None:
    from batchtui.engine.reading import SourceReading

    note = SourceReading(5, True, 3.0, time.time() + 12.5).note()
    assert note in (f"a named pipe read again: its items run in {s}s unless a writer opens it" for s in (11, 12))
    assert SourceReading(5, True, 3.0).note() == "its items run once the source ends (its writer closes it)"


@pytest.mark.parametrize("sent", ["the rest", "everything again"])
def test_a_resume_reads_a_new_writer_whole_or_from_where_it_was_never_doubling_or_losing(
    tmp_path: Path, sent: str
) -> None:
    out = tmp_path / "out"
    batch = _killed_mid_enqueue(tmp_path, out, FIRST)
    writer = _write_later(tmp_path / "src.txt", REST if sent == "the rest" else FIRST + REST)
    res = _resume(tmp_path, out, batch.name)
    writer.join(10)
    assert res.returncode == 0, res.stderr
    assert "read " in res.stderr and "again: 4 new items" in res.stderr
    assert _keys(batch / "items.db") == FIRST + REST  # in order, once each
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["duplicates_dropped"] == 0  # the lines sent again are no duplicates
    assert manifest["totals"]["complete"] == 9


def _run_from_a_pipe(tmp_path: Path) -> tuple[Path, Path]:
    """A batch run to its end from the named pipe src.txt (FIRST sent, then the pipe closed):
    the output folder and the pipe."""
    out = tmp_path / "out"
    fifo = tmp_path / "src.txt"
    os.mkfifo(fifo)
    writer = _write_later(fifo, FIRST)
    made = subprocess.run(
        [*CLI, "run", "src.txt", "--cmd", "true", "--headless"],
        env=cli_env(out),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    writer.join(10)
    assert made.returncode == 0, made.stderr
    return out, fifo


def test_a_rescan_of_a_pipe_with_no_writer_is_refused_with_nothing_changed(tmp_path: Path) -> None:
    out, fifo = _run_from_a_pipe(tmp_path)
    batch = only_batch(out)
    res = _resume(tmp_path, out, batch.name, "--rescan", "--drop-missing")
    assert res.returncode == 2, res.stderr
    assert "it must send the whole source again" in res.stderr
    assert f"error: cannot rescan: no writer opened the named pipe {fifo} within {WAIT_S:g} s; nothing changed" in (
        res.stderr
    )
    assert _keys(batch / "items.db") == FIRST
    conn = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        assert {s for (s,) in conn.execute("SELECT status FROM items")} == {"complete"}  # none skipped as missing
    finally:
        conn.close()


def test_the_rescan_preview_never_reads_a_named_pipe(tmp_path: Path) -> None:
    """The resume dialog's preview: read there, the pipe's lines would be the preview's."""
    from batchtui.engine.batchdir import BatchDir
    from batchtui.engine.errors import UserError
    from batchtui.engine.rescan_preview import preview_rescan

    out, fifo = _run_from_a_pipe(tmp_path)
    got: list[BaseException] = []

    def preview() -> None:
        try:
            preview_rescan(BatchDir(only_batch(out)))
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=preview, daemon=True)
    t.start()
    t.join(20)
    assert got and isinstance(got[0], UserError), "the preview opened the pipe and waits for a writer"
    assert str(got[0]) == f"no preview: {fifo} is a named pipe, which gives its lines once (to the rescan itself)"


def test_a_pipe_opened_again_with_no_writer_gives_up_in_time_and_leaves_no_thread(tmp_path: Path) -> None:
    from batchtui.engine.sources import NoWriter, SourceWait

    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    ticks: list[float] = []
    wait = SourceWait(lambda: ticks.append(time.monotonic()), tick=0.1, writer_within=0.5)
    started = time.monotonic()
    got: list[BaseException | int] = []

    def open_it() -> None:
        try:
            got.append(wait.open_pipe(str(fifo)))
        except BaseException as exc:
            got.append(exc)

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(10)
    if opener.is_alive():  # it waits on: a writer's open frees it, so the test ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the open waited for a writer past its writer_within")
    assert len(got) == 1 and isinstance(got[0], NoWriter), got
    assert 0.5 <= time.monotonic() - started < 5
    assert ticks  # the wait was told while it lasted (the engine touches its lock)
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "batchtui-source-open"],
        timeout=5,
        what="the open's thread ended",
    )
    # A writer that comes in time is read.
    writer = _write_later(fifo, ["x"])
    fd = SourceWait(tick=0.1, writer_within=10).open_pipe(str(fifo))
    try:
        assert os.read(fd, 10) == b"x\n"
    finally:
        os.close(fd)
        writer.join(5)
