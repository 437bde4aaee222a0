"""How the shell processor starts commands: glibc's posix_spawn where it can, Popen where only Popen can.

Both paths must give a command the same world: a new session, /dev/null as stdin, two pipes, no
other descriptor, SIGPIPE at its default, the same return codes and errors, and kills that reach
the whole process group. Each test runs on both paths and checks which one was taken.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from batchtui.engine.errors import CommandFailed, CommandKilled, ItemTimeout
from batchtui.engine.shell import spawn as spawn_mod
from batchtui.engine.shell import spawn_glibc
from batchtui.engine.shell.item import Item, ProcessOutput
from batchtui.engine.shell.processor import ShellProcessor

from .conftest import assert_gone_soon, run_in_thread


def make_item(batch: Path, data: Any = "v", *, seq: int = 0) -> Item:
    return Item(seq=seq, key=str(data), data=data, attempt=1, batch_dir=str(batch))


class Spy:
    """Counts the starts that went through posix_spawn and through subprocess.Popen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.spawns = 0
        self.popens = 0
        real_spawn, real_popen = spawn_glibc.LibcSpawn.spawn, subprocess.Popen

        def spawn(*args: Any, **kw: Any) -> int:
            self.spawns += 1
            return real_spawn(*args, **kw)

        def popen(*args: Any, **kw: Any) -> Any:
            self.popens += 1
            return real_popen(*args, **kw)

        monkeypatch.setattr(spawn_glibc.LibcSpawn, "spawn", spawn)
        monkeypatch.setattr(spawn_mod.subprocess, "Popen", popen)

    def took(self, path: str) -> bool:
        return (self.spawns, self.popens) != (0, 0) and (self.popens if path == "spawn" else self.spawns) == 0


def needs_glibc_spawner() -> None:
    """Skip where this process starts commands with Popen only (no glibc >= 2.34, or
    BATCHTUI_SPAWNER=popen, as when the suite runs the portable path)."""
    if spawn_mod.backend() != "glibc":
        pytest.skip(f"the spawner here is {spawn_mod.backend()}")


@pytest.fixture(params=["spawn", "popen"])
def path(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which start path the test exercises: the glibc spawner, or Popen (the backend of systems
    without it). Commands run in ``work`` either way, while this process is in another folder:
    both enter it in the child."""
    if request.param == "spawn":
        needs_glibc_spawner()
    else:
        monkeypatch.setattr(spawn_mod, "_backend", "popen")
    monkeypatch.chdir(tmp_path)
    yield request.param


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


def processor(path: str, work: Path, template: str, **kw: Any) -> ShellProcessor:
    """A processor running commands in ``work`` (the ``path`` fixture set which way it starts them)."""
    assert os.getcwd() != os.path.realpath(work) and path in ("spawn", "popen")
    return ShellProcessor(template, cwd=os.path.realpath(work), **kw)


def stdout_of(proc: ShellProcessor, batch: Path, seq: int = 0) -> str:
    got = proc.run(make_item(batch, seq=seq))
    assert isinstance(got.result, dict)
    text = got.result["stdout_tail"]
    assert isinstance(text, str)
    return text


def open_fds() -> set[int]:
    return {int(x) for x in os.listdir("/proc/self/fd")}


def left_open(before: set[int]) -> set[int]:
    """Descriptors open now that were not ``before``: what a spawn leaked. (One open before and
    closed since is another thread's doing: a dask client of an earlier test in this worker
    process closing its sockets, say. CI once saw that, fd 27.)"""
    return open_fds() - before


# -- the child's world -------------------------------------------------------------------------


def test_the_command_sees_only_fds_0_1_2(path: str, spy: Spy, work: Path, batch: Path) -> None:
    # Inheritable descriptors of this process (as one inherited from a launcher, or one os.dup2
    # made), before and after the processor is made, stay here: only 0, 1 and 2 reach the command.
    before = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(before, True)
    proc = processor(path, work, "ls /proc/self/fd")
    after = os.dup2(before, before + 50)
    r, w = os.pipe()  # Python's own: non-inheritable
    try:
        assert os.get_inheritable(after) and min(before, after, r, w) > 3
        # ls opens /proc/self/fd itself: that is the one descriptor beyond 0-2 (the lowest free).
        assert stdout_of(proc, batch).split() == ["0", "1", "2", "3"]
        # The shell's own descriptors, listed by its child.
        shown = stdout_of(processor(path, work, "ls /proc/$$/fd"), batch, seq=1)
        assert shown.split() == ["0", "1", "2"]
    finally:
        for fd in (before, after, r, w):
            os.close(fd)
    assert spy.took(path)


def test_stdin_is_dev_null_and_outputs_are_pipes(path: str, spy: Spy, work: Path, batch: Path) -> None:
    proc = processor(path, work, "readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2; cat; echo ok >&0")
    lines = stdout_of(proc, batch).splitlines()
    assert lines[0] == "/dev/null"
    assert lines[1].startswith("pipe:[") and lines[2].startswith("pipe:[") and lines[1] != lines[2]
    assert len(lines) == 3  # cat read nothing; writing to stdin worked (read-write, as Popen's DEVNULL)
    assert spy.took(path)


def test_a_new_session_and_process_group(path: str, spy: Spy, work: Path, batch: Path) -> None:
    proc = processor(path, work, "echo $$; cut -d' ' -f5,6 /proc/$$/stat")
    pid, ids = stdout_of(proc, batch).splitlines()
    assert ids.split() == [pid, pid]  # process group id and session id are the shell's pid
    assert spy.took(path)


def _ignored(status: str) -> int:
    line = next(x for x in status.splitlines() if x.startswith("SigIgn:"))
    return int(line.split()[1], 16)


def test_the_signals_set_to_their_defaults_are_named_right() -> None:
    """A misspelt name (once "SIGXFZ") would be skipped silently by the spawner's getattr."""
    assert [getattr(signal, name, None) for name in spawn_glibc.SIGNALS_AT_DEFAULT] == [
        signal.SIGPIPE,
        signal.SIGXFSZ,
    ]


def test_sigpipe_is_at_its_default(path: str, spy: Spy, work: Path, batch: Path) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # Python's own setting
    ignored = _ignored(stdout_of(processor(path, work, "grep SigIgn: /proc/$$/status"), batch))
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), sig
    # So a writer into a closed pipe dies quietly, as in a terminal.
    with pytest.raises(CommandFailed) as err:
        processor(path, work, "yes | head -n 1 >/dev/null; exit 3").run(make_item(batch, seq=1))
    assert "Broken pipe" not in err.value.stderr_tail
    assert spy.took(path)


