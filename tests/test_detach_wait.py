"""``--detach`` returns once its engine holds the batch, so that a ``stop`` sent right after it
reaches that engine. An engine that took longer than the wait (15 s, on a loaded machine) was
announced as running all the same: a stop sent then found no engine (exit 2), and the engine
took the batch a moment later and ran it to its end. Now the CLI waits longer, says that it
waits, and says so plainly (exit 1) if the engine still has not taken the batch."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock, engine_alive
from batchtui.tui.cli import summary
from batchtui.tui.launch import EngineNotReady, detach_engine

from .conftest import only_batch, wait_until


def _manifest(batch: Path) -> dict[str, object]:
    data = orjson.loads((batch / "manifest.json").read_bytes())
    assert isinstance(data, dict)
    return data


def _slow_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every engine this test starts in the background spends ``seconds`` starting up (a
    ``sitecustomize`` on its path that sleeps when it is a background engine)."""
    site = tmp_path / "slow-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f'import sys, time\nif "--engine-action" in sys.argv:\n    time.sleep({seconds})\n'
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


def test_run_detach_says_when_its_engine_has_not_taken_the_batch_yet(
    tmp_path: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    invoke_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    _slow_engines(tmp_path, monkeypatch, 6.0)
    monkeypatch.setattr(summary, "DETACH_WAIT_S", 2.0)
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")

    t0 = time.monotonic()
    done = invoke_cli(["run", str(items), "--cmd", "true", "--detach"])
    waited = time.monotonic() - t0
    assert done.returncode == 1, done.stdout + done.stderr
    assert waited >= 2.0
    assert "waiting for the background engine (pid " in done.stderr
    assert (
        "has not taken batch " in done.stderr
        and "after 2 s and is still starting: a stop or pause sent now waits for it" in done.stderr
    )
    assert "engine running in the background" not in done.stdout  # no promise it cannot keep
    assert "Traceback" not in done.stderr

    # The engine was still starting: it takes the batch and runs it.
    batch = only_batch(out_dir)
    wait_until(lambda: _manifest(batch)["state"] == "finished", 60, "the slow engine finishes the batch")
    totals = _manifest(batch)["totals"]
    assert isinstance(totals, dict) and totals["complete"] == 2


def test_a_detach_that_gets_the_batch_in_time_returns_its_engine(
    tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(40)))
    done = invoke_cli(["run", str(items), "--cmd", "sleep 0.2", "-j", "1", "--detach"])
    assert done.returncode == 0, done.stderr
    assert "engine running in the background (pid " in done.stdout
    batch = only_batch(out_dir)
    holder = engine_alive(batch)
    assert holder is not None  # it holds the batch as the CLI returns: a stop reaches it
    stop = invoke_cli(["stop", batch.name])
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: _manifest(batch)["state"] == "stopped", 60, "the engine stops")


def test_detach_engine_must_hold_raises_for_an_engine_still_waiting_for_the_lock(tmp_path: Path) -> None:
    """The function itself: the engine waits for a lock this test holds (a hand-off's lock
    wait), past ``wait``; told once it is slow; the engine goes on and takes the batch later."""
    from .test_resume_pick import _stopped_batch

    out = tmp_path / "out"
    batch = _stopped_batch(tmp_path, out, "held")
    lock = BatchLock(batch / "lock")
    lock.acquire()
    told: list[int] = []
    try:
        with pytest.raises(EngineNotReady) as raised:
            detach_engine(
                BatchDir(batch),
                action="resume",
                lock_wait=30,
                wait=1.5,
                must_hold=True,
                on_slow=told.append,
                slow_after=0.3,
            )
    finally:
        lock.release()
    assert told == [raised.value.pid]
    assert raised.value.exit_code == 1
    wait_until(lambda: _manifest(batch)["state"] == "finished", 60, "the engine takes the batch once it is free")


