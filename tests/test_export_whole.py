"""``export --out FILE`` leaves FILE whole or not at all. It was written in place: an export killed
or failing half-way (kill -9, a full disk, Ctrl-C) left a CSV or JSONL that looked finished and
held part of the batch, over the previous complete export."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.models import BatchState
from batchtui.tui.cli import output

from .conftest import CLI, cli_env, wait_until
from .tui.fixtures import make_batch

OLD = "the previous export, whole\n"


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".export.csv.*.tmp"))


def test_an_export_killed_half_way_leaves_the_previous_file_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=60_000)
    target = tmp_path / "export.csv"
    target.write_text(OLD)
    proc = subprocess.Popen(
        [*CLI, "export", str(batch), "--format", "csv", "--out", str(target)],
        env=cli_env(out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Killed once it has written part of the rows (its temporary file has grown).
    wait_until(lambda: any(p.stat().st_size > 100_000 for p in _temps(tmp_path)), 60, "part of the export")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # it was still writing: the test killed it half-way
    assert target.read_text() == OLD

    # Run to its end, the export replaces it whole.
    done = subprocess.run(
        [*CLI, "export", str(batch), "--format", "csv", "--out", str(target)],
        env=cli_env(out),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with target.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 60_001  # the header and every item
    assert rows[-1][0] == "59999"
    assert "exported 60,000 items" in done.stderr


def test_an_export_that_fails_removes_its_temporary_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, invoke_cli: Any
) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=50)
    target = tmp_path / "export.csv"
    target.write_text(OLD)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output.os, "fsync", full_disk)
    done = invoke_cli(["export", str(batch), "--format", "csv", "--out", str(target)])
    monkeypatch.setattr(output.os, "fsync", real_fsync)
    assert done.returncode == 2
    assert f"cannot write {target}: No space left on device" in done.stderr
    assert target.read_text() == OLD
    assert _temps(tmp_path) == []


def test_a_new_export_file_gets_the_mode_open_would_give_it(tmp_path: Path, invoke_cli: Any) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=5)
    target = tmp_path / "new.jsonl"
    old = os.umask(0o027)
    try:
        done = invoke_cli(["export", str(batch), "--out", str(target)])
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert target.stat().st_mode & 0o777 == 0o640
    assert [json.loads(line)["seq"] for line in target.read_text().splitlines()] == list(range(5))

    # One it replaces keeps its mode: an export kept private stays private.
    target.chmod(0o600)
    assert invoke_cli(["export", str(batch), "--out", str(target)]).returncode == 0
    assert target.stat().st_mode & 0o777 == 0o600


def test_an_export_through_a_link_replaces_the_file_and_keeps_the_link(tmp_path: Path, invoke_cli: Any) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=3)
    real = tmp_path / "data" / "real.jsonl"
    real.parent.mkdir()
    real.write_text(OLD)
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    done = invoke_cli(["export", str(batch), "--out", str(link)])
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert len(real.read_text().splitlines()) == 3


def test_a_fifo_is_written_directly(tmp_path: Path, invoke_cli: Any) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=7)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    done = invoke_cli(["export", str(batch), "--out", str(fifo)])
    got, _ = reader.communicate(timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(got.decode().splitlines()) == 7
    assert fifo.exists() and not fifo.is_file()  # not replaced by a regular file


@pytest.mark.parametrize("name", ["items.db", "results.jsonl", "manifest.json", "lock", "new.jsonl", "logs/x"])
def test_an_export_into_a_batch_folder_is_refused_and_changes_nothing(tmp_path: Path, name: str) -> None:
    """`export --out BATCH/items.db` replaced the store with the export: every later command
    called the batch damaged. A file of the batch's folder, or one linked to it, is refused."""
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=5)
    (batch / "logs").mkdir(exist_ok=True)
    before = {p.name: p.read_bytes() for p in batch.iterdir() if p.is_file()}
    link = tmp_path / "link"
    link.symlink_to(batch / name)
    for target in (batch / name, link):
        done = subprocess.run(
            [*CLI, "export", str(batch), "--out", str(target)],
            env=cli_env(out), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "is in the folder of batch" in done.stderr and "Traceback" not in done.stderr
        assert {p.name: p.read_bytes() for p in batch.iterdir() if p.is_file()} == before
    assert not (batch / "new.jsonl").exists() and not (batch / "logs" / "x").exists()
    shown = subprocess.run([*CLI, "show", str(batch)], env=cli_env(out), capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr


def test_an_export_to_dev_stdout_reaches_a_pipe(tmp_path: Path) -> None:
    """/dev/stdout is a link to "pipe:[N]" when stdout is a pipe: it was resolved to that name
    and failed ("No such file or directory"); it is written as the name given."""
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=5)
    for name in ("/dev/stdout", "/dev/fd/1"):
        done = subprocess.run(
            [*CLI, "export", str(batch), "--out", name],
            env=cli_env(out), capture_output=True, text=True, timeout=60, check=False,  # stdout: a pipe
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert [json.loads(line)["seq"] for line in done.stdout.splitlines()] == [0, 1, 2, 3, 4]


def test_out_dash_is_stdout_not_a_file_named_dash(tmp_path: Path, invoke_cli: Any) -> None:
    batch = make_batch(tmp_path / "out", state=BatchState.FINISHED, n=3)
    to_stdout = invoke_cli(["export", str(batch)])
    for flag in ("--out", "-O"):
        done = invoke_cli(["export", str(batch), flag, "-"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == to_stdout.stdout and len(done.stdout.splitlines()) == 3
        assert not (tmp_path / "-").exists() and "exported" not in done.stderr
