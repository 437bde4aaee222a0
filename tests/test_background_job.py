"""`batchtui run ... &` in an interactive shell: a background job of its terminal runs headless.

A TUI in a background process group is stopped by the kernel at its first touch of the
terminal (SIGTTOU): the run sat "Stopped (signal)" in `jobs`, its batch locked, until `fg`.
Here a small launcher plays the interactive shell: it takes a pty as its controlling terminal
(its process group is the foreground one) and starts batchtui in a process group of its own,
as job control does for `&`; a child that stops is reported, not waited on forever."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from .conftest import CLI, cli_env, only_batch, read_jsonl

#: The shell's part: session leader on the pty, the job in its own group, waited on with
#: WUNTRACED. Prints "EXIT n" or "STOPPED sig" (then kills the job).
LAUNCHER = """
import fcntl, os, signal, sys, termios
os.setsid()
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
try:
    os.setpgid(pid, pid)  # as a shell does; the child's own call may have come first
except PermissionError:  # the child has exec'd already (its own setpgid came first)
    pass
_, status = os.waitpid(pid, os.WUNTRACED)
if os.WIFSTOPPED(status):
    print("STOPPED", os.WSTOPSIG(status), flush=True)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
else:
    print("EXIT", os.waitstatus_to_exitcode(status), flush=True)
"""


def _as_background_job(args: list[str], out_dir: Path, cwd: Path, timeout: float = 120) -> str:
    """``python -m batchtui.tui.cli ARGS`` as a background job of a fresh pty; all it and the
    launcher wrote there."""
    master, slave = pty.openpty()
    env = {**cli_env(out_dir), "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *CLI[1:], *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    text = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the pty's other end closed: everything was read
                    break
                if not chunk:
                    break
                text += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=10)
    finally:
        proc.kill()
        os.close(master)
    return text.decode(errors="replace")


def test_a_run_started_as_a_background_job_runs_headless_to_its_end(tmp_path: Path, out_dir: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\nc\n")
    said = _as_background_job(["run", str(items), "--cmd", "echo {}"], out_dir, tmp_path)
    assert "STOPPED" not in said, said
    assert "EXIT 0" in said, said
    assert "started in the background: progress lines instead of the dashboard" in said
    batch = only_batch(out_dir)
    assert f"batchtui watch {batch.name}" in said
    assert sorted(str(r["key"]) for r in read_jsonl(batch / "results.jsonl")) == ["a", "b", "c"]


def test_watch_as_a_background_job_says_it_needs_the_foreground(tmp_path: Path, out_dir: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\n")
    subprocess.run([*CLI, "run", str(items), "--cmd", "true"], env=cli_env(out_dir), capture_output=True, check=True)
    said = _as_background_job(["watch"], out_dir, tmp_path)
    assert "STOPPED" not in said, said
    assert "EXIT 2" in said, said
    assert "run it in the foreground, not with &" in said
