"""An item that kills the engine is known to the next one (engine/inflight.py): its attempts
count, it fails at --max-attempts, and the batch gets past it instead of dying at every resume."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from batchtui.engine.inflight import NAME, SLOTS, InflightFile, left_by_dead_engine

from .conftest import CLI, cli_env, only_batch, read_live, wait_until

PROCS = Path(__file__).with_name("procs.py")


def _rows(batch: Path) -> dict[int, tuple[str, int, str | None]]:
    db = sqlite3.connect(batch / "items.db")
    try:
        return {s: (st, a, et) for s, st, a, et in db.execute("SELECT seq, status, attempts, error_type FROM items")}
    finally:
        db.close()


def _attempts(batch: Path, seq: int) -> list[tuple[int, str, str | None]]:
    db = sqlite3.connect(batch / "items.db")
    try:
        return list(db.execute("SELECT attempt, status, error_type FROM attempts WHERE seq=? ORDER BY attempt", (seq,)))
    finally:
        db.close()


# -- the file ----------------------------------------------------------------------------------


def test_a_slot_set_and_not_cleared_is_what_the_next_engine_reads(tmp_path: Path) -> None:
    marks = InflightFile(tmp_path)
    assert (tmp_path / NAME).stat().st_mode & 0o777 == 0o600  # as every file of a batch
    a, b = marks.take(), marks.take()
    assert a is not None and b is not None
    a.set(7, 2, 1_700_000_000.5)
    b.set(9, 1, 1_700_000_001.0)
    b.clear()  # ended: not news to anyone
    # What the page cache holds is what a reader sees, with this process alive or not.
    assert left_by_dead_engine(tmp_path) == [(7, 2, 1_700_000_000.5)]
    marks.give_back(a)  # a thread that ends clears its slot
    assert left_by_dead_engine(tmp_path) == []


def test_a_clean_close_removes_the_file_and_an_abandoned_one_keeps_it(tmp_path: Path) -> None:
    marks = InflightFile(tmp_path)
    slot = marks.take()
    assert slot is not None
    slot.set(3, 1, 0.0)
    marks.close(forget=False)
    assert left_by_dead_engine(tmp_path) == [(3, 1, 0.0)]
    again = InflightFile(tmp_path)  # the next engine's, made after it read the old one
    assert left_by_dead_engine(tmp_path) == []
    again.close(forget=True)
    assert not (tmp_path / NAME).exists()


def test_slots_run_out_without_failing_and_come_back(tmp_path: Path) -> None:
    marks = InflightFile(tmp_path)
    taken = [marks.take() for _ in range(SLOTS)]
    assert all(s is not None for s in taken)
    assert marks.take() is None  # that thread's items go unmarked; the run goes on
    marks.give_back(taken[0])
    assert marks.take() is not None


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01" * 5, b"\xff" * 64, random.Random(7).randbytes(4096), (0).to_bytes(8, "little") * 3 + b"junk"],
    ids=["empty", "short", "all-ones", "random", "zeros-and-junk"],
)
def test_a_damaged_file_yields_no_garbage(tmp_path: Path, content: bytes) -> None:
    (tmp_path / NAME).write_bytes(content)
    assert left_by_dead_engine(tmp_path) == []  # none of these is anything an engine writes


def test_a_link_in_its_place_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / NAME).symlink_to(target)
    assert left_by_dead_engine(tmp_path / "batch") == []
    with pytest.raises(OSError):
        InflightFile(tmp_path / "batch")
    assert target.read_bytes() == b"keep"


# -- end to end --------------------------------------------------------------------------------


def test_an_item_that_kills_the_engine_fails_at_max_attempts_and_the_batch_goes_on(
    tmp_path: Path, out_dir: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    lines = tmp_path / "items.txt"
    lines.write_text("".join(f"k{i}\n" for i in range(6)))
    exec_log = tmp_path / "exec.log"
    env = {"BTUI_TEST_POISON": "k2", "BTUI_TEST_EXEC_LOG": str(exec_log)}
    args = ["--call", f"{PROCS}:poison", "--executor", "thread", "-j", "1", "--max-attempts", "2", "--headless"]
    first = run_cli(["run", str(lines), *args], env=env)
    assert first.returncode == 9, first.stderr  # the item's os._exit(9) ended the engine
    batch = only_batch(out_dir)
    assert (batch / NAME).exists()

    second = run_cli(["resume", batch.name, "--headless"], env=env)
    assert second.returncode == 9, second.stderr  # it ran again, and took this engine down too
    assert "the last engine died while 1 item ran: #2 (attempt 1);" in second.stderr
    assert _rows(batch)[2][:2] in {("pending", 1), ("processing", 1)}

    third = run_cli(["resume", batch.name, "--headless"], env=env)
    assert "#2 (failed: it was running, alone, at 2 engine deaths)" in third.stderr, third.stderr
    assert third.returncode == 1, third.stderr  # some failed: the poison item
    rows = _rows(batch)
    assert rows[2] == ("failed", 2, "WorkerLost")
    assert all(rows[s][0] == "complete" for s in rows if s != 2), rows
    assert _attempts(batch, 2) == [(1, "failed", "WorkerLost"), (2, "failed", "WorkerLost")]
    # Ran twice, as --max-attempts 2 allows, and never again.
    starts = [line.split() for line in exec_log.read_text().splitlines()]
    assert [a for s, a in starts if s == "2"] == ["1", "2"]
    assert not (batch / NAME).exists()  # the engine that finished left nothing behind
    errors = run_cli(["errors", batch.name, "--json"])
    assert "the engine died while this item ran" in errors.stdout


def test_a_kill_9_counts_the_attempt_that_was_running(tmp_path: Path, out_dir: Path) -> None:
    """The engine is killed -9 while a shell item runs: that attempt began, so the next engine
    counts it (WorkerLost, retried) and the item completes as attempt 2."""
    flag = tmp_path / "started"
    lines = tmp_path / "items.txt"
    lines.write_text("only\n")
    # The first run of the command notes its start and sleeps; the next one ends at once.
    cmd = f"test -e {flag} && exit 0; touch {flag}; sleep 60"
    env = cli_env(out_dir)
    proc = subprocess.Popen(
        [*CLI, "run", str(lines), "--cmd", cmd, "--headless"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(flag.exists, 60, "the command's start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    batch = only_batch(out_dir)
    assert [(s, a) for s, a, _ in left_by_dead_engine(batch)] == [(0, 1)]
    resumed = subprocess.run(
        [*CLI, "resume", batch.name, "--headless"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "#0 (attempt 1);" in resumed.stderr and "runs again first" not in resumed.stderr
    assert _rows(batch)[0] == ("complete", 2, None)
    assert [a[:2] for a in _attempts(batch, 0)] == [(1, "failed"), (2, "complete")]


def test_a_run_that_ends_counts_nothing_more(
    tmp_path: Path, out_dir: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    lines = tmp_path / "items.txt"
    lines.write_text("".join(f"k{i}\n" for i in range(20)))
    done = run_cli(["run", str(lines), "--cmd", "true", "--headless"])
    assert done.returncode == 0, done.stderr
    batch = only_batch(out_dir)
    assert not (batch / NAME).exists()
    assert {a for _s, a, _e in _rows(batch).values()} == {1}


def test_the_items_in_flight_at_a_death_run_again_alone_so_the_innocent_ones_go_free(
    tmp_path: Path, out_dir: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """Two workers: the poison item dies half-way while the other worker's item runs, at every
    death. Only an item that dies alone is known to be the cause: items running at two deaths run
    again one at a time, the poison one dies alone and fails (--max-attempts 2), and every item
    that ran beside it completes, however many of its attempts a death cut off."""
    lines = tmp_path / "items.txt"
    lines.write_text("".join(f"k{i}\n" for i in range(8)))
    env = {"BTUI_TEST_POISON": "k2", "BTUI_TEST_SLEEP": "0.5"}
    args = ["--call", f"{PROCS}:poison", "--executor", "thread", "-j", "2", "--max-attempts", "2", "--headless"]
    done = run_cli(["run", str(lines), *args], env=env)
    assert done.returncode == 9, done.stderr
    batch = only_batch(out_dir)
    in_flight = [seq for seq, _attempt, _at in left_by_dead_engine(batch)]
    assert 2 in in_flight and len(in_flight) == 2, in_flight  # the other worker was busy: 0.5 s items
    beside: set[int] = set(in_flight) - {2}
    for _ in range(6):
        done = run_cli(["resume", batch.name, "--headless"], env=env)
        if done.returncode != 9:
            break
        beside |= {seq for seq, _a, _at in left_by_dead_engine(batch)} - {2}
    assert "#2 (failed: it was running, alone, at " in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    rows = _rows(batch)
    assert rows[2][0::2] == ("failed", "WorkerLost")
    assert beside and all(rows[s][0] == "complete" for s in beside), (beside, rows)
    assert all(rows[s][0] == "complete" for s in rows if s != 2), rows


def test_one_death_never_fails_an_item_even_at_max_attempts_1(
    tmp_path: Path, out_dir: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """--max-attempts 1, and the engine dies (a kill -9 of an operator looks the same): the item
    then running is not failed for it, it runs again; running at a second death, it fails."""
    lines = tmp_path / "items.txt"
    lines.write_text("k0\nk1\nk2\n")
    env = {"BTUI_TEST_POISON": "k1"}
    args = ["--call", f"{PROCS}:poison", "--executor", "thread", "-j", "1", "--max-attempts", "1", "--headless"]
    assert run_cli(["run", str(lines), *args], env=env).returncode == 9
    batch = only_batch(out_dir)
    second = run_cli(["resume", batch.name, "--headless"], env=env)
    assert second.returncode == 9 and "#1 (attempt 1);" in second.stderr, second.stderr
    third = run_cli(["resume", batch.name, "--headless"], env=env)
    assert "#1 (failed: it was running, alone, at 2 engine deaths)" in third.stderr, third.stderr
    assert third.returncode == 1, third.stderr
    rows = _rows(batch)
    assert rows[1] == ("failed", 2, "WorkerLost")
    assert rows[0][0] == rows[2][0] == "complete"


def test_a_suspect_skipped_before_it_runs_lets_the_run_go_on_side_by_side(tmp_path: Path, out_dir: Path) -> None:
    """Two items running at two deaths run again one at a time; the operator skips the one
    waiting its turn: no outcome will come for it, so once the other ends the run goes back to two
    at a time."""
    lines = tmp_path / "items.txt"
    lines.write_text("".join(f"k{i}\n" for i in range(6)))
    env = cli_env(out_dir)

    def engine(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*CLI, *args, "--headless"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "stderr.txt").open("ab"),
            start_new_session=True,
        )

    def running(batch: Path) -> list[int]:  # started or handed out
        live = read_live(batch)
        return sorted(int(f["seq"]) for f in live["in_flight"])  # type: ignore[attr-defined]

    def kill_when_two_run(proc: subprocess.Popen[bytes], attempt: int) -> Path:
        wait_until(lambda: out_dir.is_dir() and any(out_dir.iterdir()), 30, "the batch")
        batch = only_batch(out_dir)
        wait_until(
            lambda: [a for _s, a, _at in left_by_dead_engine(batch)] == [attempt, attempt],
            30,
            f"two items running their attempt {attempt}",
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return batch

    # Each item runs until its own go-file is there (or a minute has passed).
    go = tmp_path / "go"
    go.mkdir()
    cmd = f'i=0; while [ ! -e {go}/"$BATCHTUI_SEQ" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done'
    batch = kill_when_two_run(engine("run", str(lines), "--cmd", cmd, "-j", "2"), 1)
    first = sorted(seq for seq, _a, _at in left_by_dead_engine(batch))
    # The resume runs them again side by side (one death is no item's fault), and dies too.
    batch = kill_when_two_run(engine("resume", batch.name), 2)
    assert sorted(seq for seq, _a, _at in left_by_dead_engine(batch)) == first
    proc = engine("resume", batch.name)
    try:
        wait_until(lambda: running(batch) == [first[0]], 30, "the first suspect alone")
        assert running(batch) == [first[0]]  # (the other waits for its outcome)
        skipped = subprocess.run(
            [*CLI, "skip", batch.name, str(first[1])], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert skipped.returncode == 0, skipped.stderr
        (go / str(first[0])).touch()  # the suspect that runs ends: no other is left to wait for
        wait_until(lambda: len(running(batch)) >= 2, 30, "items side by side again")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_chunk_that_kills_the_engine_is_narrowed_down_to_its_item(
    tmp_path: Path, out_dir: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """--chunk-size 4: a death charges the whole chunk; at their second death its items run
    again one at a time (chunks of one), so the poison item dies alone and fails, and the
    chunk's other items complete."""
    lines = tmp_path / "items.txt"
    lines.write_text("".join(f"k{i}\n" for i in range(8)))
    exec_log = tmp_path / "exec.log"
    env = {"BTUI_TEST_POISON": "k2", "BTUI_TEST_EXEC_LOG": str(exec_log)}
    args = ["--call", f"{PROCS}:poison_chunk", "--chunk-size", "4", "--executor", "thread", "-j", "1"]
    done = run_cli(["run", str(lines), *args, "--max-attempts", "2", "--headless"], env=env)
    assert done.returncode == 9, done.stderr
    batch = only_batch(out_dir)
    assert [seq for seq, _a, _at in left_by_dead_engine(batch)] == [0, 1, 2, 3]  # the chunk, all noted
    for _ in range(8):
        done = run_cli(["resume", batch.name, "--headless"], env=env)
        if done.returncode != 9:
            break
    assert "#2 (failed: it was running, alone, at " in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    rows = _rows(batch)
    assert rows[2][0::2] == ("failed", "WorkerLost")
    assert all(rows[s][0] == "complete" for s in rows if s != 2), rows
