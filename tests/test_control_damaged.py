"""A folder (or a fifo, or a link) in the place of control.jsonl is a damaged file, said as such.

It used to kill a running engine with an IsADirectoryError traceback at its next loop turn (a
fifo blocked it for good), ``pause`` and ``stop`` died the same way on their open (a fifo hung
them), and ``resume`` refused the batch saying "the engine never writes through a link". Now the
engine warns and goes on (the steering comes back when the folder goes), the verbs say in one
line that the file is damaged and what to do (exit 2), ``show`` says it, ``resume`` refuses it
as damaged.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.control import append_command, new_command
from batchtui.engine.control_file import ControlReader, DamagedControl

from .conftest import CLI, cli_env, only_batch, read_json, wait_until

WAIT_FOR_FILE = f"{Path(__file__).with_name('procs.py')}:wait_for_file"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _warnings(batch: Path) -> list[str]:
    try:
        live = read_json(batch / "live_progress.json")
    except (OSError, ValueError):
        return []
    return [str(w) for w in live.get("warnings", [])]  # type: ignore[attr-defined]


def test_a_folder_in_place_of_control_jsonl_under_a_running_engine(tmp_path: Path, out_dir: Path) -> None:
    release = tmp_path / "release"
    env = cli_env(out_dir, {"BTUI_TEST_RELEASE": str(release)})
    (tmp_path / "n.txt").write_text("1\n2\n3\n")
    args = ["run", "n.txt", "--call", WAIT_FOR_FILE, "--executor", "thread", "--workers", "1", "--headless"]
    proc = subprocess.Popen([*CLI, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/live_progress.json")), 60, "the engine's progress")
        batch = only_batch(out_dir)
        bid, control = batch.name, batch / "control.jsonl"
        assert not control.exists()
        control.mkdir()

        # The engine sees it at its next turn, says so, and goes on running.
        said = "control.jsonl is damaged (a folder in its place, not a regular file): no command"
        wait_until(lambda: any(said in w for w in _warnings(batch)), 30, "the engine's warning")
        assert proc.poll() is None

        damaged = f"{control} is damaged (a folder in its place, not a regular file); remove it"
        for verb in ("pause", "stop"):
            got = _cli([verb, bid], env, tmp_path)
            assert got.returncode == 2, got.stdout + got.stderr
            assert got.stderr == f"error: cannot send {verb} to batch {bid}: {damaged}: the next command" + (
                " makes the file anew and an engine reads it from its start\n"
            )
        show = _cli(["show", bid], env, tmp_path)
        assert show.returncode == 0, show.stderr
        assert f"  Warning:   commands cannot reach the engine of batch {bid}: {damaged}" in show.stdout

        # Once it is gone, the steering works again: the stop is acknowledged.
        control.rmdir()
        stop = _cli(["stop", bid], env, tmp_path)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert any("control.jsonl is usable again" in w for w in _warnings(batch))
        release.touch()
        _, err = proc.communicate(timeout=60)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err.decode(), err
    assert read_json(batch / "manifest.json")["state"] == "stopped"

    # resume refuses it as damaged (not as a link), in one line, and resumes once it is gone.
    control.unlink()
    control.mkdir()
    got = _cli(["resume", bid, "--headless"], env, tmp_path)
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
    assert got.stderr == (
        f"error: refusing to use batch {bid}: control.jsonl is not a regular file (a folder);"
        " it is damaged (remove it: the engine makes it anew), then try again\n"
    )
    control.rmdir()
    assert _cli(["resume", bid, "--headless"], env, tmp_path).returncode == 0


def test_the_reader_and_the_writer_refuse_a_fifo_without_blocking(tmp_path: Path) -> None:
    """A fifo with no writer blocked the engine's open for good, and one with no reader the
    verbs' open: both are refused as damaged at once (a test that blocks fails by timeout)."""
    batch = BatchDir(tmp_path)
    os.mkfifo(batch.control)
    reader = ControlReader(batch.control)
    assert reader.damaged == "a fifo in its place, not a regular file"
    assert reader.changed() is False and reader.read_new() == []
    with pytest.raises(DamagedControl, match="a fifo in its place"):
        append_command(batch, new_command("pause"))
    batch.control.unlink()
    assert reader.changed() is True  # the damage went: the next read says so
    append_command(batch, new_command("pause"))
    assert [c.op for c in reader.read_new()] == ["pause"] and reader.damaged is None
