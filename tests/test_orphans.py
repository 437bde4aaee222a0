"""Processes started for items die with the engine: after a kill -9 of the engine, and after a
normal exit. Real processes, real SIGKILL; every wait is on a deadline.

The first tests drive :mod:`batchtui.engine.reaper` directly from a small engine stand-in
(a script holding ``reaping()`` that starts a shell item and a pool worker the way the
executors do); the last ones run the real CLI, once the runner starts a ``Reaper`` (they are
skipped until then) and the pool workers call ``die_with_parent()``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from batchtui.engine import reaper as reaper_mod
from batchtui.engine.reaper import RUN_TOKEN_VAR, Reaper, clean_env, find_carriers, reaping

from .conftest import CLI, cli_env

REAP_WITHIN_S = 2.0

# An engine stand-in. Modes: "kill9" waits to be killed; "exit" leaves its children running and
# exits normally when told on stdin; "suicide" kills itself with SIGKILL right after starting
# its items (before the watchdog can have finished booting).
ENGINE = textwrap.dedent(
    """
    import json, multiprocessing, os, shlex, signal, subprocess, sys, time
    from batchtui.engine.reaper import die_with_parent, reaping

    SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
    # leaves the item's session and ignores SIGTERM (then says so: the sweep then takes its grace)
    LEAVER = (
        "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('armed', flush=True); time.sleep(60)"
    )

    def pool_worker(conn):
        die_with_parent()
        child = subprocess.Popen(SLEEPER)  # what a --call function may start
        conn.send([os.getpid(), child.pid])
        time.sleep(60)

    def main(mode, batch_dir, parts):
        lock_fd = None
        if "lock" in parts:  # the batch lock, as the runner holds it
            import fcntl
            fd = os.open(os.path.join(batch_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock_fd = fd
        with reaping(batch_dir, lock_fd=lock_fd) as token:
            pids, forked, survivors = [], [], []
            if "shell" in parts:  # a shell item: its own session, as the shell processor starts it
                cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(LEAVER)} & echo $!; sleep 60"
                sh = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE, start_new_session=True)
                lines = sorted([sh.stdout.readline().strip(), sh.stdout.readline().strip()])
                assert lines[1] == b"armed", lines
                pids += [sh.pid, int(lines[0])]
            if "pool" in parts:  # a process-pool worker running a callable
                ctx = multiprocessing.get_context("spawn")
                here, there = ctx.Pipe()
                ctx.Process(target=pool_worker, args=(there,), daemon=True).start()
                pids += here.recv()
            if "fork" in parts:  # a callable's os.fork() without exec: not a carrier (see reaper)
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                forked.append(pid)
            if "survivor" in parts:  # the same where the kernel cannot kill it with its parent
                ready_r, ready_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    from batchtui.engine import reaper
                    reaper._prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0: as on macOS
                    os.write(ready_w, b"x")
                    time.sleep(60)
                    os._exit(0)
                # Told only once the child has cleared its death signal: killed before that
                # (a loaded machine), it died with its parent and the test saw no survivor.
                os.read(ready_r, 1)
                survivors.append(pid)
            print(json.dumps({"token": token, "pids": pids, "forked": forked, "survivors": survivors}), flush=True)
            if mode == "suicide":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "exit":
                sys.stdin.readline()  # the test has seen its items carry the token
            if mode == "kill9":
                time.sleep(60)

    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_all_gone(pids: list[int], token: str, within: float = REAP_WITHIN_S) -> float:
    """Every pid is gone and no process carries ``token`` within ``within`` s; the time it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if all(_gone(p) for p in pids) and not find_carriers(token):
            return time.monotonic() - t0
        time.sleep(0.02)
    alive = [p for p in pids if not _gone(p)]
    raise AssertionError(f"still alive {within} s later: {alive}, carriers {find_carriers(token)}")


#: The processes the tests started, as found while they ran: a cleanup kills these, never
#: whatever process reuses one of their pids later.
_seen: dict[int, psutil.Process] = {}


def _track(pids: list[int]) -> list[int]:
    for pid in pids:
        try:
            _seen.setdefault(pid, psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return pids


def _kill_leftovers(pids: list[int], token: str | None = None) -> None:
    """Clean up after a failed test: the tracked processes, and whatever carries ``token``."""
    if token:
        pids = pids + _track(find_carriers(token))
    for pid in pids:
        proc = _seen.pop(pid, None)
        if proc is not None:
            try:
                proc.kill()  # psutil refuses if the pid now names another process
            except psutil.Error:
                pass


def _start_engine(tmp_path: Path, mode: str, parts: str) -> tuple[subprocess.Popen[str], str, list[int]]:
    """Start the stand-in; return it, its token and its items' pids once they all carry the token
    (and the fork children's, which cannot: /proc shows the environment of the last exec)."""
    script = tmp_path / "engine_standin.py"
    script.write_text(ENGINE)
    batch = tmp_path / "batch"
    batch.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(batch), parts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the stand-in died at start ({proc.wait()})"
    info = json.loads(line)
    token, pids = info["token"], _track(info["pids"] + info["forked"] + info["survivors"])[: len(info["pids"])]
    if mode != "suicide":  # (a suicide may already be reaped)
        deadline = time.monotonic() + 5
        while not set(pids) <= set(find_carriers(token)):
            assert time.monotonic() < deadline, "the items did not inherit the run token"
            time.sleep(0.02)
    return proc, token, pids + info["forked"] + info["survivors"]


LINUX_ONLY_FORK = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a fork child dies by PDEATHSIG")


@pytest.mark.parametrize(
    "parts",
    [
        "shell",
        "pool",
        pytest.param("fork", marks=LINUX_ONLY_FORK),
        pytest.param("shell,pool,fork", marks=LINUX_ONLY_FORK),
    ],
)
def test_a_kill_9_of_the_engine_leaves_no_child_alive_after_2_s(tmp_path: Path, parts: str) -> None:
    proc, token, pids = _start_engine(tmp_path, "kill9", parts)
    try:
        proc.kill()
        proc.wait(5)
        took = _wait_all_gone(pids, token)
        print(f"reaped {len(pids)} processes {took * 1000:.0f} ms after the kill -9")
    finally:
        _kill_leftovers(pids, token)
    if parts == "fork":
        return  # the kernel killed it: the watchdog found nothing to kill, and logs nothing
    log = tmp_path / "batch" / "engine.log"
    deadline = time.monotonic() + 5  # the watchdog writes it once its last scan is done
    while "reaper: the engine ended; killed" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the watchdog logged nothing"
        time.sleep(0.02)


def test_a_kill_9_right_after_the_start_is_seen_too(tmp_path: Path) -> None:
    """The engine dies before the watchdog has even imported psutil: it still reads EOF."""
    proc, token, pids = _start_engine(tmp_path, "suicide", "shell")
    try:
        assert proc.wait(5) == -signal.SIGKILL
        _wait_all_gone(pids, token)
    finally:
        _kill_leftovers(pids, token)


def test_the_batch_lock_is_held_until_the_old_runs_processes_are_dead(tmp_path: Path) -> None:
    """A resume right after a kill -9 gets the batch only once nothing of the old run is left
    (here a child that ignores SIGTERM keeps the sweep busy for its grace)."""
    import fcntl

    proc, token, pids = _start_engine(tmp_path, "kill9", "shell,pool,lock")
    fd = os.open(tmp_path / "batch" / "lock", os.O_RDWR)
    try:
        proc.kill()
        proc.wait(5)
        deadline = time.monotonic() + REAP_WITHIN_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the lock is still held"
                time.sleep(0.01)
        assert [p for p in pids if not _gone(p)] == []
        assert find_carriers(token) == []
    finally:
        os.close(fd)
        _kill_leftovers(pids, token)


def test_after_a_normal_exit_the_batch_lock_is_free_at_once(tmp_path: Path) -> None:
    """The engine ended its items itself: the next engine must not wait for the sweep of the
    leftovers (here one that ignores SIGTERM, so the sweep takes its grace)."""
    import fcntl

    proc, token, pids = _start_engine(tmp_path, "exit", "shell,lock")
    fd = os.open(tmp_path / "batch" / "lock", os.O_RDWR)
    try:
        proc.communicate("exit\n", timeout=10)
        assert proc.returncode == 0
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no BlockingIOError
        _wait_all_gone(pids, token)
    finally:
        os.close(fd)
        _kill_leftovers(pids, token)


@LINUX_ONLY_FORK
def test_a_forked_child_does_not_keep_the_watchdog_waiting(tmp_path: Path) -> None:
    """A fork child inherits every descriptor: it must not keep the engine's end of the pipe
    open, or the watchdog would wait for it and the items would live on."""
    proc, token, pids = _start_engine(tmp_path, "kill9", "shell,survivor")
    survivor = [p for p in pids if psutil.Process(p).ppid() == proc.pid and p not in find_carriers(token)]
    try:
        assert len(survivor) == 1
        proc.kill()
        proc.wait(5)
        _wait_all_gone([p for p in pids if p not in survivor], token)
        assert not _gone(survivor[0])  # (a fork child nobody can find: see reaper's docstring)
    finally:
        _kill_leftovers(pids, token)


@pytest.mark.parametrize("parts", ["shell,pool", pytest.param("shell,pool,fork", marks=LINUX_ONLY_FORK)])
def test_a_normal_exit_leaves_no_child_alive_after_2_s(tmp_path: Path, parts: str) -> None:
    proc, token, pids = _start_engine(tmp_path, "exit", parts)
    try:
        proc.communicate("exit\n", timeout=10)
        assert proc.returncode == 0
        _wait_all_gone(pids, token)
    finally:
        _kill_leftovers(pids, token)


def test_leaving_restores_the_environment_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_TOKEN_VAR, raising=False)
    before = dict(os.environ)
    with reaping(wait=5) as outer:
        assert os.environ[RUN_TOKEN_VAR] == outer
        with reaping(wait=5) as inner:
            assert os.environ[RUN_TOKEN_VAR] == inner != outer
        assert os.environ[RUN_TOKEN_VAR] == outer
    assert dict(os.environ) == before

    monkeypatch.setenv(RUN_TOKEN_VAR, "from-an-outer-engine")
    first, second = Reaper(), Reaper()
    first.start()
    second.start()
    first.close(wait=5)  # out of order: the variable is still the second run's
    assert os.environ[RUN_TOKEN_VAR] == second.token
    second.close(wait=5)
    assert os.environ[RUN_TOKEN_VAR] == "from-an-outer-engine"
    second.close()  # idempotent
    assert first.watchdog is not None and first.watchdog.returncode == 0


