"""The CLI's error line: every batchtui error carries its own message, hint and exit code.

The group catches one class (``BatchtuiError``) and shows ``describe()`` with ``exit_code``:
no lookup of error classes among the loaded modules, no traceback for a damaged batch file
or store, and a new error says its own way out without touching the CLI.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchtui.engine.errors import EXIT_USAGE, BatchtuiError, UserError
from batchtui.engine.files import DamagedFile
from batchtui.engine.models import NewerFormat
from batchtui.engine.store import StoreError
from batchtui.tui.cli import main, steering

from .conftest import CLI, cli_env, only_batch

STORE_HINT = "the item store cannot be read; `batchtui show` says what the manifest holds"


def _cli(args: list[str], out: Path) -> Any:
    return CliRunner().invoke(main, [*args, "-o", str(out)], prog_name="batchtui")


def test_an_error_shows_its_message_hint_and_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Stuck(BatchtuiError):
        exit_code = 4
        hint = "try again when the disk is back"

    def stuck(*_args: Any, **_kwargs: Any) -> None:
        raise Stuck("the batch is \x1b[2Jstuck")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(steering, "resolve_batch", stuck)
    result = _cli(["pause", "some-batch"], tmp_path / "out")
    assert result.exit_code == 4
    assert result.stderr == "error: the batch is \\x1b[2Jstuck\n  try again when the disk is back\n"
    assert isinstance(result.exception, SystemExit)  # the error line, no traceback


def test_each_error_says_its_own_message_and_way_out(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    assert (
        DamagedFile(path, "line 1: bad JSON").describe()
        == f"{path} is damaged (line 1: bad JSON) and has no good backup"
    )
    assert StoreError("items.db: no such table").describe() == f"items.db: no such table\n  {STORE_HINT}"
    newer = NewerFormat(9, path)
    assert newer.describe() == str(newer) and "upgrade batchtui" in str(newer)
    assert UserError("bad flag").describe() == "bad flag"
    assert (DamagedFile.exit_code, StoreError.exit_code, NewerFormat.exit_code) == (EXIT_USAGE,) * 3


@pytest.fixture
def batch(tmp_path: Path, out_dir: Path, invoke_cli: Any) -> Path:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    done = invoke_cli(["run", str(items), "--cmd", "true", "--headless"])
    assert done.returncode == 0, done.stderr
    return only_batch(out_dir)


def test_a_damaged_manifest_and_backup_is_one_line(batch: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(batch.parent)
    for name in ("manifest.json", "manifest.json.bak"):
        (batch / name).write_text("{not json")
    result = _cli(["show", str(batch)], out_dir)
    assert result.exit_code == EXIT_USAGE
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {batch / 'manifest.json'} is damaged (")
    assert line.endswith(") and has no good backup")


def test_a_newer_manifest_is_refused_with_its_own_message(
    batch: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(batch.parent)
    manifest = json.loads((batch / "manifest.json").read_text())
    manifest["version"] = 99
    for name in ("manifest.json", "manifest.json.bak"):
        (batch / name).write_text(json.dumps(manifest))
    result = _cli(["export", str(batch)], out_dir)
    assert result.exit_code == EXIT_USAGE
    assert "made by a newer batchtui (format 99" in result.stderr
    assert "no good backup" not in result.stderr and "Traceback" not in result.output


def test_an_unreadable_store_names_the_way_out(batch: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(batch.parent)
    (batch / "items.db").unlink()
    result = _cli(["export", str(batch)], out_dir)
    assert result.exit_code == EXIT_USAGE
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {batch / 'items.db'} does not exist; ")
    assert lines[1:] == [f"  {STORE_HINT}"]


@pytest.fixture
def big_batch(tmp_path: Path, out_dir: Path, invoke_cli: Any) -> Path:
    """3,000 finished items: their export (~0.8 MB) is far past a pipe's buffer."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{i:05d}-{'x' * 60}\n" for i in range(3000)))
    procs = Path(__file__).parent / "procs.py"
    done = invoke_cli(["run", str(items), "--call", f"{procs}:noop", "--executor", "thread", "--headless"])
    assert done.returncode == 0, done.stderr
    return only_batch(out_dir)


