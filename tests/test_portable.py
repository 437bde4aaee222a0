"""The portable paths, proven on Linux: what runs on macOS, musl and the BSDs.

A ``sitecustomize`` on the subprocesses' PYTHONPATH removes what only Linux with glibc has before
batchtui is imported: ``os.pidfd_open``, ``os.waitid`` (macOS's Python has neither),
``os.fdatasync`` (macOS) and glibc itself (``os.confstr("CS_GNU_LIBC_VERSION")`` fails as on
musl, so the ctypes spawner is not used). The engine then chooses its backends as it would
there: Popen to start commands, polling for their exit, fsync for the group commit. Through
those the shell processor (success, failure, timeout kill, stop kill), a whole CLI run and a
kill -9 + resume must behave exactly as on the fast paths.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from batchtui.engine import files
from batchtui.engine.shell import wait
from batchtui.engine.shell.item import Item
from batchtui.engine.shell.processor import ShellProcessor
from batchtui.engine.store import connection

from .conftest import CLI, cli_env, only_batch, read_live, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="hides Linux-only calls")

SITECUSTOMIZE = '''\
"""Makes this Python look like one without Linux's pidfd/waitid/fdatasync and without glibc."""
import os

for _name in ("pidfd_open", "waitid", "fdatasync"):
    if hasattr(os, _name):
        delattr(os, _name)

_confstr = os.confstr


def _no_glibc(name):
    if name == "CS_GNU_LIBC_VERSION":
        raise ValueError("unrecognized configuration name")  # as on musl
    return _confstr(name)