def _background_engine(batch: Path) -> int | None:
    """The pid of the background engine for ``batch`` (it may still be starting: see
    _slow_engines), None while there is none."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--engine-action" in argv and str(batch).encode() in argv:
            return int(proc.name)
    return None


def _each_ran_once(log: Path, items: list[str]) -> None:
    assert sorted(log.read_text().split()) == sorted(items)


@pytest.mark.parametrize("verb", ["run", "resume"])
def test_no_other_engine_takes_the_batch_while_a_detached_engine_starts(
    tmp_path: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    invoke_cli: Callable[..., subprocess.CompletedProcess[str]],
    verb: str,
) -> None:
    """``run --detach`` and ``resume --detach`` hand their lock to the background engine: while
    it starts (slowed to 4 s here), a resume from another shell is refused. They used to let go
    of the batch and leave the engine to take it: the resume took it, ran its items, and the
    background engine then failed (the item runs were paid for twice over the two engines'
    race)."""
    from .conftest import CLI, cli_env

    _slow_engines(tmp_path, monkeypatch, 4.0)
    log = tmp_path / "ran.log"
    items = [f"it{i}" for i in range(6)]
    src = tmp_path / "items.txt"
    src.write_text("".join(f"{i}\n" for i in items))
    cmd = f"sleep 0.2; echo {{}} >> {log}"  # an item cut short by the stop below logs nothing
    if verb == "resume":  # a batch stopped by SIGTERM after its first item
        first = subprocess.Popen([*CLI, "run", str(src), "--cmd", cmd, "-j", "1", "--headless"], env=cli_env(out_dir))
        wait_until(log.exists, 30, "the first item")
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 130
    args = [*CLI, verb]
    args += [str(src), "--cmd", cmd] if verb == "run" else [only_batch(out_dir).name]
    detach = subprocess.Popen(
        [*args, "--detach"],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: out_dir.exists() and any(out_dir.iterdir()), 30, "the batch")
    batch = only_batch(out_dir)
    wait_until(lambda: _background_engine(batch) is not None, 30, "the background engine's process")
    engine = _background_engine(batch)
    other = invoke_cli(["resume", batch.name, "--headless"])
    assert other.returncode == 2, other.stdout + other.stderr
    # The refusal names the engine that will run the batch, not the --detach that started it
    # (which is gone once it has said so): the lock file names the engine from its start.
    assert f"is being run by pid {engine} on" in other.stderr, (engine, other.stderr)
    out, err = detach.communicate(timeout=60)
    assert detach.returncode == 0, err
    assert "engine running in the background" in out
    wait_until(lambda: _manifest(batch)["state"] == "finished", 60, "the background engine finishes")
    _each_ran_once(log, items)


def test_a_handed_over_lock_is_held_through_the_hand_over_and_adopted_only_as_itself(tmp_path: Path) -> None:
    """BatchLock.hand_over / adopt, as the parent and the child of a --detach use them (the
    child's copies of the descriptors made here with os.dup: the same open files)."""
    from batchtui.engine.batchdir import BatchLocked

    batch = tmp_path / "b"
    batch.mkdir()
    parent = BatchLock(batch / "lock")
    parent.acquire()
    fd, dir_fd = parent.descriptors()
    assert dir_fd is not None
    child_fd, child_dir_fd = os.dup(fd), os.dup(dir_fd)
    parent.hand_over()
    with pytest.raises(BatchLocked):
        BatchLock(batch / "lock").acquire(wait=0)  # never free between the two

    # Descriptors that are not this batch's lock are neither taken nor closed.
    other = tmp_path / "other"
    other.mkdir()
    stranger = BatchLock(other / "lock")
    assert stranger.adopt(child_fd, child_dir_fd) is None and not stranger.held
    assert BatchLock(batch / "lock").adopt(1, 2) is None
    os.fstat(child_fd), os.fstat(child_dir_fd), os.fstat(1)  # still open

    child = BatchLock(batch / "lock")
    info = child.adopt(child_fd, child_dir_fd)
    assert info is not None and info.pid == os.getpid() and child.held
    assert engine_alive(batch) is not None
    with pytest.raises(BatchLocked):
        BatchLock(batch / "lock").acquire(wait=0)
    child.release()
    assert engine_alive(batch) is None  # released as any lock is


@pytest.mark.parametrize("parent_first", [True, False])
def test_the_parent_and_the_child_write_the_same_holder_in_either_order(tmp_path: Path, parent_first: bool) -> None:
    """The lock file names the child from the hand-over on, with the time the batch was taken
    and the parent as ``handed_from`` (the commands sent to it are the child's), whether the
    parent writes it before the child adopts the lock or the child adopts first."""
    from batchtui.engine.batchdir import read_lock_info

    batch = tmp_path / "b"
    batch.mkdir()
    parent = BatchLock(batch / "lock")
    taken = parent.acquire()
    fd, dir_fd = parent.descriptors()
    child_fds = (os.dup(fd), None if dir_fd is None else os.dup(dir_fd))
    child = BatchLock(batch / "lock")
    expected = (os.getpid(), taken.started_at, taken.token())  # the child is this process here
    if parent_first:
        parent.hand_over(to=os.getpid())
        handed = read_lock_info(batch / "lock")
        assert handed is not None and (handed.pid, handed.started_at, handed.handed_from) == expected
        adopted = child.adopt(*child_fds)
    else:
        adopted = child.adopt(*child_fds)
        parent.hand_over(to=os.getpid())
    assert adopted is not None and (adopted.pid, adopted.started_at, adopted.handed_from) == expected
    assert read_lock_info(batch / "lock") == adopted
    child.release()


def test_a_handed_over_lock_whose_child_died_is_free(tmp_path: Path) -> None:
    batch = tmp_path / "b"
    batch.mkdir()
    parent = BatchLock(batch / "lock")
    parent.acquire()
    fd, dir_fd = parent.descriptors()
    copies = [os.dup(fd)] + ([os.dup(dir_fd)] if dir_fd is not None else [])
    parent.hand_over()
    assert engine_alive(batch) is not None
    for each in copies:  # the child died before it took them: the kernel closes its copies
        os.close(each)
    again = BatchLock(batch / "lock")
    again.acquire(wait=0)
    again.release()


def test_a_stop_sent_while_run_detach_reads_its_source_stops_the_engine_it_starts(
    tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A stop sent while ``run --detach`` still reads its source goes to that process (it holds
    the batch); the background engine it hands the batch to takes the stop as its own. It used
    to answer it as meant for an engine that had ended, and ran every item."""
    from .conftest import CLI, cli_env

    log = tmp_path / "ran.log"
    detach = subprocess.Popen(
        [*CLI, "run", "-", "--cmd", f"echo {{}} >> {log}", "-j", "1", "--detach"],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert detach.stdin is not None
    detach.stdin.write("a\nb\n")
    detach.stdin.flush()
    wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/manifest.json")), 30, "the batch")
    batch = only_batch(out_dir)
    holder = engine_alive(batch)
    assert holder is not None and holder.pid == detach.pid  # still reading stdin: it holds the batch
    stop = invoke_cli(["stop", batch.name, "--wait", "0.5"])
    assert stop.returncode == 1 and "not acknowledged" in stop.stderr, stop.stderr  # queued for the engine
    _out, err = detach.communicate("c\nd\n", timeout=60)
    assert detach.returncode == 0, err
    wait_until(lambda: _manifest(batch)["state"] in ("stopped", "finished"), 60, "the background engine's end")
    assert _manifest(batch)["state"] == "stopped"
    assert not log.exists()  # no item ran
    control = (batch / "live_progress.json").read_bytes()
    assert b"it was sent to an engine that ended" not in control
