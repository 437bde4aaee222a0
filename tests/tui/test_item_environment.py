"""The dashboard's display options never reach the items: a run under the TUI with
``--color-system`` gives its commands and callables the environment batchtui was started with.

Before, ``--color-system none`` put ``NO_COLOR=1`` and ``TEXTUAL_COLOR_SYSTEM`` into every
item's environment, and ``truecolor`` took away a ``NO_COLOR`` the user had set (a command
honouring it then wrote colour escapes into its results).
"""

from __future__ import annotations

import os
import pty
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import engine_alive

ECHO = 'printf "%s %s" "${{NO_COLOR-unset}}" "${{TEXTUAL_COLOR_SYSTEM-unset}}"'
CALLABLE = """\
import os


def _seen():
    return {"seen": f"{os.environ.get('NO_COLOR', 'unset')} {os.environ.get('TEXTUAL_COLOR_SYSTEM', 'unset')}"}


def seen(item):
    return _seen()


def seen_chunk(items):
    return [_seen() for _ in items]
"""


def _run_under_the_tui(tmp_path: Path, args: list[str], no_color: str | None) -> list[str]:
    """``batchtui --color-system ... run ...`` on a terminal (the engine runs in the TUI's
    process), quit once the batch has finished; what each item saw, in seq order."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(6)))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_") or k == "BATCHTUI_SPAWNER"}
    env.pop("TEXTUAL_COLOR_SYSTEM", None)
    env.pop("NO_COLOR", None)
    if no_color is not None:
        env["NO_COLOR"] = no_color
    env.update({"BATCHTUI_OUTPUT_DIR": str(out), "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"})
    pid, fd = pty.fork()
    if pid == 0:  # the child: batchtui on a terminal
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "batchtui.tui.cli", *args, str(items)], env)
    stop = threading.Event()
    screen = bytearray()  # what the app drew: it is told its engine ended before it quits at once
    reader = threading.Thread(target=_keep, args=(fd, stop, screen), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        batch = None
        state = None
        while time.monotonic() < deadline:
            dirs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
            if dirs and (dirs[0] / "manifest.json").exists():
                batch = dirs[0]
                state = orjson.loads((batch / "manifest.json").read_bytes())["state"]
                if state == "finished" and engine_alive(batch) is None:
                    break
            time.sleep(0.1)
        assert batch is not None and state == "finished", state
        # The dashboard shows FINISHED from the manifest, maybe before the engine's thread has let
        # go of the batch: q then waits for that thread (it used to ask whether to stop or hand
        # off the engine, and two CI runs waited on that dialog: test_engine_in_app has the case).
        while b"FINISHED" not in screen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"FINISHED" in screen
        os.write(fd, b"q")
        quit_by = time.monotonic() + 30
        while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0:  # bounded: a hang says what the app showed
            assert time.monotonic() < quit_by, f"q did not end the app; its screen ends {bytes(screen[-1500:])!r}"
            time.sleep(0.05)
        status = ended[1]
        pid = -1
        assert os.waitstatus_to_exitcode(status) == 0
        lines = [orjson.loads(line) for line in (batch / "results.jsonl").read_bytes().splitlines()]
        return [
            str(line["result"].get("seen") or line["result"]["stdout_tail"])
            for line in sorted(lines, key=lambda r: r["seq"])
        ]
    finally:
        stop.set()
        os.close(fd)
        if pid > 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)


def _keep(fd: int, stop: threading.Event, screen: bytearray) -> None:
    """As terminals.drain, keeping what was read."""
    while not stop.is_set():
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        screen.extend(chunk)


@pytest.mark.parametrize(
    ("color", "no_color", "seen"),
    [
        ("none", None, "unset unset"),  # the dashboard's NO_COLOR is not the items'
        ("truecolor", "1", "1 unset"),  # the user's NO_COLOR is kept for them
        ("256", None, "unset unset"),
    ],
)
def test_shell_items_see_the_environment_batchtui_was_started_with(
    tmp_path: Path, color: str, no_color: str | None, seen: str
) -> None:
    args = ["--color-system", color, "run", "--cmd", ECHO, "-j", "2"]
    assert _run_under_the_tui(tmp_path, args, no_color) == [seen] * 6


@pytest.mark.parametrize(
    "how",
    [
        ["--call", "envcall.py:seen", "--executor", "process"],  # workers started ahead of the run, adopted
        # none adopted: the engine starts them, from the dashboard's process
        ["--call", "envcall.py:seen_chunk", "--chunk-size", "1000", "--executor", "process"],
        ["--call", "envcall.py:seen", "--executor", "thread"],  # in the dashboard's process itself
    ],
)
def test_callables_see_it_too(tmp_path: Path, how: list[str]) -> None:
    (tmp_path / "envcall.py").write_text(CALLABLE)
    args = ["--color-system", "none", "run", *how, "-j", "2"]
    assert _run_under_the_tui(tmp_path, args, None) == ["unset unset"] * 6