def test_the_watchdog_is_quiet_in_its_own_session_and_never_a_carrier(capfd: pytest.CaptureFixture[str]) -> None:
    reaper = Reaper()
    with reaping(wait=5), reaper as token:  # (inside a run: no token of that one either)
        assert reaper.watchdog is not None
        watchdog = psutil.Process(reaper.watchdog.pid)
        assert os.getsid(watchdog.pid) != os.getsid(0)  # terminal signals miss it
        deadline = time.monotonic() + 5
        while reaper_mod.__file__ not in watchdog.cmdline():  # (until it has exec'd)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert RUN_TOKEN_VAR not in watchdog.environ()
        assert watchdog.pid not in find_carriers(token)
    reaper.watchdog.wait(5)
    assert capfd.readouterr() == ("", "")


def test_the_sweep_spares_multiprocessings_resource_tracker_and_kills_the_rest() -> None:
    """The resource tracker serves every process pool of the process, this run's and the next:
    a run's sweep killing it left the next pool warning "process died unexpectedly" and leaking
    its semaphores. A fresh interpreter, so that this run starts the tracker (with its token)."""
    script = textwrap.dedent(
        """
        import multiprocessing, os, subprocess, sys, time
        from multiprocessing import resource_tracker
        import psutil
        from batchtui.engine.reaper import reaping
        with reaping(wait=10):
            lock = multiprocessing.get_context("spawn").Lock()  # starts the tracker, with the token
            tracker = resource_tracker._resource_tracker._pid
            child = subprocess.Popen(["sleep", "30"])  # the run's own: carries the token too
        child.wait(5)  # reaped by the sweep (not waited for: it is our child, a zombie)
        print(child.returncode, psutil.pid_exists(tracker) and psutil.Process(tracker).status() != "zombie")
        del lock
        multiprocessing.get_context("spawn").Lock()  # the next pool's semaphore: the same tracker
        print(resource_tracker._resource_tracker._pid == tracker)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(-signal.SIGTERM), "True", "True"], (done.stdout, done.stderr)
    assert "died unexpectedly" not in done.stderr, done.stderr


def test_clean_env_drops_the_token_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PATH": "/bin", RUN_TOKEN_VAR: "abc", "BATCHTUI_OUTPUT_DIR": "/x"}
    assert clean_env(env) == {"PATH": "/bin", "BATCHTUI_OUTPUT_DIR": "/x"}
    assert env[RUN_TOKEN_VAR] == "abc"  # a copy
    with reaping(wait=5):
        assert RUN_TOKEN_VAR in os.environ
        assert RUN_TOKEN_VAR not in clean_env()
        assert clean_env() == {k: v for k, v in os.environ.items() if k != RUN_TOKEN_VAR}


def test_the_tui_hand_off_engine_does_not_carry_the_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The background engine the TUI hands a batch to must outlive the TUI's own engine."""
    from batchtui.tui import launch

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def popen(args: Any, **kw: Any) -> Any:
        seen.update(kw)
        raise Stop

    class Batch:
        path = tmp_path
        engine_log = tmp_path / "engine.log"

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    monkeypatch.setenv(RUN_TOKEN_VAR, "the-tui-engine's")
    with pytest.raises(Stop):
        launch.detach_engine(Batch(), action="resume")  # type: ignore[arg-type]
    assert seen.get("env") is not None
    assert RUN_TOKEN_VAR not in seen["env"]
    assert seen["env"]["PATH"] == os.environ["PATH"]


PARENT = textwrap.dedent(
    """
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
    print(child.pid, child.stdout.readline().strip(), flush=True)
    child.wait()
    """
)
CHILD = textwrap.dedent(
    """
    import os, time
    from batchtui.engine import reaper
    if {fallback}:
        reaper._set_pdeathsig = lambda sig: False  # as where prctl does not exist
    reaper.die_with_parent()
    print("armed", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("fallback", [False, True], ids=["prctl", "poll"])
def test_die_with_parent_kills_a_child_when_its_parent_is_killed(tmp_path: Path, fallback: bool) -> None:
    if not fallback and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), CHILD.format(fallback=fallback)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pid_text, armed = parent.stdout.readline().split()
    child = _track([int(pid_text)])[0]
    try:
        assert armed == "armed"
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + (1.0 if fallback else 0.5)  # the poll runs every 0.5 s
        while not _gone(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.01)
    finally:
        _kill_leftovers([child])


def test_die_with_parent_when_the_parent_died_before_the_call(tmp_path: Path) -> None:
    """A worker whose parent died while it was starting up dies at once."""
    code = "from batchtui.engine.reaper import die_with_parent; die_with_parent(parent_pid=1 << 22); print('alive')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == ""


def test_die_with_parent_leaves_a_child_of_a_living_parent_alone() -> None:
    code = "import time; from batchtui.engine.reaper import die_with_parent; die_with_parent(); print('ok', flush=True)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert (proc.returncode, proc.stdout) == (0, "ok\n")


# -- the real engine ---------------------------------------------------------------------------


def _engine_integrated() -> bool:
    """Whether the runner enters the reaper (when it takes the batch over) and pool workers call
    die_with_parent()."""
    engine = Path(reaper_mod.__file__).parent
    runner, executors = (engine / "takeover.py").read_text(), (engine / "poolworker.py").read_text()
    return ("reaping(" in runner or "Reaper(" in runner) and "die_with_parent(" in executors


needs_engine = pytest.mark.skipif(
    not _engine_integrated(), reason="the runner starts no Reaper, or _child_main calls no die_with_parent(), yet"
)

CALLS = textwrap.dedent(
    """
    import os, subprocess, sys, time

    def _note(item, pids):
        path = os.path.join(os.environ["ORPHAN_PID_DIR"], str(item.seq))
        with open(path + ".tmp", "w") as fh:
            fh.write(" ".join(map(str, pids)))
        os.replace(path + ".tmp", path)

    def popen_and_sleep(item):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        _note(item, [os.getpid(), child.pid])
        time.sleep(60)

    def popen_and_return(item):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        _note(item, [child.pid])
        return {"child": child.pid}
    """
)


def _wait_pid_files(pid_dir: Path, n: int, engine: subprocess.Popen[bytes], within: float = 30) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        files = [p for p in pid_dir.iterdir() if not p.name.endswith(".tmp")]
        if len(files) >= n:
            return _track([int(x) for p in files for x in p.read_text().split()])
        assert engine.poll() is None, f"the engine exited with {engine.returncode}"
        assert time.monotonic() < deadline, "the items did not start"
        time.sleep(0.05)


def _run_engine(tmp_path: Path, out_dir: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    (tmp_path / "calls.py").write_text(CALLS)
    (tmp_path / "in.txt").write_text("a\nb\n")
    engine = subprocess.Popen(
        [*CLI, "run", str(tmp_path / "in.txt"), *args, "--headless", "--workers", "2"],
        env=cli_env(out_dir, {"ORPHAN_PID_DIR": str(pid_dir)}),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return engine, pid_dir


def _token_of(pids: list[int]) -> str:
    for pid in pids:
        try:
            token = psutil.Process(pid).environ().get(RUN_TOKEN_VAR)
        except psutil.Error:
            continue
        if token:
            return token
    raise AssertionError("no item process carries the run token")


@needs_engine
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            [
                "--cmd",
                'echo $$ > "$ORPHAN_PID_DIR/{seq}.tmp"; '
                + shlex.quote(sys.executable)
                + " -c 'import os, time; os.setsid(); time.sleep(60)' & "
                + 'echo $! >> "$ORPHAN_PID_DIR/{seq}.tmp"; mv "$ORPHAN_PID_DIR/{seq}.tmp" "$ORPHAN_PID_DIR/{seq}"; sleep 60',
            ],
            id="shell-setsid",
        ),
        pytest.param(["--call", "calls.py:popen_and_sleep", "--executor", "process"], id="call-process"),
        pytest.param(["--call", "calls.py:popen_and_sleep", "--executor", "thread"], id="call-thread"),
    ],
)
def test_a_kill_9_of_the_real_engine_leaves_no_child_alive_after_2_s(
    tmp_path: Path, out_dir: Path, args: list[str]
) -> None:
    engine, pid_dir = _run_engine(tmp_path, out_dir, args)
    pids: list[int] = []
    token = None
    try:
        pids = _wait_pid_files(pid_dir, 2, engine)
        token = _token_of(pids)
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(5)
        took = _wait_all_gone(pids, token)
        print(f"reaped {len(pids)} processes {took * 1000:.0f} ms after the kill -9")
    finally:
        engine.kill()
        engine.wait(5)
        _kill_leftovers(pids, token)


@needs_engine
@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_finished_real_engine_leaves_no_child_alive_after_2_s(tmp_path: Path, out_dir: Path, executor: str) -> None:
    engine, pid_dir = _run_engine(tmp_path, out_dir, ["--call", "calls.py:popen_and_return", "--executor", executor])
    pids: list[int] = []
    try:
        assert engine.wait(60) == 0
        pids = _track([int(x) for p in pid_dir.iterdir() if not p.name.endswith(".tmp") for x in p.read_text().split()])
        assert len(pids) == 2
        deadline = time.monotonic() + REAP_WITHIN_S
        while not all(_gone(p) for p in pids):
            assert time.monotonic() < deadline, f"children of the finished run still alive: {pids}"
            time.sleep(0.02)
    finally:
        _kill_leftovers(pids)