os.confstr = _no_glibc
'''


@pytest.fixture
def portable(tmp_path: Path, out_dir: Path) -> dict[str, str]:
    """The environment of a subprocess on the portable paths (BATCHTUI_SPAWNER left to choose)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return cli_env(out_dir, {"PYTHONPATH": path, "BATCHTUI_SPAWNER": "auto"})


def run_python(code: str, env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout.splitlines()[-1])
    assert isinstance(report, dict)
    return report


def test_the_backends_are_the_portable_ones(portable: dict[str, str]) -> None:
    code = (
        "import json, os\n"
        "from batchtui.engine import files\n"
        "from batchtui.engine.shell import spawn, wait\n"
        "print(json.dumps({'hidden': [n for n in ('pidfd_open', 'waitid', 'fdatasync') if hasattr(os, n)],\n"
        "  'spawner': spawn.backend(), 'wait': wait.backend(), 'sync': files.data_fsync.__name__}))\n"
    )
    assert run_python(code, portable) == {"hidden": [], "spawner": "popen", "wait": "polling", "sync": "full_fsync"}


PROCESSOR = r"""
import json, os, sys, threading, time
import psutil
from batchtui.engine.errors import CommandFailed, CommandKilled, ItemTimeout
from batchtui.engine.shell.item import Item
from batchtui.engine.shell.processor import ShellProcessor

batch, work = sys.argv[1], sys.argv[2]
BG = 'sleep 60 & echo $! > "$W/bg.$BATCHTUI_SEQ"; wait'
fds = set(os.listdir("/proc/self/fd"))
report = {}


def item(seq, data="hello world"):
    return Item(seq=seq, key=str(seq), data=data, attempt=1, batch_dir=batch)


def outcome(exc, *fields):
    return {"type": type(exc).__name__, **{k: getattr(exc, k) for k in ("stderr_tail", *fields)}}


def background_gone(seq):
    pid = int(open(os.path.join(work, f"bg.{seq}")).read())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # killed with its group, then reaped by init
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


out = ShellProcessor("echo {}; echo note >&2; echo '{{\"seq\": {seq}}}'").run(item(0))
report["success"] = {"result": out.result, "out": open(f"{batch}/logs/0.1.out").read(), "err": open(f"{batch}/logs/0.1.err").read()}

try:
    ShellProcessor("echo bad >&2; exit 3").run(item(1))
except CommandFailed as exc:
    report["failure"] = outcome(exc, "exit_code")

def started(seq):
    bg = os.path.join(work, f"bg.{seq}")
    return os.path.exists(bg) and open(bg).read().endswith("\n")


# The timeout must come after the command has started its background child (else there is no
# child to see gone): under load that can take longer than half a second, so a longer timeout
# is tried then.
for timeout in (0.5, 2, 8, 30):
    proc = ShellProcessor(BG, timeout=timeout, env={"W": work})
    try:
        proc.run(item(2))
    except ItemTimeout as exc:
        if not started(2):
            continue
        report["timeout"] = {**outcome(exc), "background_gone": background_gone(2)}
    break

for seq, how in ((3, "kill"), (4, "kill_all")):
    proc = ShellProcessor(BG, env={"W": work})
    box = {}

    def run(seq=seq):
        try:
            box["out"] = proc.run(item(seq))
        except BaseException as exc:
            box["exc"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    bg = os.path.join(work, f"bg.{seq}")
    while not started(seq):  # the command has started (its shell's start may not have returned yet)
        time.sleep(0.01)
    killed = proc.kill(seq) if how == "kill" else proc.kill_all()
    thread.join(30)
    report[how] = {"killed": killed, **outcome(box["exc"], "signum"), "background_gone": background_gone(seq)}

report["fds_left"] = sorted(set(os.listdir("/proc/self/fd")) - fds)
report["zombies"] = [p.pid for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE]
print(json.dumps(report))
"""


def test_the_shell_processor_on_the_portable_paths(portable: dict[str, str], batch: Path, work: Path) -> None:
    got = run_python(PROCESSOR, portable, str(batch), str(work))
    assert got["success"] == {"result": {"seq": 0}, "out": 'hello world\n{"seq": 0}\n', "err": "note\n"}
    assert got["failure"] == {"type": "CommandFailed", "exit_code": 3, "stderr_tail": "bad\n"}
    assert got["timeout"] == {"type": "ItemTimeout", "stderr_tail": "", "background_gone": True}
    killed = {"type": "CommandKilled", "signum": int(signal.SIGKILL), "stderr_tail": "", "background_gone": True}
    assert got["kill"] == {"killed": True, **killed}
    assert got["kill_all"] == {"killed": 1, **killed}
    assert got["fds_left"] == []
    assert got["zombies"] == []


def test_a_whole_run_on_the_portable_paths(portable: dict[str, str], tmp_path: Path, out_dir: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"line {i}\n" for i in range(40)))
    done = subprocess.run(
        [*CLI, "run", str(items), "--cmd", "echo '{{\"n\": {seq}}}'", "--headless", "-j", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        env=portable,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    batch = only_batch(out_dir)
    results = [orjson.loads(x) for x in (batch / "results.jsonl").read_bytes().splitlines()]
    assert sorted((r["seq"], r["result"]["n"]) for r in results) == [(i, i) for i in range(40)]
    db = sqlite3.connect(batch / "items.db")
    try:
        assert db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall() == [("complete", 40)]
    finally:
        db.close()


def _lock_free(batch: Path) -> bool:
    """Whether no engine (nor a killed engine's watchdog) holds the batch's lock."""
    fd = os.open(batch / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops a lock taken here
    return True


def _complete(out_dir: Path) -> int:
    batches = [p for p in out_dir.iterdir() if p.is_dir()] if out_dir.exists() else []
    if not batches or not (batches[0] / "live_progress.json").exists():
        return 0
    counts = read_live(batches[0])["counts"]
    assert isinstance(counts, dict)
    return int(counts["complete"])


def test_kill_9_and_resume_on_the_portable_paths_is_exactly_once(
    portable: dict[str, str], tmp_path: Path, out_dir: Path
) -> None:
    """The engine is killed with -9 once 20 of 200 items are committed (each item takes 50 ms
    of work, so at least 2 s of the run are left), then the batch is resumed."""
    n = 200
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item {i}\n" for i in range(n)))
    log = tmp_path / "exec.log"
    env = {**portable, "LOG": str(log)}
    cmd = 'echo {seq} >> "$LOG"; sleep 0.05; echo \'{{"seq": {seq}}}\''
    stderr = tmp_path / "engine.err"
    with stderr.open("wb") as err:
        engine = subprocess.Popen(
            [*CLI, "run", str(items), "--cmd", cmd, "--headless", "-j", "4", "--progress-interval", "0.2"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )

    def committed() -> bool:
        assert engine.poll() is None, f"the engine ended ({engine.returncode}): {stderr.read_text()}"
        return _complete(out_dir) >= 20

    try:
        wait_until(committed, timeout=60, what="20 items committed")
    finally:
        os.killpg(engine.pid, signal.SIGKILL)
        engine.wait()
    batch = only_batch(out_dir)
    done_before = {orjson.loads(x)["seq"] for x in (batch / "results.jsonl").read_bytes().splitlines()}
    assert 20 <= len(done_before) < n
    # The killed engine's watchdog sweeps its items, then lets the lock go: only then has every
    # item it started written its start line (one spawned just before the kill may log later).
    wait_until(lambda: _lock_free(batch), timeout=30, what="the killed engine's lock released")
    in_flight = {int(x) for x in log.read_text().split()} - done_before

    resumed = subprocess.run(
        [*CLI, "resume", batch.name, "--headless"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    seqs = Counter(orjson.loads(x)["seq"] for x in (batch / "results.jsonl").read_bytes().splitlines())
    assert sorted(seqs) == list(range(n)), "an item was lost"
    assert set(seqs.values()) == {1}, "an item has two result lines"
    runs = Counter(int(x) for x in log.read_text().split())
    assert sorted(runs) == list(range(n))
    assert {seq for seq, count in runs.items() if count > 1} <= in_flight, "a finished item ran again"
    db = sqlite3.connect(batch / "items.db")
    try:
        assert db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall() == [("complete", n)]
    finally:
        db.close()


def test_batchtui_spawner_forces_popen_and_refuses_an_unknown_name(
    tmp_path: Path, out_dir: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    code = (
        "import json\n"
        "from batchtui.engine.shell import spawn\n"
        "from batchtui.engine.shell.processor import ShellProcessor\n"
        "launcher = ShellProcessor('true')._launcher\n"
        "print(json.dumps({'spawner': spawn.backend(), 'launcher': type(launcher).__name__}))\n"
    )
    forced = run_python(code, cli_env(out_dir, {"BATCHTUI_SPAWNER": "popen"}))
    assert forced == {"spawner": "popen", "launcher": "PopenLauncher"}
    items = tmp_path / "items.txt"
    items.write_text("a\n")
    done = run_cli(["run", str(items), "--cmd", "echo {}", "--headless"], env={"BATCHTUI_SPAWNER": "bogus"})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "error: BATCHTUI_SPAWNER='bogus' is not a spawner: use auto, glibc or popen"
    assert "Traceback" not in done.stderr


def test_full_fsync_is_f_fullfsync_where_the_system_has_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on macOS (F_FULLFSYNC's number there is 51): fcntl(F_FULLFSYNC), fsync only where a
    file system refuses it; the group commit's data sync is the same call."""
    calls: list[tuple[str, int]] = []

    def full(fd: int, op: int) -> int:
        calls.append(("fcntl", op))
        return 0

    def refused(fd: int, op: int) -> int:
        calls.append(("fcntl", op))
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(files, "_F_FULLFSYNC", 51)
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append(("fsync", fd)))
    assert files._pick_data_fsync() is files.full_fsync
    with open(tmp_path / "f", "wb") as f:
        monkeypatch.setattr(files.fcntl, "fcntl", full)
        files.full_fsync(f.fileno())
        assert calls == [("fcntl", 51)]
        monkeypatch.setattr(files.fcntl, "fcntl", refused)
        files.full_fsync(f.fileno())
        assert calls == [("fcntl", 51), ("fcntl", 51), ("fsync", f.fileno())]


def test_the_store_asks_sqlite_for_fullfsync_where_the_system_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "items.db"
    db.touch(mode=0o600)
    for has, durable, expected in ((True, True, 1), (True, False, 0), (False, True, 0)):
        monkeypatch.setattr(connection, "HAS_FULLFSYNC", has)
        conn = connection.connect_rw(db, durable=durable)
        try:
            assert conn.execute("PRAGMA fullfsync").fetchone()[0] == expected, (has, durable)
        finally:
            conn.close()


def test_a_kernel_that_refuses_pidfd_moves_the_process_to_waitid(batch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old kernel (ENOSYS) or a sandbox (EPERM) refuses pidfd_open: the item still runs, and
    every later one waits with waitid."""
    calls: list[int] = []

    def refused(pid: int, flags: int = 0) -> int:
        calls.append(pid)
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)
    monkeypatch.setattr(wait, "_backend", None)
    proc = ShellProcessor("echo '{{\"seq\": {seq}}}'")
    for seq in range(3):
        got = proc.run(Item(seq=seq, key=str(seq), data="x", attempt=1, batch_dir=str(batch)))
        assert got.result == {"seq": seq}
    assert len(calls) == 1
    assert wait.backend() == "waitid"
