"""No room to start: a command, a worker thread or the control watcher's threads that the system
will not let start (engine/errors.py NoRoomToStart, engine/tasklimit.py).

Measured before the change, by hand: under a container-style pids limit (cgroup ``pids.max``
12) all 200 items of a run were failed in 0 s with ``BlockingIOError [item] [Errno 11]
Resource temporarily unavailable: '/bin/sh'`` though none had run; at 16 the process died of
SIGABRT (watchfiles' Rust watcher panicked when it could not start its threads); at 9 the run
ended with a traceback ("can't start new thread"); under ``ulimit -n 100`` with 32 workers,
items failed with "Too many open files" before their command started. Now an item whose
command cannot start goes back to pending (no attempt counted) and starts when there is room,
the run goes on with the workers that could start, the watcher is not started near the limit,
and what cannot start at all is said in one line.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchtui.engine import tasklimit
from batchtui.engine.attempts import Outcome, RoomWait
from batchtui.engine.config import BatchConfig
from batchtui.engine.errors import NoRoomToStart
from batchtui.engine.executors import ThreadExecutor, WorkerInitError
from batchtui.engine.models import BatchState, LiveProgress
from batchtui.engine.processors import shell_spec
from batchtui.tui.cli.progress import progress_line

from .conftest import CLI, cli_env, only_batch, read_json

_PIDS = Path("/sys/fs/cgroup/pids")


def _attempts(batch: Path) -> tuple[list[tuple[str, int, int]], int]:
    """(status, most attempts, items) by status, and the rows of the attempts table."""
    with sqlite3.connect(batch / "items.db") as db:
        by_status = db.execute("SELECT status, max(attempts), count(*) FROM items GROUP BY status").fetchall()
        rows = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
    return by_status, rows


def _items(tmp_path: Path, n: int) -> Path:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(n)))
    return items


def test_commands_that_cannot_start_for_lack_of_descriptors_run_later(tmp_path: Path, out_dir: Path) -> None:
    """``ulimit -n 100`` (hard too) and 32 workers: about 7 fit. The rest wait, none fails."""
    run = [*CLI, "run", str(_items(tmp_path, 300)), "--cmd", "sleep 0.05", "--workers", "32", "--headless"]
    done = subprocess.run(
        ["sh", "-c", 'ulimit -n 100; exec "$@"', "sh", *run],
        env=cli_env(out_dir),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "cannot start commands: Too many open files (no room under this process's limit on open files: ulimit -n)"
        in done.stderr
    )
    # Every item ran once: none was failed, and no attempt was counted for a start refused.
    assert _attempts(only_batch(out_dir)) == ([("complete", 1, 300)], 300)


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A cgroup v1 pids group of this test's own (root and the pids controller needed)."""
    if not os.access(_PIDS, os.W_OK):
        pytest.skip("needs a writable cgroup v1 pids controller (root)")
    group = _PIDS / f"batchtui-test-{os.getpid()}-{threading.get_ident()}"
    group.mkdir()
    try:
        yield group
    finally:
        for _ in range(100):
            try:
                group.rmdir()
                break
            except OSError:  # its last process is still exiting
                threading.Event().wait(0.05)


