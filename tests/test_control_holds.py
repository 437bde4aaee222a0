"""The control contract (DESIGN section 6), on real engines running real commands.

Once a stop, skip, pause or halt is decided, no item handed out and not yet started starts;
items never run twice; a callable's BaseException fails its item and nothing else. Each item
logs its start in a side-effect file, so "nothing started after" is read from what happened,
not from the engine's own account. Each test failed on 4578d41 (before the hand-off gate).
"""

from __future__ import annotations

import collections
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.control import append_command, new_command, wait_for_ack

from .conftest import CLI, cli_env, only_batch, wait_until

PROCS = Path(__file__).with_name("procs.py")


def starts(log: Path) -> list[int]:
    """The seqs whose command or call began, in order (one line each: 'SEQ' or 'SEQ ATTEMPT')."""
    if not log.exists():
        return []
    return [int(line.split()[0]) for line in log.read_text().splitlines() if line.strip()]


def rows(batch: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def complete_seqs(batch: Path) -> list[int]:
    """The seqs the store has committed as complete, in order."""
    return [int(s) for (s,) in rows(batch, "SELECT seq FROM items WHERE status = 'complete' ORDER BY seq")]


def logged_seqs(batch: Path) -> list[int]:
    """The seqs results.jsonl holds, sorted (none before the file exists)."""
    results = batch / "results.jsonl"
    text = results.read_bytes() if results.exists() else b""
    return sorted(orjson.loads(line)["seq"] for line in text.splitlines())


def start_engine(
    tmp_path: Path, out_dir: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "run", *args, "--headless"],
        env=cli_env(out_dir, env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("".join(f"{i + 1}\n" for i in range(n)))
    return path


def test_stop_then_resume_runs_no_item_twice(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """Issue 14.1: the items queued behind the running one never start on a stop; the resume
    runs each of them once, and the interrupted one again (it was killed after --grace)."""
    log = tmp_path / "runs.log"
    go = tmp_path / "go"  # until it exists, an item runs until it is killed
    cmd = f"echo {{seq}} >> {log}; while [ ! -e {go} ]; do sleep 0.05; done"
    engine = start_engine(
        tmp_path, out_dir, [str(lines_file(tmp_path, 4)), "--cmd", cmd, "--workers", "1", "--grace", "1"]
    )
    try:
        wait_until(lambda: starts(log) == [0])
        batch = only_batch(out_dir)
        stopped = invoke_cli(["stop", batch.name])
        assert stopped.returncode == 0, stopped.stderr
        assert engine.wait(timeout=30) == 130
    finally:
        if engine.poll() is None:
            engine.kill()
    # The engine is gone, and with it every thread that could start an item.
    assert starts(log) == [0]
    assert rows(batch, "SELECT seq, status, attempts FROM items ORDER BY seq") == [
        (0, "pending", 0),
        (1, "pending", 0),
        (2, "pending", 0),
        (3, "pending", 0),
    ]
    go.touch()
    resumed = invoke_cli(["resume", batch.name, "--headless"], timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert collections.Counter(starts(log)) == {0: 2, 1: 1, 2: 1, 3: 1}


def test_stop_with_long_grace_lets_running_items_finish_and_starts_none(
    tmp_path: Path, out_dir: Path, invoke_cli
) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "runs.log"
    engine = start_engine(
        tmp_path,
        out_dir,
        [str(lines_file(tmp_path, 6)), "--cmd", f"echo {{seq}} >> {log}; sleep 1", "-j", "1", "--grace", "600"],
    )
    try:
        wait_until(lambda: starts(log) == [0])
        batch = only_batch(out_dir)
        assert invoke_cli(["stop", batch.name]).returncode == 0
        assert engine.wait(timeout=30) == 130
    finally:
        if engine.poll() is None:
            engine.kill()
    assert starts(log) == [0]
    assert rows(batch, "SELECT status FROM items WHERE seq=0") == [("complete",)]
    assert rows(batch, "SELECT count(*) FROM items WHERE status='pending' AND attempts=0") == [(5,)]


def test_skip_of_queued_items_means_they_never_start(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """Issue 14.2: a skip of items handed out but not started skips them, it does not run them."""
    log = tmp_path / "runs.log"
    engine = start_engine(
        tmp_path,
        out_dir,
        [str(lines_file(tmp_path, 6)), "--cmd", f"echo {{seq}} >> {log}; sleep 0.7", "--workers", "1"],
    )
    try:
        wait_until(lambda: starts(log) == [0])
        batch = only_batch(out_dir)
        skipped = invoke_cli(["skip", batch.name, "3", "4"])
        assert skipped.returncode == 0, skipped.stderr
        assert "2 skipped" in skipped.stdout, skipped.stdout
        assert engine.wait(timeout=60) == 1  # some skipped
    finally:
        if engine.poll() is None:
            engine.kill()
    assert sorted(starts(log)) == [0, 1, 2, 5]
    assert rows(batch, "SELECT seq, status, attempts FROM items WHERE seq IN (3, 4) ORDER BY seq") == [
        (3, "skipped", 0),
        (4, "skipped", 0),
    ]
    assert rows(batch, "SELECT count(*) FROM attempts WHERE seq IN (3, 4)") == [(0,)]


def test_pause_starts_nothing_more(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """Issue 14.3: once a pause is acknowledged, only the items already running finish."""
    log = tmp_path / "runs.log"
    workers = 2
    engine = start_engine(
        tmp_path,
        out_dir,
        [str(lines_file(tmp_path, 40)), "--cmd", f"echo {{seq}} >> {log}; sleep 0.4", "-j", str(workers)],
    )
    try:
        wait_until(lambda: len(starts(log)) >= 3)
        batch = only_batch(out_dir)
        bdir = BatchDir(batch)
        cmd = new_command("pause")
        append_command(bdir, cmd)
        assert wait_for_ack(bdir, cmd.id, timeout=20) is not None
        # Acknowledged: what started by now is in the log, or began and has not logged yet
        # (at most one per worker): nothing else may start.
        before = len(starts(log))
        # The items running when the pause took effect end; then nothing runs. A stop ends the
        # engine (and every worker with it): what the log holds then is all that ever started.
        wait_until(lambda: orjson.loads((batch / "live_progress.json").read_bytes())["counts"]["processing"] == 0)
        assert invoke_cli(["stop", batch.name]).returncode == 0
        assert engine.wait(timeout=30) == 130
    finally:
        if engine.poll() is None:
            engine.kill()
    after = starts(log)
    assert len(after) <= before + workers, (before, after)
    assert len(after) == len(set(after))
    started = {r[0] for r in rows(batch, "SELECT DISTINCT seq FROM attempts")}
    assert started == set(after)  # every start is an attempt the engine recorded: no orphan


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_rate_halt_overshoots_by_at_most_the_running_items(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    workers: int,
) -> None:
    """Issue 14.4: the halt is decided as failures arrive; queued items never start after it."""
    log = tmp_path / "runs.log"
    proc = invoke_cli(
        [
            "run",
            str(lines_file(tmp_path, 400)),
            "--cmd",
            f"echo {{seq}} >> {log}; exit 3",
            "--max-failure-rate",
            "0.5",
            "--min-items",
            "10",
            "-j",
            str(workers),
            "--headless",
        ],
        timeout=120,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    batch = only_batch(out_dir)
    ran = starts(log)
    assert 10 <= len(ran) <= 10 + workers, len(ran)
    (failed,) = rows(batch, "SELECT count(*) FROM items WHERE status='failed'")[0]
    assert failed == len(ran)
    assert "after 10 items" in orjson.loads((batch / "manifest.json").read_bytes())["halt_reason"]


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_base_exceptions_fail_their_item_only(tmp_path: Path, out_dir: Path, run_cli, executor: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 14.5: SystemExit, KeyboardInterrupt and an exception whose __str__ raises fail
    their item with its real type; the batch goes on to its end; nothing leaks to stderr."""
    log = tmp_path / "runs.log"
    proc = run_cli(
        [
            "run",
            str(lines_file(tmp_path, 10)),
            "--call",
            f"{PROCS}:base_exceptions",
            "--executor",
            executor,
            "-j",
            "2",
            "--headless",
        ],
        env={"BTUI_TEST_EXEC_LOG": str(log)},
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    batch = only_batch(out_dir)
    failed = rows(
        batch, "SELECT seq, error_type, error_category, attempts FROM items WHERE status='failed' ORDER BY seq"
    )
    assert [(s, t, a) for s, t, _c, a in failed] == [
        (3, "SystemExit", 1),
        (5, "KeyboardInterrupt", 1),
        (7, "_BadStr", 1),
    ]
    assert rows(batch, "SELECT count(*) FROM items WHERE status='complete'") == [(7,)]
    assert collections.Counter(starts(log)) == dict.fromkeys(range(10), 1)


def test_process_executor_skip_touches_no_chunk_mate(tmp_path: Path, out_dir: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """Issue 14.10: skipping the running item of a pool worker's chunk kills that item only;
    queued chunk-mates skipped with it never start; the others run once and complete."""
    log = tmp_path / "runs.log"
    engine = start_engine(
        tmp_path,
        out_dir,
        [str(lines_file(tmp_path, 600)), "--call", f"{PROCS}:slow_one", "--executor", "process", "-j", "1"],
        env={"BTUI_TEST_EXEC_LOG": str(log), "BTUI_TEST_SLOW_SEQ": "300"},
    )
    try:
        wait_until(lambda: 300 in starts(log), timeout=30)
        batch = only_batch(out_dir)
        # 1 ms items go to the worker in chunks: 301 and 302 wait behind 300 in its chunk.
        assert 301 not in starts(log)
        skipped = run_cli(["skip", batch.name, "300", "301", "302"])
        assert skipped.returncode == 0, skipped.stderr
        assert engine.wait(timeout=60) == 1
    finally:
        if engine.poll() is None:
            engine.kill()
    ran = collections.Counter(starts(log))
    assert ran == {seq: 1 for seq in range(600) if seq not in (301, 302)}
    status = dict(rows(batch, "SELECT seq, status FROM items"))
    assert {seq for seq, st in status.items() if st != "complete"} == {300, 301, 302}
    assert {status[300], status[301], status[302]} == {"skipped"}
    assert rows(batch, "SELECT count(*) FROM attempts WHERE status='failed'") == [(0,)]


def test_a_call_that_outlives_the_grace_keeps_the_batch_locked_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python call on a thread cannot be killed: after the grace it goes back to pending, and
    the batch stays locked while this process (where it still runs) lives, so no other engine
    runs it at the same time."""
    from batchtui.engine.batchdir import BatchLock, BatchLocked
    from batchtui.engine.config import BatchConfig
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import python_spec
    from batchtui.engine.runner import BatchRunner
    from batchtui.engine.sources import build_spec

    release = tmp_path / "release"
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    monkeypatch.setenv("BTUI_TEST_EXEC_LOG", str(tmp_path / "runs.log"))
    items = lines_file(tmp_path, 3)
    config = BatchConfig(output_dir=str(tmp_path / "out"), workers=1, executor="thread", grace=0.0)
    batch = create_batch(config, build_spec([str(items)]), python_spec(f"{PROCS}:wait_for_file"))
    runner = BatchRunner(batch)
    runner.on_progress = lambda live: runner.request_stop("test") if live.counts.running else None
    try:
        result = runner.run()
        assert result.state.value == "stopped" and starts(tmp_path / "runs.log") == [0]
        assert rows(batch.path, "SELECT status FROM items WHERE seq=0") == [("pending",)]
        # No engine died: the next one must not count the call it gave up on (engine/inflight.py).
        assert not (batch.path / "inflight").exists()
        with pytest.raises(BatchLocked):
            BatchLock(batch.lock).acquire(wait=0.2)
    finally:
        release.touch()
        runner.lock.release()
    BatchLock(batch.lock).acquire(wait=0.2)  # free once its holder let go


def test_an_executor_shut_down_starts_nothing_it_still_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run is over (a full disk, the end of a stop): work still queued in the executor
    never starts, even while its workers finish what they were running."""
    import queue

    from batchtui.engine.config import BatchConfig
    from batchtui.engine.executors import ThreadExecutor
    from batchtui.engine.processors import Item, python_spec

    release, log = tmp_path / "release", tmp_path / "runs.log"
    monkeypatch.setenv("BTUI_TEST_RELEASE", str(release))
    monkeypatch.setenv("BTUI_TEST_EXEC_LOG", str(log))
    completions: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ex = ThreadExecutor(python_spec(f"{PROCS}:wait_for_file"), BatchConfig(workers=1), completions)
    ex.start()
    for seq in range(3):
        ex.submit([Item(seq, f"k{seq}", f"v{seq}", 1, str(tmp_path))])
    wait_until(lambda: starts(log) == [0])
    ex.shutdown(wait=0.1)
    release.touch()
    for thread in ex.threads:
        thread.join(5)
    assert starts(log) == [0]
    assert [o.seq for o in completions.get(timeout=1)] == [0]


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_an_item_skipped_while_running_ends_skipped_not_failed(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    executor: str,
) -> None:
    """A skip of a running command kills it (signal 9 to its group); the item ends `skipped`
    ("skipped while running", its attempt too), never `failed` with `signal 9`."""
    log = tmp_path / "runs.log"
    gate = tmp_path / "never"
    cmd = f"echo {{seq}} >> {log}; [ {{seq}} != 2 ] || while [ ! -e {gate} ]; do sleep 0.05; done"
    engine = start_engine(
        tmp_path, out_dir, [str(lines_file(tmp_path, 5)), "--cmd", cmd, "--executor", executor, "-j", "2"]
    )
    try:
        wait_until(lambda: 2 in starts(log), timeout=30, what="item 2 running")
        batch = only_batch(out_dir)
        skipped = invoke_cli(["skip", batch.name, "2"])
        assert skipped.returncode == 0, skipped.stderr
        assert engine.wait(timeout=60) == 1, engine.stderr.read() if engine.stderr else ""  # 1: some skipped
    finally:
        if engine.poll() is None:
            engine.kill()
    assert collections.Counter(starts(log)) == dict.fromkeys(range(5), 1)
    assert rows(batch, "SELECT seq, status, error_type, error_message FROM items WHERE status != 'complete'") == [
        (2, "skipped", None, "skipped while running")
    ]
    assert rows(batch, "SELECT seq, attempt, status, error_type FROM attempts WHERE seq = 2") == [
        (2, 1, "skipped", None)
    ]
    assert rows(batch, "SELECT count(*) FROM items WHERE status = 'complete'") == [(4,)]
    # Its row says when that run began and how long it ran, as its attempt row does (it had no
    # duration: the views showed an item that never ran); the try is not counted, as for a stop.
    (row,) = rows(batch, "SELECT attempts, started_at, duration_s FROM items WHERE seq = 2")
    (tried,) = rows(batch, "SELECT started_at, duration_s FROM attempts WHERE seq = 2")
    assert row == (0, *tried) and isinstance(row[2], float) and row[2] > 0


def test_run_first_puts_the_items_before_work_already_handed_out(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """`+` (prioritize) moved items to the front of the store's queue, but the work already
    handed out to the executor and not started went first: an operator saw #291 start 19 s
    and about 39 items later. That work is taken back now, so the items run next."""
    log = tmp_path / "runs.log"
    engine = start_engine(
        tmp_path,
        out_dir,
        [str(lines_file(tmp_path, 40)), "--cmd", f"echo {{seq}} >> {log}; sleep 0.3", "--workers", "1"],
    )
    try:
        wait_until(lambda: starts(log) == [0])
        batch = only_batch(out_dir)
        done = invoke_cli(["prioritize", batch.name, "30", "35"])
        assert done.returncode == 0, done.stderr
        before_ack = set(starts(log))  # a superset of what had started when the engine applied it
        wait_until(lambda: {30, 35} <= set(starts(log)), 60)
    finally:
        engine.kill()
        engine.wait(timeout=30)
    order = starts(log)
    first = min(order.index(30), order.index(35))
    assert set(order[:first]) <= before_ack, order  # nothing handed out earlier started before them
    assert sorted(order[first : first + 2]) == [30, 35], order


def test_a_lock_file_deleted_under_a_running_engine_lets_no_second_engine_in(tmp_path: Path, out_dir: Path) -> None:
    """`rm BATCH/lock` (a "stale lock" cleared by hand) while an engine ran, then `resume`: two
    engines ran the batch, 582 starts for 300 items. The batch's folder is locked too now."""
    log, go = tmp_path / "runs.log", tmp_path / "go"
    # Each item waits for `go`: the engine is still running when the second one tries (on a
    # loaded machine the resume's start-up outlasted a batch of short items).
    cmd = f"echo {{seq}} >> {log}; while [ ! -e {go} ]; do sleep 0.02; done"
    engine = start_engine(tmp_path, out_dir, [str(lines_file(tmp_path, 20)), "--cmd", cmd, "--workers", "2"])
    try:
        wait_until(lambda: len(starts(log)) >= 2)
        batch = only_batch(out_dir)
        (batch / "lock").unlink()
        second = subprocess.run(
            [*CLI, "resume", batch.name, "--headless"],
            env=cli_env(out_dir), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        go.touch()
        assert second.returncode == 2, second.stderr
        assert "is being run by" in second.stderr, second.stderr
        assert engine.wait(timeout=60) == 0
    finally:
        if engine.poll() is None:
            engine.kill()
    assert sorted(starts(log)) == list(range(20))  # each once
    assert logged_seqs(batch) == list(range(20))


def test_a_skip_of_the_pending_items_skips_those_queued_too(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """`skip --status pending`: the items handed out and not started (the store said
    'processing') were left out, and started after the skip was answered."""
    log = tmp_path / "runs.log"
    engine = start_engine(
        tmp_path,
        out_dir,
        [str(lines_file(tmp_path, 12)), "--cmd", f"echo {{seq}} >> {log}; sleep 0.7", "--workers", "1"],
    )
    try:
        wait_until(lambda: starts(log) == [0])
        batch = only_batch(out_dir)

        def queued() -> int:
            live = BatchDir(batch).read_live()
            return 0 if live is None else live.counts.queued

        wait_until(lambda: queued() > 0)  # the window holds items handed out, not started
        skipped = invoke_cli(["skip", batch.name, "--status", "pending"])
        assert skipped.returncode == 0, skipped.stderr
        ran_by_then = starts(log)
        assert engine.wait(timeout=60) == 1  # some skipped
    finally:
        if engine.poll() is None:
            engine.kill()
    assert starts(log) == ran_by_then  # nothing started after the skip was answered
    # What had started ran to its end (not pending: the skip did not take it); every other item
    # is skipped, none with an attempt.
    assert complete_seqs(batch) == sorted(ran_by_then), rows(
        batch, "SELECT seq, status, attempts, error_message FROM items"
    )
    skipped_rows = rows(batch, "SELECT seq, attempts FROM items WHERE status='skipped' ORDER BY seq")
    assert skipped_rows == [(seq, 0) for seq in range(12) if seq not in ran_by_then]
