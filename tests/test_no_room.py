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
import re
import sqlite3
import subprocess
import sys
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
from batchtui.engine.pool import ProcessExecutor
from batchtui.engine.processors import python_spec, shell_spec
from batchtui.tui.cli.progress import progress_line

from .conftest import CLI, cli_env, only_batch, read_json, wait_until

_PIDS = Path("/sys/fs/cgroup/pids")
PROCS = Path(__file__).with_name("procs.py")


def _attempts(batch: Path) -> tuple[list[tuple[str, int, int]], int]:
    """(status, most attempts, items) by status, and the rows of the attempts table."""
    with sqlite3.connect(batch / "items.db") as db:
        by_status = db.execute("SELECT status, max(attempts), count(*) FROM items GROUP BY status").fetchall()
        rows = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
    return by_status, rows


def _sh(
    script: str, argv: list[str], out_dir: Path | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` run by ``sh -c SCRIPT`` (which ends ``exec "$@"``: a ulimit, a cgroup to join)."""
    return subprocess.run(
        ["sh", "-c", script, "sh", *argv],
        env=cli_env(out_dir) if out_dir is not None else None,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _join(group: Path) -> str:
    return f'echo $$ > {group / "cgroup.procs"}; exec "$@"'


def _items(tmp_path: Path, n: int) -> Path:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(n)))
    return items


@pytest.mark.parametrize(
    ("processor", "fit"),
    [(["--cmd", "sleep 0.05"], 7), (["--call", f"{PROCS}:noop", "--executor", "process"], 9)],
    ids=["shell", "process"],
)
def test_workers_fit_a_low_limit_on_open_files(processor: list[str], fit: int, tmp_path: Path, out_dir: Path) -> None:
    """``ulimit -n 100`` (hard too) and 32 workers asked: a running shell item holds up to five
    descriptors in the engine (a pool worker four), so 7 (9) fit beside the engine's own.
    Before, all 32 started: shell items failed with "Too many open files" before their command
    started, and once (a CI run) the engine's own write of live_progress.json met EMFILE and it
    died with a traceback; the process pool died with one as it launched its workers."""
    run = [*CLI, "run", str(_items(tmp_path, 300)), *processor, "--workers", "32", "--headless"]
    done = _sh('ulimit -n 100; exec "$@"', run, out_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    said = f"\n{fit} of 32 workers started: the limit on open files (ulimit -n 100) has room for {fit}\n"
    assert said in done.stderr, done.stderr[-2000:]
    assert "Too many open files" not in done.stderr and "Traceback" not in done.stderr
    assert read_json(only_batch(out_dir) / "live_progress.json")["workers"] == fit
    # Every item ran once: none was failed.
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
    return _sh(_join(group), [*CLI, *args], out_dir, tmp_path)


def test_pool_workers_fit_a_pids_limit(pids_cgroup: Path, tmp_path: Path, out_dir: Path) -> None:
    """The process pool under pids.max 18 with 16 workers asked: 1 fits (3 tasks a worker, 8
    kept free). Before: its launch died of `BlockingIOError: [Errno 11]` with a traceback (at
    18), or the engine's own threads found no room (at 24: "cannot start a thread")."""
    args = ["run", str(_items(tmp_path, 100)), "--call", f"{PROCS}:noop", "-j", "16", "--headless"]
    done = _run_in(pids_cgroup, 18, args, tmp_path, out_dir)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert re.search(r"\n1 of 16 workers started: the pids limit leaves room for \d+ more threads", done.stderr)
    assert "Traceback" not in done.stderr
    assert _attempts(only_batch(out_dir)) == ([("complete", 1, 100)], 100)


def test_a_pool_that_cannot_launch_a_worker_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch refused for lack of room ends the launching with what started, and the reason;
    any other launch error is raised as it was."""
    pool = ProcessExecutor(python_spec(f"{PROCS}:noop"), BatchConfig(workers=4), queue.SimpleQueue())
    launches: list[object] = []

    def launch() -> object:
        if len(launches) == 2:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        launches.append(object())
        return launches[-1]

    monkeypatch.setattr(pool, "_launch", launch)
    slots, why = pool._launch_some(4)
    assert slots == launches and len(slots) == 2
    assert why is not None and why.startswith("cannot start a worker process (Resource temporarily unavailable: ")
    # Out of descriptors is said as such, not as the limit on processes.
    monkeypatch.setattr(pool, "_launch", lambda: (_ for _ in ()).throw(OSError(24, "Too many open files")))
    assert pool._launch_some(1)[1] == (
        "cannot start a worker process (Too many open files: no room under this process's limit on open files: ulimit -n)"
    )
    monkeypatch.setattr(pool, "_launch", lambda: (_ for _ in ()).throw(FileNotFoundError(2, "python")))
    with pytest.raises(FileNotFoundError):
        pool._launch_some(1)


def test_workers_fit_a_pids_limit(pids_cgroup: Path, tmp_path: Path, out_dir: Path) -> None:
    """pids.max 16 with 8 workers asked: the engine's own threads take most of it, so it starts
    the workers that fit with their commands. Before: every start refused failed its item (all
    of them under pids.max 12), and the control watcher (watchfiles) aborted the process when it
    could not start its threads (SIGABRT at 16)."""
    items = str(_items(tmp_path, 200))
    done = _run_in(
        pids_cgroup, 16, ["run", items, "--cmd", "exec sleep 0.02", "-j", "8", "--headless"], tmp_path, out_dir
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert re.search(r"\n[1-3] of 8 workers started: the pids limit leaves room for \d+ more threads", done.stderr)
    assert "panicked" not in done.stderr
    assert _attempts(only_batch(out_dir)) == ([("complete", 1, 200)], 200)


#: Another program of the same container: it takes every task the limit frees, for HOLD seconds.
_NEIGHBOUR = """
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
kids = []
while time.monotonic() < end:
    try:
        pid = os.fork()
    except OSError:
        time.sleep(0.001)
        continue
    if pid == 0:
        time.sleep(max(0.0, end - time.monotonic()))
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
print(len(kids))
"""


def test_a_neighbour_that_fills_the_pids_limit_holds_starts_and_fails_nothing(
    pids_cgroup: Path, tmp_path: Path, out_dir: Path
) -> None:
    """A run under pids.max 48 with 4 workers; once 50 items are done, another program in the
    same cgroup takes every free task for 1.5 s. The commands the engine starts meanwhile are
    refused: their items go back to pending and run when the neighbour is gone, once each."""
    (pids_cgroup / "pids.max").write_text("48")
    items = str(_items(tmp_path, 1000))
    join = _join(pids_cgroup)
    run = [*CLI, "run", items, "--cmd", "exec sleep 0.02", "-j", "4", "--headless"]
    engine = subprocess.Popen(
        ["sh", "-c", join, "sh", *run],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _complete(out_dir) >= 50, 60, "50 items done")
        took = _sh(join, [sys.executable, "-c", _NEIGHBOUR, "1.5"])
        assert took.returncode == 0 and int(took.stdout) > 0, took.stderr
        _, err = engine.communicate(timeout=120)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert engine.returncode == 0, err[-3000:]
    assert "cannot start commands: Resource temporarily unavailable (no room under the limit on processes" in err
    assert re.search(r"commands start again \(\d+ starts were refused: their items went back to pending\)", err), err
    assert _attempts(only_batch(out_dir)) == ([("complete", 1, 1000)], 1000)


def _complete(out_dir: Path) -> int:
    try:
        return int(read_json(only_batch(out_dir) / "live_progress.json")["counts"]["complete"])  # type: ignore[index]
    except (AssertionError, OSError, ValueError, FileNotFoundError):
        return 0


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


#: In a pids cgroup with room for exactly the threads below and one more: the watcher's thread
#: starts, and watchfiles (which needs two more) must not be started. Prints whether it was.
_WATCH_NEAR_THE_LIMIT = """
import sys, threading, time
from pathlib import Path
idle = threading.Event()
for _ in range(int(sys.argv[2])):
    threading.Thread(target=idle.wait, daemon=True).start()
which, batch = sys.argv[1], Path(sys.argv[3])
if which == "engine":
    from batchtui.engine.control import ControlWatcher
    watcher = ControlWatcher(batch, lambda: None, delay=0)
else:
    from batchtui.tui.watch import BatchWatcher
    watcher = BatchWatcher(batch, lambda message: None)
watcher.start()
for i in range(10):
    (batch / "control.jsonl").write_text("x\\n" * i)
    time.sleep(0.05)
watcher.stop()
print("watchfiles" in sys.modules)
"""


@pytest.mark.parametrize("which", ["engine", "dashboard"])
def test_watchfiles_is_not_started_near_a_pids_limit(which: str, pids_cgroup: Path, tmp_path: Path) -> None:
    """watchfiles' Rust watcher aborts the whole process (a panic in a destructor: SIGABRT)
    when it cannot start its threads. Near the limit the engine's control watcher and the
    dashboard's batch watcher poll instead."""
    (pids_cgroup / "pids.max").write_text("16")
    done = _sh(_join(pids_cgroup), [sys.executable, "-c", _WATCH_NEAR_THE_LIMIT, which, "13", str(tmp_path)])
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "False"


def test_pool_workers_started_ahead_fit_the_limit_on_open_files() -> None:
    """The CLI starts a `--call` run's pool workers before its imports (engine/warmstart.py):
    under ``ulimit -n 100`` only the 9 the run can keep, not 32 to end 23 of them."""
    code = "from batchtui.engine import warmstart\nwarmstart.start(32)\nprint(warmstart.count())\nwarmstart.discard()\n"
    done = _sh('ulimit -n 100; exec "$@"', [sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["9"]
