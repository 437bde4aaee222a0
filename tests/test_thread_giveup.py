"""A Python call in a worker thread that times out or is skipped, and never returns: a thread
cannot be stopped, so the engine gives that thread up (engine/executors.py ThreadExecutor.abandon).

Before, the call held its worker for good: with every worker held the run stalled, "stalled 59s"
and nothing said why; the timed-out item was retried while its first call still ran (twice at
once, in one process); and a skipped one stayed in flight, so the run could never end.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.executors import LOST_PER_WORKER
from batchtui.engine.liveness import engine_status
from batchtui.engine.models import BatchState
from batchtui.engine.processors import python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

from .conftest import CLI, cli_env, only_batch, wait_until, waits_for_held_calls
from .test_control_holds import rows

PROCS = Path(__file__).with_name("procs.py")


def _items(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"item-{i}\n" for i in range(n)))
    return path


def _rows(batch: Path) -> dict[int, tuple[str, int, str | None]]:
    return {s: (st, a, et) for s, st, a, et in rows(batch, "SELECT seq, status, attempts, error_type FROM items")}


def _starts(log: Path) -> list[tuple[int, int]]:
    return [(int(s), int(a)) for s, a in (line.split() for line in log.read_text().splitlines())]


def _run(tmp_path: Path, out: Path, hang: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    log = tmp_path / "starts.log"
    env = cli_env(out, {"BTUI_TEST_HANG": hang, "BTUI_TEST_EXEC_LOG": str(log)})
    cmd = [*CLI, "run", *args, "--call", f"{PROCS}:hang_marked", "--executor", "thread", "--headless"]
    # A stall (the bug) runs into this timeout: subprocess.TimeoutExpired fails the test.
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, check=False)


def _cli(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``batchtui ARGS`` against the batches of ``out`` (a command beside a running engine)."""
    return subprocess.run([*CLI, *args], check=False, env=cli_env(out), capture_output=True, text=True, timeout=60)


def test_a_timed_out_call_gives_its_worker_up_and_is_not_retried(tmp_path: Path, out_dir: Path) -> None:
    # 3 of 12 items never return, on 2 workers, with retries allowed (--max-attempts 3).
    items = _items(tmp_path, 12)
    proc = _run(tmp_path, out_dir, "0,4,8", str(items), "-j", "2", "--timeout", "0.5", "--max-attempts", "3")
    assert proc.returncode == 1, proc.stderr
    table = _rows(only_batch(out_dir))
    assert {s: r for s, r in table.items() if r[0] != "complete"} == {
        0: ("failed", 1, "timeout"),
        4: ("failed", 1, "timeout"),
        8: ("failed", 1, "timeout"),
    }
    assert sum(r[0] == "complete" for r in table.values()) == 9
    # Each item started once: no retry of a call that still ran, no item run twice.
    starts = _starts(tmp_path / "starts.log")
    assert sorted(starts) == [(seq, 1) for seq in range(12)]
    # Said once, with what to do about it.
    assert proc.stderr.count("cannot be stopped") == 1, proc.stderr
    assert "--executor process" in proc.stderr


def test_threads_given_up_past_the_limit_halt_the_run(tmp_path: Path, out_dir: Path) -> None:
    # Every item hangs, on 1 worker: each timeout gives a thread up and starts another, until
    # LOST_PER_WORKER are held; the next one halts the run instead of stalling it.
    items = _items(tmp_path, 20)
    proc = _run(tmp_path, out_dir, "all", str(items), "-j", "1", "--timeout", "0.3")
    assert proc.returncode == 3, proc.stderr  # halted by a policy
    assert f"{LOST_PER_WORKER + 1} Python calls timed out or skipped still hold worker threads" in proc.stdout
    table = _rows(only_batch(out_dir))
    failed = sorted(s for s, r in table.items() if r[0] == "failed")
    assert failed == list(range(LOST_PER_WORKER + 1))
    assert all(table[s] == ("failed", 1, "timeout") for s in failed)
    assert sorted(s for s, r in table.items() if r[0] == "pending") == list(range(LOST_PER_WORKER + 1, 20))
    assert len(_starts(tmp_path / "starts.log")) == LOST_PER_WORKER + 1