def test_a_reader_that_goes_away_ends_the_output_quietly_with_sigpipes_code(big_batch: Path, out_dir: Path) -> None:
    """`batchtui export B | head -1`: the reader closes the pipe long before the end. The export
    stops, says nothing, and exits 141 (128 + SIGPIPE, as cat does under pipefail), not 1,
    which would read as "some items failed"."""
    proc = subprocess.Popen(
        [*CLI, "export", big_batch.name, "-o", str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(out_dir),
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b'{"seq": 0')
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert err == b""


@pytest.mark.parametrize("verb", [["export", "{batch}"], ["ls"], ["show", "{batch}"], ["--help"]])
def test_output_to_a_full_disk_is_one_line_and_exit_2(big_batch: Path, out_dir: Path, verb: list[str]) -> None:
    """`batchtui ls > /dev/full`: every verb's output can fail for want of room. One error line
    on stderr and exit 2, never a traceback (nor Python's second complaint at exit)."""
    args = [a.replace("{batch}", big_batch.name) for a in verb]
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [*CLI, *args, "-o", str(out_dir)],
            stdout=full,
            stderr=subprocess.PIPE,
            env=cli_env(out_dir),
            timeout=60,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.decode() == "error: cannot write the output: No space left on device\n"


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--show-commands", "5"], "--show-commands only applies"),  # its default's value, given: refused
        (["--max-size-mb", "3", "--extensions", ".pdf"], "--max-size-mb, --extensions only apply"),
    ],
)
def test_dry_run_options_without_dry_run_are_refused_before_a_batch_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "items.txt").write_text("a\nb\n")
    result = _cli(["run", "items.txt", "--cmd", "true", "--headless", *flags], tmp_path / "out")
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"{named} with --dry-run" in result.stderr
    assert not (tmp_path / "out").exists()  # no batch made, nothing run
    dry = _cli(["run", "items.txt", "--cmd", "true", "--dry-run", *flags], tmp_path / "out")
    assert dry.exit_code == 0, dry.output


def _interrupt(proc: subprocess.Popen[str], ready: Any, within: float = 60.0) -> tuple[int, str]:
    """Send SIGINT to ``proc`` once ``ready()`` holds; its exit code and stderr."""
    import signal
    import time

    deadline = time.monotonic() + within
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


#: The CLI, with SIGINT's default action whatever this process does with it (a process that
#: ignores SIGINT passes that on, and Python then raises no KeyboardInterrupt).
CLI_WITH_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'batchtui.tui.cli', *sys.argv[1:]])",
]


