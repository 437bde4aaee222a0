"""The ``batchtui`` process skips the interpreter's teardown only when nothing can be lost by it.

tui/cli/entry.py ends the process with ``os._exit`` after a verb: no module is finalized, no
object freed. These tests run real processes and tell the two exits apart by a sentinel whose
``__del__`` writes a file: Python's teardown runs it, ``os._exit`` does not. Each also checks
what an exit must still do: the atexit functions, every byte of stdout, the exit status, a
non-daemon thread's end, and a ``--call`` module's own ``__del__`` (its process takes Python's exit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import cli_env

#: Runs before the CLI in the child: a sentinel finalized only by Python's teardown, and an
#: atexit function (which both exits run). Then a test's ``extra`` code, then the entry point.
PRELUDE = """
import atexit, sys
from pathlib import Path
here = Path(sys.argv.pop(1))
class Sentinel:
    def __init__(self, path):
        self.path = str(path)
    def __del__(self, _open=open):  # the module's globals may be gone by then: its own refs
        with _open(self.path, "w") as f:
            f.write("yes")
sentinel = Sentinel(here / "finalized")
atexit.register(lambda: (here / "atexit").write_text("yes"))
"""


def _run(tmp_path: Path, args: list[str], extra: str = "", call: str = "") -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path / "out")
    env.pop("PYTHONUNBUFFERED", None)  # stdout to a pipe is block-buffered, as for a user's script
    code = PRELUDE + extra + (call or "from batchtui.tui.cli.entry import run\nsys.argv[0] = 'batchtui'\nrun()\n")
    return subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def _items(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"line-{i}\n" for i in range(n)))
    return path


def test_a_run_exits_without_teardown_and_loses_no_output(tmp_path: Path) -> None:
    items = _items(tmp_path, 40)
    proc = _run(tmp_path, ["run", str(items), "--as", "lines", "--cmd", "echo {}", "--headless", "--json"])
    assert proc.returncode == 0, proc.stderr
    # stdout is a pipe, so block-buffered: without the flush before os._exit it would be empty.
    summary = json.loads(proc.stdout)
    assert summary["totals"]["complete"] == 40
    assert (tmp_path / "atexit").read_text() == "yes"
    assert not (tmp_path / "finalized").exists(), "the interpreter was finalized: the fast exit was not taken"
    batch = Path(summary["batch_dir"])
    assert len((batch / "results.jsonl").read_text().splitlines()) == 40
    # The store was closed by the engine, not by finalization: no write-ahead log is left over.
    assert not (batch / "items.db-wal").exists()


def test_an_error_keeps_its_status_and_message(tmp_path: Path) -> None:
    proc = _run(tmp_path, ["show", "no-such-batch"])
    assert proc.returncode == 2
    assert "error: no batch 'no-such-batch'" in proc.stderr
    assert not (tmp_path / "finalized").exists()
    assert (tmp_path / "atexit").read_text() == "yes"


def test_a_message_as_exit_code_is_printed_with_status_1(tmp_path: Path) -> None:
    proc = _run(tmp_path, [], call="from batchtui.tui.cli.entry import leave\nleave('gave up: disk gone')\n")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "gave up: disk gone"
    assert not (tmp_path / "finalized").exists()


def test_what_is_still_buffered_is_written(tmp_path: Path) -> None:
    """click flushes what it echoes; anything else written to stdout (a print, a library's
    output) sits in the buffer until the exit flushes it."""
    call = "sys.stdout.write('a short tail')\nfrom batchtui.tui.cli.entry import leave\nleave(0)\n"
    proc = _run(tmp_path, [], call=call)
    assert proc.returncode == 0
    assert proc.stdout == "a short tail"
    assert not (tmp_path / "finalized").exists()


def test_a_live_thread_is_waited_for(tmp_path: Path) -> None:
    """Python waits for its non-daemon threads before it exits; so does the fast exit, by not
    being taken while one is alive."""
    extra = """
import threading, time
def late():
    time.sleep(0.3)
    (here / "thread").write_text("done")
threading.Thread(target=late).start()
"""
    proc = _run(tmp_path, ["--version"], extra=extra)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "thread").read_text() == "done"


def test_a_process_that_ran_user_code_is_finalized(tmp_path: Path) -> None:
    """A --call module may rely on Python's teardown (a ``__del__`` that cleans up): a process
    that ran user code ends the normal way."""
    (tmp_path / "tally.py").write_text(
        "import pathlib\n"
        "class Cleanup:\n"
        "    def __del__(self):\n"
        "        pathlib.Path('cleaned').write_text('yes')\n"
        "KEEP = Cleanup()\n"
        "def count(item):\n"
        "    return len(item.data)\n"
    )
    items = _items(tmp_path, 25)
    args = ["run", str(items), "--as", "lines", "--call", "tally.py:count", "--executor", "process", "--headless"]
    proc = _run(tmp_path, [*args, "--json"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["complete"] == 25
    assert (tmp_path / "cleaned").read_text() == "yes"


def test_the_console_script_and_python_m_use_the_entry(tmp_path: Path) -> None:
    """`batchtui` and `python -m batchtui.tui.cli` end through tui/cli/entry.py."""
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "batchtui"]
    assert script.value == "batchtui.tui.cli.entry:run"
    main_py = Path(__import__("batchtui.tui.cli", fromlist=["x"]).__file__).with_name("__main__.py")
    assert "from .entry import run" in main_py.read_text()


def test_a_closed_stdout_or_stderr_is_no_traceback(tmp_path: Path) -> None:
    """Started with its stdout (or stderr) closed (``batchtui --version >&-``), Python gives
    ``sys.stdout = None``; the exit flushed it all the same and ended in an AttributeError
    traceback with status 1. Such a descriptor is now opened on /dev/null at start."""
    for closed in (">&-", "2>&-"):
        script = f'exec "$@" {closed}'
        done = subprocess.run(
            ["sh", "-c", script, "sh", sys.executable, "-m", "batchtui.tui.cli", "--version"],
            capture_output=True,
            text=True,
            env=cli_env(tmp_path / "out"),
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (closed, done.stderr)
        assert "Traceback" not in done.stderr
        if closed == "2>&-":
            assert done.stdout.startswith("batchtui, version ")


def test_a_run_with_stdin_closed_runs_its_batch(tmp_path: Path) -> None:
    """``batchtui run ... <&-`` (a cron job or daemon without stdin): ``sys.stdin`` was None, the
    check for a terminal failed with a traceback after the batch was created, and the batch was
    left created and never run. Now stdin is /dev/null: no terminal, so the run is headless."""
    items = _items(tmp_path, 3)
    out = tmp_path / "out"
    done = subprocess.run(
        [
            "sh",
            "-c",
            'exec "$@" <&-',
            "sh",
            sys.executable,
            "-m",
            "batchtui.tui.cli",
            "run",
            str(items),
            "--cmd",
            "true",
        ],
        capture_output=True,
        text=True,
        env=cli_env(out),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    (batch,) = out.iterdir()
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["state"] == "finished" and manifest["totals"]["complete"] == 3
