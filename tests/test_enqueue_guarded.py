"""A batch whose sources `run` is still reading is that run's: nothing takes it over meanwhile.

Before, the batch was unlocked until its engine started: a `resume` in another shell took it
over ("the previous engine died while enqueuing"), both enqueued the same source (hundreds of
thousands of "duplicates dropped"), and the `run` then failed; `cleanup` removed it under the
reading run (a traceback); a SIGTERM or an SSH drop (SIGHUP) killed the run silently and left a
batch whose views said "Total 0".
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CLI, cli_env

LINES = 120_000  # more than a chunk of the enqueue: the first items are in items.db while it reads


def _reading_run(out: Path) -> tuple[subprocess.Popen[str], Path]:
    """`run -` with stdin held open: it reads its source until the test closes it; its batch."""
    (out.parent / "noop.py").write_text("def noop(item):\n    return None\n")
    proc = subprocess.Popen(
        [*CLI, "run", "-", "--call", str(out.parent / "noop.py:noop"), "--executor", "thread", "--headless"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(out),
    )
    assert proc.stdin is not None
    proc.stdin.write("".join(f"line {i}\n" for i in range(LINES)))
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while True:
        dirs = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
        if dirs and (dirs[0] / "items.db").exists() and _stored(dirs[0]):
            return proc, dirs[0]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch was never made"
        time.sleep(0.02)


def _stored(batch: Path) -> int:
    """How many items the enqueue has committed so far (0 while items.db is being made)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    except sqlite3.Error:
        return 0


def _cli(args: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=cli_env(out), capture_output=True, text=True, timeout=60, check=False)


def test_nothing_takes_over_or_removes_a_batch_whose_sources_are_being_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, batch = _reading_run(out)
    try:
        named = _cli(["resume", batch.name, "--headless"], out)
        assert named.returncode == 2 and f"is being run by pid {proc.pid}" in named.stderr, named.stderr
        latest = _cli(["resume", "--headless"], out)  # the newest resumable batch: not this one
        assert latest.returncode != 0 and "resuming" not in latest.stderr, latest.stderr
        for args in (["add", batch.name, "-"], ["recover", batch.name, "--force"]):
            done = _cli(args, out)
            assert done.returncode == 2 and f"pid {proc.pid}" in done.stderr, (args, done.stderr)
            assert "Traceback" not in done.stderr
        # A steering command waits in control.jsonl for the engine this run becomes.
        skipped = _cli(["skip", batch.name, "0", "--wait", "0.5"], out)
        assert skipped.returncode == 1 and "not acknowledged" in skipped.stderr, skipped.stderr
        swept = _cli(["cleanup", "--max-age-days", "0", "--include-unfinished"], out)
        assert swept.returncode == 0, swept.stderr
        assert batch.is_dir()
    finally:
        assert proc.stdin is not None
        proc.stdin.write("last\n")
        proc.stdin.close()
        proc.wait(timeout=120)
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert proc.returncode == 1, err  # one item skipped
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["state"] == "finished" and manifest["duplicates_dropped"] == 0
    assert (manifest["totals"]["complete"], manifest["totals"]["skipped"]) == (LINES, 1)
    assert [h["action"] for h in manifest["history"]] == ["run"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_sigterm_or_hangup_while_the_sources_are_read_is_an_interrupt(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "out"
    proc, _ = _reading_run(out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted while reading the sources: no batch was made" in err and "Traceback" not in err
    assert [p for p in out.iterdir() if p.is_dir()] == []


@pytest.mark.parametrize("when", ["as the folder is made", "as create returns"])
def test_a_ctrl_c_just_after_the_batch_folder_is_made_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The folder was made before the guarded part began: a Ctrl-C landing in between (seen under
    load in the CLI's own Ctrl-C test) left an empty batch folder behind."""
    import os

    from batchtui.engine import batchdir
    from batchtui.engine.config import load_config
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import shell_spec
    from batchtui.engine.sources import build_spec

    src = tmp_path / "items.txt"
    src.write_text("a\n")
    out = tmp_path / "out"
    config = load_config({"output_dir": str(out)}, environ={}, cwd=tmp_path)
    if when == "as the folder is made":  # after mkdir's system call, before it is noted
        real_mkdir = Path.mkdir

        def mkdir(self: Path, *args: object, **kwargs: object) -> None:
            real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
            if self.parent == out:
                raise KeyboardInterrupt

        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:  # noted: the caller removes it
        real_chmod = os.chmod

        def chmod(path: object, mode: int) -> None:
            real_chmod(path, mode)  # type: ignore[arg-type]
            if Path(str(path)).parent == out:  # the batch folder's (the output dir's is made first)
                raise KeyboardInterrupt

        monkeypatch.setattr(batchdir.os, "chmod", chmod)
    with pytest.raises(KeyboardInterrupt):
        create_batch(config, build_spec([str(src)]), shell_spec("true"))
    monkeypatch.undo()
    assert [p.name for p in out.iterdir() if p.is_dir()] == []
    assert os.path.isdir(out)