def test_a_skipped_call_that_never_returns_frees_its_worker(tmp_path: Path, out_dir: Path) -> None:
    # One worker, item 0 never returns and there is no timeout: only a skip ends it.
    items = _items(tmp_path, 6)
    log = tmp_path / "starts.log"
    env = cli_env(out_dir, {"BTUI_TEST_HANG": "0", "BTUI_TEST_EXEC_LOG": str(log)})
    cmd = [*CLI, "run", str(items), "--call", f"{PROCS}:hang_marked", "--executor", "thread", "-j", "1", "--headless"]
    engine = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: log.exists() and _starts(log) == [(0, 1)], 30, "item 0 running")
        skip = _cli(out_dir, "skip", only_batch(out_dir).name, "0")
        assert skip.returncode == 0, skip.stderr
        assert "1 running item ends skipped" in skip.stdout, skip.stdout
        _, err = engine.communicate(timeout=60)  # a stall (the bug) runs into this timeout
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 1, err  # some skipped
    table = _rows(only_batch(out_dir))
    # As a shell item skipped while it runs: skipped, its attempt recorded as such (not counted).
    assert table[0] == ("skipped", 0, None)
    attempt = rows(only_batch(out_dir), "SELECT attempt, status, error_message FROM attempts WHERE seq = 0")
    assert attempt == [(1, "skipped", "skipped while running")]
    assert all(table[s][0] == "complete" for s in range(1, 6)), table
    assert sorted(_starts(log)) == [(seq, 1) for seq in range(6)]
    assert "was skipped in a worker thread" in err


def test_a_retry_waits_for_the_call_that_still_runs(tmp_path: Path, out_dir: Path) -> None:
    # Item 0 timed out and its call runs on: an operator's retry of it while the run goes on
    # leaves it failed (it would run twice at once) and says why.
    items = _items(tmp_path, 16)
    log = tmp_path / "starts.log"
    env = cli_env(out_dir, {"BTUI_TEST_HANG": "0", "BTUI_TEST_EXEC_LOG": str(log), "BTUI_TEST_NAP_S": "0.3"})
    cmd = [*CLI, "run", str(items), "--call", f"{PROCS}:hang_marked", "--executor", "thread", "-j", "2"]
    cmd += ["--timeout", "0.5", "--headless"]
    engine = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.iterdir()), 30, "the batch")
        live = only_batch(out_dir) / "live_progress.json"
        wait_until(lambda: live.exists() and _rows(only_batch(out_dir))[0][0] == "failed", 30, "item 0 failed")
        retry = _cli(out_dir, "retry", only_batch(out_dir).name, "0")
        assert retry.returncode == 0, retry.stderr
        assert "0 failed items back to pending; #0 not retried: the call that timed out still runs" in retry.stdout
        _, err = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 1, err
    assert _rows(only_batch(out_dir))[0] == ("failed", 1, "timeout")
    assert [s for s in _starts(log) if s[0] == 0] == [(0, 1)]  # started once, never again