def test_a_ctrl_c_while_the_sources_are_read_makes_no_batch_and_exits_130(tmp_path: Path) -> None:
    """Before, click's "Aborted!" and exit 1 (which says "some items failed")."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*CLI_WITH_SIGINT, "run", "-", "--cmd", "true", "--headless"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(out),
    )
    assert proc.stdin is not None
    proc.stdin.write("a\nb\n")
    proc.stdin.flush()  # and left open: the enqueue waits for more
    code, err = _interrupt(proc, lambda: out.is_dir() and any(out.iterdir()))
    assert code == 130, err
    assert "interrupted while reading the sources: no batch was made" in err
    assert "Aborted" not in err and "Traceback" not in err
    assert [p for p in out.iterdir() if p.is_dir()] == []


#: The CLI, with a SIGINT sent to itself when click is first imported (before any verb runs).
CLI_INTERRUPTED_IN_IMPORTS = [
    sys.executable,
    "-c",
    "import os, runpy, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "class Finder:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'click':\n"
    "            sys.meta_path.remove(self)\n"
    "            os.kill(os.getpid(), signal.SIGINT)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Finder())\n"
    "sys.argv[0] = 'batchtui'\n"
    "runpy.run_module('batchtui.tui.cli', run_name='__main__', alter_sys=True)\n",
]


def test_a_ctrl_c_while_the_cli_imports_click_exits_130_with_one_line(tmp_path: Path) -> None:
    """Before, Python's traceback from inside click's import, and death by SIGINT."""
    done = subprocess.run(
        [*CLI_INTERRUPTED_IN_IMPORTS, "ls"],
        env=cli_env(tmp_path / "out"), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


def test_a_ctrl_c_a_verb_does_not_handle_exits_130_with_one_line(tmp_path: Path) -> None:
    """`logs -f` of an item that never ends, interrupted: one line, exit 130."""
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("a\n")
    made = subprocess.run(
        [*CLI, "run", str(tmp_path / "items.txt"), "--cmd", "echo started; sleep 60", "--detach"],
        env=cli_env(out), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    batch = only_batch(out)
    proc = subprocess.Popen(
        [*CLI_WITH_SIGINT, "logs", str(batch), "0", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(out),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        code, err = _interrupt(proc, lambda: True)
        assert (code, err.strip()) == (130, "interrupted")
    finally:
        # The item is killed, the detached engine ends.
        skipped = subprocess.run(
            [*CLI, "skip", str(batch), "0"], env=cli_env(out), capture_output=True, timeout=60, check=False
        )
        assert skipped.returncode == 0, skipped.stderr
        waited = subprocess.run(
            [*CLI, "wait", str(batch)], env=cli_env(out), capture_output=True, timeout=60, check=False
        )
        assert waited.returncode == 1, waited.stderr  # ended: the one item skipped


@pytest.mark.parametrize(
    "verb",
    [
        ["show"],
        ["export"],
        ["errors"],
        ["skip", "{id}", "1"],
        ["recover", "{id}"],
        ["check", "--batch", "{id}"],
        ["add", "{id}", "{more}"],  # a writer: its open (journal_mode=WAL) is what waits
        ["logs", "{id}", "0"],
        ["retry", "{id}"],
        ["prioritize", "{id}", "1"],
        ["resume", "{id}", "--headless"],
    ],
)
def test_a_store_another_process_holds_locked_is_said_so_not_called_damaged(tmp_path: Path, verb: list[str]) -> None:
    """items.db locked by another process (an engine stopped with Ctrl-Z while it opens it,
    say): each reader waits 2 s, then says so. It said "not a readable batchtui store" or
    "damaged", with `recover` as the way out (CI caught an engine SIGSTOPped in that window)."""
    import sqlite3

    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("a\nb\nc\n")
    made = subprocess.run(
        [*CLI, "run", str(tmp_path / "items.txt"), "--cmd", "true", "--headless"],
        env=cli_env(out), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    batch = only_batch(out)
    holder = sqlite3.connect(batch / "items.db", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        (tmp_path / "more.txt").write_text("d\n")
        args = [a.replace("{id}", batch.name).replace("{more}", str(tmp_path / "more.txt")) for a in verb]
        done = subprocess.run(
            [*CLI, *args, "-o", str(out)] if verb[0] != "check" else [*CLI, *args],
            env=cli_env(out), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        holder.close()
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "is locked by another process" in text and "Ctrl-Z or SIGSTOP" in text, text
    assert "batchtui recover" not in text, text  # not the way out: nothing is damaged
    assert "damaged" not in text and "not a readable batchtui store" not in text, text
    assert not list(batch.glob("items.db.corrupt-*"))


def test_a_damaged_manifest_read_from_its_backup_is_warned_once_per_command(tmp_path: Path) -> None:
    """show warned twice and export three times: the same manifest reached by a relative and an
    absolute path made two messages."""
    out = tmp_path / "batch_output"
    (tmp_path / "items.txt").write_text("a\nb\n")
    env = {k: v for k, v in cli_env(out).items() if k != "BATCHTUI_OUTPUT_DIR"}  # ./batch_output, relative
    made = subprocess.run(
        [*CLI, "run", "items.txt", "--cmd", "true", "--headless", "--name", "w"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (batch,) = [p for p in out.iterdir() if p.is_dir()]
    with (batch / "manifest.json").open("a") as fh:
        fh.write("{}x")
    for verb in (["show", "w"], ["export", "w"], ["errors", "w"]):
        done = subprocess.run(
            [*CLI, *verb], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("manifest.json is damaged") == 1, (verb, done.stderr)
        assert f"{batch}/manifest.json is damaged" in done.stderr  # the absolute path


#: The CLI, with a SIGTERM sent to itself inside ``start`` of the module named first (the
#: reaper, the control watcher), once the attribute named second of its object is set.
CLI_SIGTERM_INSIDE_START_OF = [
    sys.executable,
    "-c",
    "import os, runpy, signal, sys\n"
    "target, after = sys.argv.pop(1), sys.argv.pop(1)\n"
    "def inside(frame, event, arg):\n"
    "    if event == 'line' and getattr(frame.f_locals.get('self'), after, None) is not None:\n"
    "        sys.settrace(None)\n"
    "        frame.f_trace = None\n"
    "        os.kill(os.getpid(), signal.SIGTERM)\n"
    "    return inside\n"
    "def tracer(frame, event, arg):\n"
    "    code = frame.f_code\n"
    "    return inside if code.co_name == 'start' and code.co_filename.endswith(target) else None\n"
    "sys.settrace(tracer)\n"
    "sys.argv[0] = 'batchtui'\n"
    "runpy.run_module('batchtui.tui.cli', run_name='__main__', alter_sys=True)\n",
]


@pytest.mark.parametrize(("module", "after"), [("engine/reaper.py", "_write_fd"), ("engine/control.py", "batch_dir")])
def test_a_sigterm_as_the_engine_starts_its_helpers_exits_130_and_the_batch_resumes(
    tmp_path: Path, module: str, after: str
) -> None:
    """A SIGTERM inside the step that makes and starts the reaper (or the control watcher) left
    close() one half started: StopIteration, "cannot join thread before it is started", a
    traceback and exit 1."""
    (tmp_path / "items.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [*CLI_SIGTERM_INSIDE_START_OF, module, after, "run", str(tmp_path / "items.txt"), "--cmd", "true", "--headless"],
        env=cli_env(out), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    resumed = subprocess.run(
        [*CLI, "resume", only_batch(out).name, "--headless"],
        env=cli_env(out), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_sigterm_or_sighup_while_the_cli_imports_click_exits_130_with_one_line(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Before, death by the signal's default action (143, 129) with nothing said."""
    wrapper = [*CLI_INTERRUPTED_IN_IMPORTS]
    wrapper[2] = wrapper[2].replace("signal.SIGINT)", f"signal.{sig.name})")
    done = subprocess.run(
        [*wrapper, "ls"], env=cli_env(tmp_path / "out"), capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (130, "interrupted\n")
