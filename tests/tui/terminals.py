"""Real terminals for the drop tests: the TUI in a tmux pane of a private tmux server, or over a
real ``ssh -tt`` session to an sshd on a loopback port; and what a finished hand-over must show.

Each tmux server has its own socket (``tmux -L``), so killing it never touches anyone else's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil
import pytest

from batchtui.engine.batchdir import engine_alive

CLI = [sys.executable, "-m", "batchtui.tui.cli"]


def drain(fd: int, stop: threading.Event) -> None:
    """Read a pty's output until ``stop`` is set or it ends, so the app never blocks on a full pty."""
    while not stop.is_set():
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def wait_until(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def read_state(batch: Path) -> str:
    try:
        return str(orjson.loads((batch / "manifest.json").read_bytes())["state"])
    except (OSError, ValueError):
        return "?"


def tui_env(tmp: Path, out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_") or k == "BATCHTUI_SPAWNER"}
    env.update(
        {
            "BATCHTUI_OUTPUT_DIR": str(out),
            "XDG_CONFIG_HOME": str(tmp / "xdg"),
            "TEXTUAL_ANIMATIONS": "none",
            "TERM": "xterm-256color",
        }
    )
    return env


class Tmux:
    """One private tmux server running one command in an 80x24 pane."""

    def __init__(self, tmp: Path) -> None:
        self.tmux = need("tmux")
        self.socket = f"batchtui-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # A pane whose program ended stays, so a TUI that failed can be read (screen()).
        self.conf = tmp / "tmux.conf"
        self.conf.write_text("set -g remain-on-exit on\n")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tmux, "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=20,
        )

    def start(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        pairs = [f"{k}={v}" for k, v in env.items() if k in _PASSED or k.startswith(("BATCHTUI_", "XDG_"))]
        self._run("new-session", "-d", "-x", "80", "-y", "24", "-c", str(cwd), "--", "env", *pairs, *argv)

    def pane_pid(self) -> int:
        return int(self._run("list-panes", "-F", "#{pane_pid}").stdout.split()[0])

    def screen(self) -> str:
        done = self._run("capture-pane", "-p", check=False)
        return done.stdout if done.returncode == 0 else ""

    def keys(self, *keys: str) -> None:
        self._run("send-keys", *keys)

    def kill_server(self) -> None:
        self._run("kill-server", check=False)

    def kill_session(self) -> None:
        self._run("kill-session", check=False)


_PASSED = {"PATH", "HOME", "TERM", "TEXTUAL_ANIMATIONS", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ"}


@dataclass
class Sshd:
    """sshd on a loopback port with a host key and a client key made for the test."""

    port: int
    key: Path
    proc: subprocess.Popen[bytes]

    def argv(self, remote: str) -> list[str]:
        return [
            "ssh",
            "-tt",
            "-p",
            str(self.port),
            "-i",
            str(self.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "127.0.0.1",
            remote,
        ]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def start_sshd(tmp: Path) -> Sshd:
    """An sshd of our own (skips when sshd or ssh are missing or it cannot start)."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd is None:
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    need("ssh")
    need("ssh-keygen")
    d = tmp / "sshd"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_bytes((d / "client.pub").read_bytes())
    os.chmod(d / "authorized_keys", 0o600)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = d / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {d / 'host'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                f"PidFile {d / 'sshd.pid'}",
                "",
            ]
        )
    )
    with contextlib.suppress(OSError):
        os.makedirs("/run/sshd", exist_ok=True)  # the privilege separation dir
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=open(d / "log", "wb"))  # noqa: SIM115
    server = Sshd(port, d / "client", proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {(d / 'log').read_text()[-300:]}")
        probe = subprocess.run(
            [*server.argv("true")[:1], *server.argv("true")[2:]], capture_output=True, timeout=20, check=False
        )
        if probe.returncode == 0:
            return server
        time.sleep(0.2)
    server.stop()
    pytest.skip(f"cannot log in to the test sshd: {probe.stderr[-300:]!r}")


@dataclass
class Watch:
    """What the test saw of a batch after the drop (sampled until it finished)."""

    longest_orphaned_s: float = 0.0  # the longest time it was stopped with no engine
    holders: set[int] = field(default_factory=set)


def follow_until_finished(batch: Path, tui_pid: int, timeout: float) -> Watch:
    """Sample the batch every 20 ms until it is finished and no engine holds it."""
    seen = Watch()
    orphan_since: float | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(batch)
        holder = engine_alive(batch)
        if holder is not None:
            seen.holders.add(holder.pid)
        now = time.monotonic()
        if state == "stopped" and holder is None and gone(tui_pid):
            orphan_since = orphan_since if orphan_since is not None else now
            seen.longest_orphaned_s = max(seen.longest_orphaned_s, now - orphan_since)
        else:
            orphan_since = None
        if state == "finished" and holder is None:
            return seen
        time.sleep(0.02)
    raise AssertionError(
        f"batch {batch.name} is {read_state(batch)!r} after {timeout} s (engine: {engine_alive(batch)});"
        f" engine.log:\n{_tail(batch / 'engine.log')}"
    )


def assert_handed_over(
    batch: Path, *, n: int, tui_pid: int, item_procs: list[psutil.Process], seen: Watch, finished: bool = False
) -> None:
    """The batch ended finished under a background engine (or the TUI's own, ``finished``
    before the drop), and nothing of the TUI survived."""
    assert seen.longest_orphaned_s < 5.0, f"stopped with no engine for {seen.longest_orphaned_s:.1f} s"
    manifest = orjson.loads((batch / "manifest.json").read_bytes())
    assert manifest["state"] == "finished"
    lines = (batch / "results.jsonl").read_bytes().splitlines()
    seqs = [orjson.loads(line)["seq"] for line in lines]
    assert sorted(seqs) == list(range(n)), "every item completed exactly once"
    log = (batch / "engine.log").read_text() if (batch / "engine.log").exists() else ""
    assert "HAND-OFF FAILED" not in log, log
    pids = [h["pid"] for h in manifest["history"]]
    if finished:  # the engine in the app ended the batch before the drop: nothing to hand over
        assert pids[-1] == tui_pid, pids
        assert "TUI pid" not in log or "not handed over" in log, log
    elif pids[-1] == tui_pid:  # the TUI's engine ended the batch itself just as the terminal went
        assert "not handed over" in log or "handed the batch" in log, log
    else:
        assert "handed the batch to a background engine" in log or "not handed over" in log, log
    assert gone(tui_pid)
    wait_until(lambda: all(gone(p.pid) for p in item_procs), 10, "the TUI engine's item processes end")
    # No engine started for this batch is left (the background one exits when it finishes).
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.info["cmdline"] or [])
            if batch.name in cmd and "batchtui" in cmd:
                wait_until(lambda p=proc: gone(p.pid), 10, f"engine {proc.pid} ({cmd}) ends")


def item_processes(tui_pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(tui_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def process_of(pid: int) -> psutil.Process | None:
    """The process with ``pid`` now, to signal later with :func:`kill_quietly` (None: gone)."""
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def kill_quietly(proc: psutil.Process | None, sig: int = signal.SIGKILL) -> None:
    """Signal ``proc`` unless it has ended. A process object, taken when its pid was learned,
    and not a pid: pids wrap within the hour here (pid_max 32768), and a test's clean-up that
    SIGKILLed a pid after its process had ended could hit whatever had the pid since (a CI run
    died so, mid-test)."""
    if proc is None:
        return
    with contextlib.suppress(psutil.Error):
        if proc.is_running():  # the same process: its start time is checked
            proc.send_signal(sig)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(none)"