def test_the_lock_stays_while_given_up_calls_run_in_the_process_and_goes_after(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An engine in a process that lives on (the dashboard's): its run ends with item 0's call
    # still running in a given-up thread. Another engine must not take the batch and retry
    # item 0 beside it: the lock stays with this process, as after a stop that gave calls up.
    monkeypatch.setenv("BTUI_TEST_HANG", "0")
    monkeypatch.setenv("BTUI_TEST_EXEC_LOG", str(tmp_path / "starts.log"))
    release = tmp_path / "release"
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    items = _items(tmp_path, 4)
    config = BatchConfig(output_dir=str(out_dir), workers=2, executor="thread", timeout=0.5, fsync=False)
    batch = create_batch(config, build_spec([str(items)]), python_spec(f"{PROCS}:hang_marked"))
    result = BatchRunner(batch).run()
    assert result.state == BatchState.FINISHED
    assert _rows(batch.path)[0] == ("failed", 1, "timeout")
    status = engine_status(batch.path)
    assert status.held and status.pid == os.getpid()
    again = _cli(out_dir, "resume", batch.batch_id, "--retry-failed", "--headless")
    assert again.returncode == 2, again.stderr
    assert f"pid {os.getpid()}" in again.stderr
    assert [s for s in _starts(tmp_path / "starts.log") if s[0] == 0] == [(0, 1)]
    # Once that call returns, the batch is let go: this process could resume it in place.
    release.touch()
    wait_until(lambda: not engine_status(batch.path).held, 30, "the lock let go after the call returned")


def test_a_chunked_call_that_times_out_fails_its_whole_chunk_and_frees_the_run(tmp_path: Path, out_dir: Path) -> None:
    # One call runs a chunk of 3 items: when it hangs, all 3 time out together and fail for
    # good (only the first did, and the other two stayed in flight for good: the run never ended).
    items = _items(tmp_path, 12)
    log = tmp_path / "starts.log"
    env = cli_env(out_dir, {"BTUI_TEST_HANG": "0", "BTUI_TEST_EXEC_LOG": str(log)})
    cmd = [*CLI, "run", str(items), "--call", f"{PROCS}:hang_marked_chunk", "--executor", "thread", "-j", "2"]
    cmd += ["--chunk-size", "3", "--timeout", "0.5", "--headless"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 1, proc.stderr
    table = _rows(only_batch(out_dir))
    assert {s: r for s, r in table.items() if r[0] != "complete"} == dict.fromkeys((0, 1, 2), ("failed", 1, "timeout"))
    assert sum(r[0] == "complete" for r in table.values()) == 9
    assert sorted(_starts(log)) == [(seq, 1) for seq in range(12)]


def test_a_chunked_call_is_given_up_once_every_item_it_runs_is_skipped(tmp_path: Path, out_dir: Path) -> None:
    # A skip of one item of a hung chunked call leaves the call alone (it runs other items too);
    # once the other two are skipped as well, the call is given up and all three end skipped.
    items = _items(tmp_path, 9)
    log = tmp_path / "starts.log"
    env = cli_env(out_dir, {"BTUI_TEST_HANG": "0", "BTUI_TEST_EXEC_LOG": str(log)})
    cmd = [*CLI, "run", str(items), "--call", f"{PROCS}:hang_marked_chunk", "--executor", "thread", "-j", "1"]
    cmd += ["--chunk-size", "3", "--headless"]
    engine = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def skip(*seqs: str) -> str:
        done = _cli(out_dir, "skip", only_batch(out_dir).name, *seqs)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        wait_until(lambda: log.exists() and sorted(_starts(log)) == [(0, 1), (1, 1), (2, 1)], 30, "the chunk running")
        assert "1 running item ends skipped" in skip("0")
        assert engine.poll() is None
        assert _starts(log)[3:] == []  # the one worker is still held: nothing else started
        assert "2 running items end skipped" in skip("1", "2")
        _, err = engine.communicate(timeout=60)  # a stall (the bug) runs into this timeout
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 1, err
    table = _rows(only_batch(out_dir))
    assert [table[s][0] for s in range(9)] == ["skipped"] * 3 + ["complete"] * 6


def test_skips_past_the_limit_of_threads_given_up_do_not_halt_and_the_threads_come_back(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker; items 0..LOST_PER_WORKER hang until released. The operator skips each as it
    # runs: every skip gives its thread up, and the last one is past the limit. A timeout there
    # halts the run (above); a skip did too: the operator's own triage halted the batch. Now the
    # run waits, and once the calls return the thread that was not replaced works again (it
    # left, and the pool was left with no thread: the run stalled).
    import threading

    from batchtui.engine.client import send

    hung = LOST_PER_WORKER + 1
    release = tmp_path / "release"
    log = tmp_path / "starts.log"
    monkeypatch.setenv("BTUI_TEST_HANG", ",".join(map(str, range(hung))))
    monkeypatch.setenv("BTUI_TEST_EXEC_LOG", str(log))
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    config = BatchConfig(output_dir=str(out_dir), workers=1, executor="thread", chunk_size=1, fsync=False)
    batch = create_batch(config, build_spec([str(_items(tmp_path, hung + 5))]), python_spec(f"{PROCS}:hang_marked"))
    runner = BatchRunner(batch)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        for seq in range(hung):
            wait_until(lambda s=seq: log.exists() and (s, 1) in _starts(log), 30, f"item {seq} started")
            send(batch, "skip", seqs=[seq])
        waits_for_held_calls(runner, thread, release)
    finally:
        release.touch()
    assert runner.state == BatchState.FINISHED, runner.halt_reason
    table = _rows(batch.path)
    assert [s for s, r in table.items() if r[0] == "skipped"] == list(range(hung))
    assert sum(r[0] == "complete" for r in table.values()) == 5