def _run_in(
    group: Path, limit: int, args: list[str], tmp_path: Path, out_dir: Path
) -> subprocess.CompletedProcess[str]:
    (group / "pids.max").write_text(str(limit))
    return subprocess.run(
        ["sh", "-c", f'echo $$ > {group / "cgroup.procs"}; exec "$@"', "sh", *CLI, *args],
        env=cli_env(out_dir),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_pids_limit_slows_the_run_and_fails_nothing(pids_cgroup: Path, tmp_path: Path, out_dir: Path) -> None:
    """pids.max 16 with 8 workers: the engine's threads take most of it, a few commands fit at a
    time. Before: every start refused failed its item, and the control watcher (watchfiles)
    aborted the process once it could not start its threads."""
    items = str(_items(tmp_path, 200))
    done = _run_in(
        pids_cgroup, 16, ["run", items, "--cmd", "exec sleep 0.02", "-j", "8", "--headless"], tmp_path, out_dir
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert (
        "cannot start commands: Resource temporarily unavailable (no room under the limit on processes" in done.stderr
    )
    assert "panicked" not in done.stderr
    assert _attempts(only_batch(out_dir)) == ([("complete", 1, 200)], 200)
    report = read_json(only_batch(out_dir) / "report.json")
    assert report["totals"]["failed"] == 0  # type: ignore[index]


@pytest.mark.parametrize("limit", [3])
def test_no_thread_at_all_is_one_line_and_the_batch_is_resumable(
    limit: int, pids_cgroup: Path, tmp_path: Path, out_dir: Path
) -> None:
    """So tight that the engine's own threads cannot start: one `error:` line, exit 2, no
    traceback (it was "RuntimeError: can't start new thread"); nothing ran, and the batch
    resumes where there is room. (How many of its workers start at a limit a little higher
    varies with the threads of the moment: that case is test_workers_that_cannot_start_...)"""
    items = str(_items(tmp_path, 20))
    done = _run_in(pids_cgroup, limit, ["run", items, "--cmd", "exec true", "-j", "8", "--headless"], tmp_path, out_dir)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "the limit on processes is reached: ulimit -u" in last, last
    batch = only_batch(out_dir)
    assert _attempts(batch) == ([("pending", 0, 20)], 0)
    resumed = subprocess.run(
        [*CLI, "resume", batch.name, "--headless"],
        check=False,
        env=cli_env(out_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _attempts(batch) == ([("complete", 1, 20)], 20)


def test_no_room_to_start_is_what_the_system_lacks_not_the_item() -> None:
    for code, lacks in ((11, "processes"), (12, "memory"), (24, "this process's limit on open files")):
        room = NoRoomToStart.of(OSError(code, os.strerror(code)))
        assert room is not None and lacks in str(room), (code, room)
    assert NoRoomToStart.of(OSError(2, "No such file or directory")) is None  # the command's own
    assert NoRoomToStart.of(OSError(7, "Argument list too long")) is None  # the item's values
    assert NoRoomToStart.of(ValueError("x")) is None


def test_a_worker_waits_longer_while_starts_are_refused_and_not_once_one_is_not() -> None:
    wait = RoomWait()
    refused = [Outcome(1, 1, 0.0, 0.0, returned=True, refused="cannot start commands: x")]
    ran = [Outcome(2, 1, 0.0, 0.1)]
    delays = []
    for _ in range(8):
        wait.saw(refused)
        delays.append(wait.after_chunk())
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    wait.saw(ran)
    assert wait.after_chunk() == 0.0
    # Handed back for another reason (a stop, a cancel): no wait.
    wait.saw([Outcome(3, 1, 0.0, 0.0, returned=True)])
    assert wait.after_chunk() == 0.0


def test_workers_that_cannot_start_leave_a_smaller_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith("batchtui-worker-") and len(started) >= 3:
            raise RuntimeError("can't start new thread")
        if self.name.startswith("batchtui-worker-"):
            started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    ex = ThreadExecutor(shell_spec("true"), BatchConfig(workers=5), queue.SimpleQueue())
    try:
        ex.start()
        assert ex.workers == 3
        assert ex.shortfall is not None and ex.shortfall.startswith("3 of 5 workers started: cannot start a thread")
        ex.set_workers(2)
        assert ex.shortfall is None  # asked fewer: as asked
    finally:
        ex.shutdown()
    # The three are taken: no room for a single one more.
    lone = ThreadExecutor(shell_spec("true"), BatchConfig(workers=2), queue.SimpleQueue())
    with pytest.raises(WorkerInitError, match="0 of 2 workers started"):
        lone.set_workers(2)


def _fake_cgroups(tmp_path: Path, lines: str, groups: dict[str, tuple[str, int]]) -> Path:
    """A /proc/self/cgroup of ``lines`` and pids groups (path under the fake root -> max, current)."""
    for rel, (limit, current) in groups.items():
        where = tmp_path / rel
        where.mkdir(parents=True, exist_ok=True)
        (where / "pids.max").write_text(f"{limit}\n")
        (where / "pids.current").write_text(f"{current}\n")
    proc = tmp_path / "cgroup"
    proc.write_text(lines)
    return proc


def test_room_is_the_least_of_every_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasklimit, "_V1_ROOT", str(tmp_path / "v1"))
    monkeypatch.setattr(tasklimit, "_V2_ROOTS", (str(tmp_path / "v2"), str(tmp_path / "v2" / "unified")))
    proc = _fake_cgroups(
        tmp_path,
        "9:name=systemd:/\n8:pids:/docker/abc\n0::/\n",
        {"v1": ("max", 300), "v1/docker": ("100", 90), "v1/docker/abc": ("50", 20)},
    )
    assert tasklimit.room(str(proc)) == 10  # the parent's 100 - 90, under its child's 50 - 20
    proc = _fake_cgroups(tmp_path, "0::/user.slice/u\n", {"v2/user.slice/u": ("4096", 96)})
    assert tasklimit.room(str(proc)) == 4000  # cgroup v2
    proc = _fake_cgroups(tmp_path, "8:pids:/x\n0::/y\n", {"v1/x": ("max", 5), "v2/unified/y": ("30", 28)})
    assert tasklimit.room(str(proc)) == 2  # a hybrid system's v2 tree
    proc = _fake_cgroups(tmp_path, "8:pids:/free\n", {"v1/free": ("max", 7)})
    assert tasklimit.room(str(proc)) is None  # no level sets a limit
    assert tasklimit.room(str(tmp_path / "nowhere")) is None


def test_the_progress_line_says_commands_wait_for_room() -> None:
    base = LiveProgress(batch_id="b", state=BatchState.RUNNING, updated_at="2026-01-01T00:00:00", total=10)
    held = base.model_copy(update={"start_hold": "cannot start commands: x: 3 starts refused since 09:00:00"})
    assert progress_line(held).endswith(" | commands cannot start: waiting for room")
    assert "waiting for room" not in progress_line(base)
