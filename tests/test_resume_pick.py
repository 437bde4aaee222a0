"""`batchtui resume` with and without BATCH while other engines run, with real CLI runs; and the
TUI's hand-off engine, which waits (bounded, said in engine.log) for the engine it takes over from.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock, engine_alive

from .conftest import CLI, cli_env


def _wait(pred, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.02)


def _manifest(batch: Path) -> dict[str, object]:
    return orjson.loads((batch / "manifest.json").read_bytes())  # type: ignore[no-any-return]


def _stopped_batch(tmp_path: Path, out_dir: Path, name: str, n: int = 12) -> Path:
    """A batch stopped by SIGTERM after a few results (resumable)."""
    items = tmp_path / f"{name}.txt"
    items.write_text("".join(f"{name}-{i}\n" for i in range(n)))
    before = set(out_dir.iterdir()) if out_dir.exists() else set()
    proc = subprocess.Popen(
        [*CLI, "run", str(items), "--cmd", "sleep 0.1", "-j", "2", "--headless"],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: len(set(out_dir.iterdir()) - before) == 1 if out_dir.exists() else False, what="the batch dir")
    (batch,) = set(out_dir.iterdir()) - before
    _wait(lambda: (batch / "results.jsonl").exists() and (batch / "results.jsonl").stat().st_size > 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    assert _manifest(batch)["state"] == "stopped"
    # Batch ids start with their creation second (local time, batchdir.new_batch_id): the next
    # batch is the newer once the clock has left this one's second (often it has already).
    _wait(lambda: time.strftime("%Y%m%d_%H%M%S") > batch.name[:15], 5, "the next second")
    return batch


def _running_batch(tmp_path: Path, out_dir: Path, name: str, run_cli) -> tuple[Path, int]:  # type: ignore[no-untyped-def]
    """A batch run by a detached engine for a while (200 items of 0.2 s, one worker)."""
    items = tmp_path / f"{name}.txt"
    items.write_text("".join(f"{name}-{i}\n" for i in range(200)))
    done = run_cli(["run", str(items), "--cmd", "sleep 0.2", "-j", "1", "--detach", "--json"])
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    batch = Path(info["batch_dir"])
    pid = int(info["pid"])
    _wait(lambda: engine_alive(batch) is not None, what="the detached engine's lock")
    # The lock is taken before the run's history entry is written: wait for both, so that a
    # test reading the history afterwards sees this engine's entry and nothing else.
    _wait(lambda: [h["pid"] for h in _manifest(batch)["history"]] == [pid], what="the run's history entry")  # type: ignore[union-attr]
    return batch, pid


def _stop(batch: Path, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    _wait(lambda: engine_alive(batch) is None, what="the detached engine's end")


def test_bare_resume_picks_the_newest_batch_no_engine_runs_and_says_why(
    tmp_path: Path, out_dir: Path, run_cli, invoke_cli
) -> None:  # type: ignore[no-untyped-def]
    older = _stopped_batch(tmp_path, out_dir, "older")
    newer, pid = _running_batch(tmp_path, out_dir, "newer", run_cli)
    try:
        done = invoke_cli(["resume", "--headless"], timeout=60)
        history = _manifest(newer)["history"]
    finally:
        _stop(newer, pid)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    first = done.stderr.splitlines()[0]
    assert (
        first.startswith(f"resuming {older.name} (stopped ") and " ago; the newest resumable batch not running" in first
    )
    assert f"{newer.name} is run by pid {pid} on " in first, first
    assert _manifest(older)["state"] == "finished"
    assert [h["pid"] for h in history] == [pid], "the running batch was not touched"  # type: ignore[union-attr]


def test_bare_resume_when_every_unfinished_batch_runs_says_who_and_exits_2(
    tmp_path: Path, out_dir: Path, run_cli, invoke_cli
) -> None:  # type: ignore[no-untyped-def]
    running, pid = _running_batch(tmp_path, out_dir, "busy", run_cli)
    try:
        for args in (["resume"], ["resume", "--headless"], ["resume", "--detach"]):
            done = invoke_cli(args, timeout=60)
            assert done.returncode == 2, (args, done.returncode, done.stderr)
            assert "Traceback" not in done.stderr
            assert "every unfinished batch" in done.stderr and "is being run by an engine" in done.stderr
            assert f"{running.name}: pid {pid} on " in done.stderr, done.stderr
        history = _manifest(running)["history"]
    finally:
        _stop(running, pid)
    assert [h["pid"] for h in history] == [pid]  # type: ignore[union-attr]


def test_resume_on_a_terminal_of_a_batch_another_engine_runs_fails_before_the_tui(
    tmp_path: Path, out_dir: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    """Never a TUI that says `[RUNNING in this app]` and exits 0 after a BatchLocked toast."""
    running, pid = _running_batch(tmp_path, out_dir, "busy", run_cli)
    env = cli_env(out_dir, {"TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"})
    try:
        child, fd = pty.fork()
        if child == 0:
            os.chdir(tmp_path)
            os.execve(CLI[0], [*CLI, "resume", running.name], env)
        output = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(child, 0)
        os.close(fd)
    finally:
        _stop(running, pid)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 2, text
    assert f"is being run by pid {pid} on" in text, text
    assert "RUNNING in this app" not in text and "\x1b[?1049h" not in text  # the TUI never started


def test_the_hand_off_engine_waits_for_the_lock_and_says_so(tmp_path: Path, out_dir: Path) -> None:
    batch = _stopped_batch(tmp_path, out_dir, "handed")
    lock = BatchLock(batch / "lock")
    lock.acquire()  # the engine it takes over from, still stopping

    def release_once_it_waits() -> None:
        # Let go only once the engine says it waits, and a second later: it says that it took
        # the batch over only after a wait of more than 0.5 s (a loaded machine may take longer
        # than any fixed delay to start the engine at all).
        log = batch / "engine.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "waiting up to" in log.read_text()):
            time.sleep(0.05)
        time.sleep(1.0)
        lock.release()

    releaser = threading.Thread(target=release_once_it_waits)
    releaser.start()
    try:
        from batchtui.tui.launch import detach_engine

        pid = detach_engine(BatchDir(batch), action="resume", lock_wait=20, wait=20)
    finally:
        releaser.join()
    _wait(lambda: engine_alive(batch) is None and _manifest(batch)["state"] == "finished", 60, "the batch finishes")
    log = (batch / "engine.log").read_text()
    assert f"waiting up to 20 s for pid {os.getpid()} on " in log, log
    assert f"took batch {batch.name} over after " in log, log
    history = _manifest(batch)["history"]
    assert history[-1]["pid"] == pid  # type: ignore[index]


def test_the_hand_off_engine_gives_up_after_its_wait_and_says_who_holds_the_batch(
    tmp_path: Path, out_dir: Path, invoke_cli
) -> None:  # type: ignore[no-untyped-def]
    batch = _stopped_batch(tmp_path, out_dir, "held")
    lock = BatchLock(batch / "lock")
    lock.acquire()
    try:
        t0 = time.monotonic()
        done = invoke_cli(["resume", batch.name, "--headless", "--lock-wait", "1.5"], timeout=60)
        waited = time.monotonic() - t0
    finally:
        lock.release()
    assert done.returncode == 2, done.stderr
    assert waited >= 1.5
    assert f"is being run by pid {os.getpid()} on" in done.stderr and "waited 2 s to take the batch over" in done.stderr
    assert "Traceback" not in done.stderr
    assert _manifest(batch)["state"] == "stopped" and len(_manifest(batch)["history"]) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("wait", [0.0, 0.3])
def test_a_user_resume_does_not_wait_for_a_running_engine(
    tmp_path: Path, out_dir: Path, run_cli, invoke_cli, wait: float
) -> None:  # type: ignore[no-untyped-def]
    """Only the hand-off engine waits: `resume BATCH` of a running batch fails at once."""
    running, pid = _running_batch(tmp_path, out_dir, "busy", run_cli)
    try:
        time.sleep(wait)
        t0 = time.monotonic()
        done = invoke_cli(["resume", running.name, "--headless"], timeout=60)
        took = time.monotonic() - t0
    finally:
        _stop(running, pid)
    assert done.returncode == 2 and f"is being run by pid {pid}" in done.stderr, done.stderr
    assert took < 10