def _status_mask(status: str, field: str) -> int:
    return int(next(x for x in status.splitlines() if x.startswith(f"{field}:")).split()[1], 16)


@pytest.mark.parametrize(
    "command", ["grep -E '^Sig(Ign|Cgt):' /proc/$$/status", "grep -E '^Sig(Ign|Cgt):' /proc/self/status"]
)
def test_a_signal_ignored_here_stays_ignored_and_a_handled_one_is_at_its_default(
    path: str, spy: Spy, work: Path, batch: Path, command: str
) -> None:
    """What an exec after Popen's fork gives: SIGHUP ignored here (as under nohup) stays
    ignored in the command, SIGUSR1 handled here is at its default there, as is SIGUSR2 (at its
    default here). The glibc spawner tells posix_spawn every signal to set to its default
    instead of letting its child ask about each one; the set is made from this process's
    signals when the processor is made, so they are changed first. Through dash and without it
    (``grep`` on /proc/self is started directly where /bin/sh is dash)."""
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    usr1 = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        status = stdout_of(processor(path, work, command), batch)
        ignored_here = spawn_glibc.ignored_here()
    finally:
        signal.signal(signal.SIGHUP, hup)
        signal.signal(signal.SIGUSR1, usr1)
    ignored, caught = _status_mask(status, "SigIgn"), _status_mask(status, "SigCgt")
    assert ignored & (1 << (signal.SIGHUP - 1))
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM):
        assert not (ignored | caught) & (1 << (sig - 1)), sig
    # Exactly what is ignored here but SIGPIPE and SIGXFSZ, and nothing else: not glibc's own
    # signals (32 and 33), which its posix_spawn sets to "ignored" unless told otherwise.
    kept = ignored_here - {signal.SIGPIPE, signal.SIGXFSZ}
    assert ignored == sum(1 << (sig - 1) for sig in kept), (hex(ignored), sorted(kept))
    assert spy.took(path)


def test_the_spawner_sets_every_signal_not_ignored_here_to_its_default() -> None:
    """The attributes a launcher starts commands with name every signal this process does not
    ignore (and SIGPIPE, SIGXFSZ, which Python ignores): with only those two named, glibc's
    child asks about each of the others before the exec (about 120 system calls a command,
    not 64; bench_shell)."""
    needs_glibc_spawner()
    spawner = spawn_glibc.libc_spawner()
    assert spawner is not None
    libc = ctypes.CDLL(None)
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        launcher = spawn_mod.launcher("/bin/sh", {b"PATH": b"/usr/bin:/bin"}, (), None)
        ignored = spawn_glibc.ignored_here()
    finally:
        signal.signal(signal.SIGHUP, hup)
    assert isinstance(launcher, spawn_glibc.GlibcLauncher)
    sigset = ctypes.create_string_buffer(512)
    assert libc.posix_spawnattr_getsigdefault(launcher._attr, sigset) == 0
    named = {int(sig) for sig in signal.valid_signals() if libc.sigismember(sigset, int(sig)) == 1}
    assert signal.SIGHUP in ignored and signal.SIGPIPE in ignored  # Python ignores SIGPIPE itself
    assert signal.SIGHUP not in named and {signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM} <= named
    kept = ignored - {signal.SIGPIPE, signal.SIGXFSZ}  # what stays ignored in a command
    assert named == {int(sig) for sig in signal.valid_signals()} - kept
    # glibc's own signals (sigismember will not say) are in the set too: bits 32 and 33.
    words = (ctypes.c_ulong * (512 // ctypes.sizeof(ctypes.c_ulong))).from_buffer(sigset)
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    internal = set(range(1, signal.NSIG)) - {int(sig) for sig in signal.valid_signals()}
    assert internal and all(words[(sig - 1) // bits] >> ((sig - 1) % bits) & 1 for sig in internal)
    assert spawn_glibc.signals_to_default(ignored) == named | internal


def test_environment_and_folder(path: str, spy: Spy, work: Path, batch: Path) -> None:
    proc = processor(path, work, 'pwd; echo "$BATCHTUI_SEQ $EXTRA"', env={"EXTRA": "yes"})
    assert stdout_of(proc, batch, seq=5).splitlines() == [os.path.realpath(work), "5 yes"]
    assert spy.took(path)


def test_item_variables_replace_inherited_ones_in_place(
    path: str, spy: Spy, work: Path, batch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHTUI_ATTEMPT", "inherited")
    monkeypatch.setenv("BATCHTUI_SEQ", "inherited")
    monkeypatch.setenv("AFTER", "x")
    # /proc/<pid>/environ: the environment exactly as exec gave it to the shell.
    proc = processor(path, work, "cat /proc/$$/environ > env.bin", env={"EXTRA": "1"})
    item = make_item(batch, seq=3)
    proc.run(item)
    entries = [e for e in (work / "env.bin").read_bytes().split(b"\0") if e]
    # As the dict Popen is given: inherited names keep their place, new ones follow in order.
    expected = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    expected[b"EXTRA"] = b"1"
    expected[b"BATCHTUI_ITEM_JSON"] = orjson.dumps({"seq": 3, "key": "v", "data": "v", "attempt": 1})
    expected[b"BATCHTUI_SEQ"] = b"3"
    expected[b"BATCHTUI_ATTEMPT"] = b"1"
    expected[b"BATCHTUI_BATCH_DIR"] = os.fsencode(str(batch))
    expected[b"BATCHTUI_ITEM_JSON_FILE"] = b""  # set (empty) unless the JSON is over 128 KiB
    assert entries == [k + b"=" + v for k, v in expected.items()]
    assert spy.took(path)


def test_undecodable_bytes_reach_the_command(path: str, spy: Spy, work: Path, batch: Path) -> None:
    # A template (from the command line) that is not UTF-8 is passed on byte for byte.
    literal = os.fsdecode(b"caf\xe9 \xff")
    processor(path, work, f"printf %s '{literal}' > out").run(make_item(batch))
    assert (work / "out").read_bytes() == b"caf\xe9 \xff"
    assert spy.took(path)


def test_values_exec_cannot_take_raise_as_popen_does(path: str, work: Path, batch: Path) -> None:
    with pytest.raises(ValueError, match="embedded null byte"):
        processor(path, work, "true \x00").run(make_item(batch))
    with pytest.raises(ValueError, match="illegal environment variable name"):
        processor(path, work, "true", env={"A=B": "x"}).run(make_item(batch))
    with pytest.raises(ValueError, match="embedded null byte"):
        processor(path, work, "true", env={"A": "x\x00y"}).run(make_item(batch))


def test_commands_enter_their_folder_in_the_child_wherever_this_process_is(
    spy: Spy, tmp_path: Path, work: Path, batch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch resumed from another folder runs its commands in the folder it was started from:
    posix_spawn enters it in the child (until stop 60 each such command went through Popen, 45%
    more of the engine's CPU). This process never changes folder; without a folder, commands
    run in this process's, as it is at each start. Through dash (``pwd``), and started directly
    with a relative redirection, which opens in the command's folder."""
    needs_glibc_spawner()
    real = os.path.realpath(work)
    monkeypatch.chdir(tmp_path)
    here = os.getcwd()
    proc = ShellProcessor("pwd", cwd=real)
    assert stdout_of(proc, batch) == real
    assert (spy.spawns, spy.popens) == (1, 0)
    assert os.getcwd() == here  # this process never changed folder
    (work / "in.txt").write_text("from the folder\n")
    copy = ShellProcessor("cat in.txt > out.txt", cwd=real)
    copy.run(make_item(batch, seq=1))
    assert (work / "out.txt").read_text() == "from the folder\n" and not (tmp_path / "out.txt").exists()
    assert (spy.spawns, spy.popens) == (1, 0)  # started directly (spawn_redirected: not counted)
    monkeypatch.chdir(work)  # the same folder as this process's: entered all the same
    assert stdout_of(proc, batch, seq=2) == real
    assert stdout_of(ShellProcessor("pwd"), batch, seq=3) == real
    monkeypatch.chdir(tmp_path)  # no folder given: this process's, as it is now
    assert stdout_of(ShellProcessor("pwd"), batch, seq=4) == os.path.realpath(tmp_path)
    assert (spy.spawns, spy.popens) == (4, 0)


def test_a_relative_path_entry_is_looked_up_in_the_commands_folder(
    spy: Spy, tmp_path: Path, work: Path, batch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PATH=bin:/usr/bin:/bin`` and a command ``env``: dash, in the command's folder, runs
    that folder's bin/env. Started without dash, the lookup must be made there too, not in this
    process's folder (which has no bin/): else /usr/bin/env ran instead."""
    needs_glibc_spawner()
    (work / "bin").mkdir()
    script = work / "bin" / "env"
    script.write_text('#!/bin/sh\necho "from the folder $PPID"\n')
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    env = {"PATH": "bin:/usr/bin:/bin"}
    real = os.path.realpath(work)
    monkeypatch.setattr(spawn_glibc, "DIRECT", True)
    if not spawn_glibc.direct.is_dash("/bin/sh"):
        pytest.skip("/bin/sh is not dash: every command goes through it")
    # Its parent is this process: started directly, the file dash would have run.
    assert stdout_of(ShellProcessor("env", cwd=real, env=env), batch) == f"from the folder {os.getpid()}"
    monkeypatch.setattr(spawn_glibc, "DIRECT", False)  # through dash: the same file
    assert stdout_of(ShellProcessor("env", cwd=real, env=env), batch, seq=1).startswith("from the folder ")
    assert spy.popens == 0


def test_a_folder_gone_since_is_named_in_the_error_as_popen_names_it(
    spy: Spy, tmp_path: Path, work: Path, batch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder removed after the processor was made: the start fails entering it, and the
    error names the folder (Popen's), not the shell (what posix_spawn's failure would name)."""
    needs_glibc_spawner()
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(work)
    before = open_fds()
    for template in ("pwd", "cat in.txt"):  # through dash, and a command dash would only start
        proc = ShellProcessor(template, cwd=str(gone))
        gone.rmdir()
        with pytest.raises(FileNotFoundError) as err:
            proc.run(make_item(batch))
        assert err.value.filename == str(gone)
        gone.mkdir()
    assert left_open(before) == set()
    assert spy.popens == 2


def test_a_shell_named_without_a_folder_is_looked_up_by_popen(spy: Spy, batch: Path) -> None:
    assert stdout_of(ShellProcessor("echo hi", shell="sh"), batch) == "hi"
    assert (spy.spawns, spy.popens) == (0, 1)


# -- results and errors ------------------------------------------------------------------------


def test_return_codes_and_signals(path: str, spy: Spy, work: Path, batch: Path) -> None:
    assert processor(path, work, "true").run(make_item(batch)) == ProcessOutput(None)
    with pytest.raises(CommandFailed) as failed:
        processor(path, work, "echo bad >&2; exit 3").run(make_item(batch, seq=1))
    assert (failed.value.exit_code, failed.value.stderr_tail) == (3, "bad\n")
    with pytest.raises(CommandKilled) as killed:
        processor(path, work, "kill -TERM $$").run(make_item(batch, seq=2))
    assert killed.value.signum == signal.SIGTERM
    with pytest.raises(CommandKilled) as killed:
        processor(path, work, "kill -KILL $$").run(make_item(batch, seq=3))
    assert killed.value.signum == signal.SIGKILL
    assert spy.took(path)


def test_a_missing_shell_raises_file_not_found(path: str, spy: Spy, work: Path, batch: Path) -> None:
    before = open_fds()
    proc = processor(path, work, "true", shell=str(work / "no-such-shell"))
    with pytest.raises(FileNotFoundError) as err:
        proc.run(make_item(batch))
    assert err.value.filename == str(work / "no-such-shell")
    not_exec = work / "not-exec"
    not_exec.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        processor(path, work, "true", shell=str(not_exec)).run(make_item(batch))
    assert left_open(before) == set()
    assert spy.took(path)


def test_too_big_a_command_is_a_value_error(path: str, spy: Spy, work: Path, batch: Path) -> None:
    # No one variable is too long, all of them are (exec's E2BIG for the total, ARG_MAX).
    limit = os.sysconf("SC_ARG_MAX")
    env = {f"BIG{i}": "x" * 100_000 for i in range(limit // 100_000 + 1)}
    before = open_fds()
    with pytest.raises(ValueError, match=r"and the environment \([\d,]+ bytes\) together are over"):
        processor(path, work, "true {}", env=env).run(make_item(batch, "x"))
    assert left_open(before) == set()
    assert spy.took(path)


def test_no_descriptor_or_zombie_is_left(path: str, spy: Spy, work: Path, batch: Path) -> None:
    proc = processor(path, work, "echo out; echo err >&2")
    before = open_fds()
    for seq in range(30):
        proc.run(make_item(batch, seq=seq))
    assert left_open(before) == set()
    assert not [p for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE]
    assert spy.took(path)


def test_closed_stdin_here_falls_back_to_popen(tmp_path: Path, batch: Path) -> None:
    """With fd 0 closed in the engine a new pipe takes number 0: Popen sorts that out."""
    code = (
        "import os, sys\n"
        "from batchtui.engine.shell.item import Item\n"
        "from batchtui.engine.shell.processor import ShellProcessor\n"
        "os.close(0)\n"
        "item = Item(seq=0, key='k', data='v', attempt=1, batch_dir=sys.argv[1])\n"
        "out = ShellProcessor('readlink /proc/$$/fd/0; echo hi; echo err >&2').run(item)\n"
        "print(out.result['stdout_tail'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(batch)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["/dev/null", "hi"]
    assert (batch / "logs" / "0.1.err").read_bytes() == b"err\n"


# -- kills reach the group ---------------------------------------------------------------------


def _wait_for(file: Path) -> list[int]:
    deadline = time.monotonic() + 10
    while True:
        text = file.read_text() if file.exists() else ""
        if text.endswith("\n") and len(text.split()) == 2:
            return [int(x) for x in text.split()]
        assert time.monotonic() < deadline, f"{file} not written"
        time.sleep(0.01)


def test_kill_reaches_background_grandchildren(path: str, spy: Spy, work: Path, batch: Path) -> None:
    # A grandchild in the background (a subshell's sleep) and a child in the foreground.
    proc = processor(
        path,
        work,
        "(sleep 30 & echo $! > {out}/bg.tmp; wait) & while [ ! -s {out}/bg.tmp ]; do sleep 0.01; done; "
        "echo $(cat {out}/bg.tmp) $$ > {out}/pids; sleep 30",
    )
    assert proc.kill(7) is False
    thread, box = run_in_thread(proc, make_item(batch, seq=7))
    grandchild, shell_pid = _wait_for(batch / "out" / "7" / "pids")
    assert proc.kill(7) is True
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(box["exc"], CommandKilled) and box["exc"].signum == signal.SIGKILL
    assert_gone_soon(grandchild)
    assert_gone_soon(shell_pid)
    assert proc.kill(7) is False
    assert spy.took(path)


def test_kill_all_reaches_a_shell_being_started(path: str, spy: Spy, work: Path, batch: Path) -> None:
    """A shell whose start is under way when kill_all() runs (spawned, not yet registered) dies
    as soon as it has started; it never runs on after a stop."""
    proc = processor(path, work, "echo $$ > {out}/pid; sleep 30")
    entered, release = threading.Event(), threading.Event()

    class Held:  # the real launcher, whose start waits until the test lets it go on
        def __init__(self, real: Any) -> None:
            self.real = real

        def start(self, *args: Any, **kwargs: Any) -> Any:
            entered.set()
            assert release.wait(30)
            return self.real.start(*args, **kwargs)

    proc._launcher = Held(proc._launcher)  # type: ignore[assignment]
    thread, box = run_in_thread(proc, make_item(batch, seq=4))
    assert entered.wait(30)
    assert proc.kill_all() == 1  # the item being started counts
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(box.get("exc"), CommandKilled), box
    pid_file = batch / "out" / "4" / "pid"
    if pid_file.exists() and pid_file.read_text().strip():
        assert_gone_soon(int(pid_file.read_text()))
    assert spy.took(path)


def test_kill_of_one_item_reaches_its_shell_being_started(path: str, spy: Spy, work: Path, batch: Path) -> None:
    """kill(seq) while that item's shell is being started (it may already run the command while
    its start returns, so a test or a user sees it running): it dies as soon as it has started."""
    proc = processor(path, work, "echo $$ > {out}/pid; sleep 30")
    entered, release = threading.Event(), threading.Event()

    class Held:  # the real launcher, whose start waits until the test lets it go on
        def __init__(self, real: Any) -> None:
            self.real = real

        def start(self, *args: Any, **kwargs: Any) -> Any:
            entered.set()
            assert release.wait(30)
            return self.real.start(*args, **kwargs)

    proc._launcher = Held(proc._launcher)  # type: ignore[assignment]
    thread, box = run_in_thread(proc, make_item(batch, seq=4))
    assert entered.wait(30)
    assert proc.kill(5) is False  # another item: nothing to kill
    assert proc.kill(4) is True
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(box.get("exc"), CommandKilled) and box["exc"].signum == signal.SIGKILL, box
    assert spy.took(path)


def test_kill_all_and_timeouts_reach_the_group(path: str, spy: Spy, work: Path, batch: Path) -> None:
    template = "sleep 30 & echo $! $$ > {out}/pids; sleep 30"
    proc = processor(path, work, template)
    runs = [run_in_thread(proc, make_item(batch, seq=seq)) for seq in (1, 2)]
    pids = [_wait_for(batch / "out" / str(seq) / "pids") for seq in (1, 2)]
    assert proc.kill_all() == 2
    for thread, box in runs:
        thread.join(5)
        assert isinstance(box["exc"], CommandKilled)
    for pid in (p for pair in pids for p in pair):
        assert_gone_soon(pid)

    timed = processor(path, work, template, timeout=0.5)
    with pytest.raises(ItemTimeout):
        timed.run(make_item(batch, seq=3))
    for pid in _wait_for(batch / "out" / "3" / "pids"):
        assert_gone_soon(pid)
    assert spy.took(path)


def test_background_children_die_when_the_shell_exits(path: str, spy: Spy, work: Path, batch: Path) -> None:
    proc = processor(path, work, "sleep 30 & echo $! > {out}/bg; echo done")
    assert stdout_of(proc, batch) == "done"
    assert_gone_soon(int((batch / "out" / "0" / "bg").read_text()))
    assert spy.took(path)


# -- threads and the spawn path's reused buffers -----------------------------------------------


def test_concurrent_items_each_get_their_own_command_and_environment(
    path: str, spy: Spy, work: Path, batch: Path
) -> None:
    proc = processor(path, work, 'echo {} "$BATCHTUI_SEQ"; echo "e$BATCHTUI_SEQ" >&2; exit $((BATCHTUI_SEQ % 3))')
    items = [make_item(batch, f"v{i}", seq=i) for i in range(200)]

    def run(item: Item) -> tuple[int, str, str]:
        try:
            out = proc.run(item)
        except CommandFailed as exc:
            return item.seq, str(exc.exit_code), exc.stderr_tail
        assert isinstance(out.result, dict)
        return item.seq, "0", out.result["stdout_tail"]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, items))
    for seq, code, text in results:
        assert code == str(seq % 3)
        assert text == (f"v{seq} {seq}" if code == "0" else f"e{seq}\n")
    assert spy.took(path)


def test_file_actions_not_kept_past_the_limit_are_freed_and_work(
    spy: Spy, batch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_glibc_spawner()
    monkeypatch.setattr(spawn_glibc, "ACTIONS_KEPT", 0)
    proc = ShellProcessor("ls /proc/self/fd; echo err >&2")
    for seq in range(20):
        assert stdout_of(proc, batch, seq=seq).split() == ["0", "1", "2", "3"]
    assert (spy.spawns, spy.popens) == (20, 0)
