"""A fifo, a device or a link where a batch file should be never blocks a view, and never makes
one read without end: the file is damaged (its backup is read when it has one), and the view
goes on. A fifo in place of manifest.json blocked ``ls`` and the browser for good; a link to
/dev/zero in place of live_progress.json made them read until memory ran out."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.batchdir import BatchDir, engine_alive
from batchtui.engine.files import SMALL_FILE_MAX, DamagedFile, read_small_file
from batchtui.engine.listing import list_batches
from batchtui.engine.models import BatchState
from batchtui.engine.store import ItemQueries, ItemStore, StoreError
from batchtui.engine.summary import summarize

from .tui.fixtures import make_batch

#: Longer than any of these reads takes; a read that blocks is a failure, not a hung suite.
WITHIN_S = 10.0


def _within(call: Callable[[], Any], *fifos: Path) -> Any:
    """``call()`` on a thread: its result, or its exception; a failure if it blocks (then the
    fifos get a writer, so the blocked thread ends with the test)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WITHIN_S)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"blocked for {WITHIN_S:.0f} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def batch(tmp_path: Path) -> Iterator[Path]:
    yield make_batch(tmp_path / "out", state=BatchState.FINISHED, n=10)


def _fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def test_a_fifo_in_place_of_the_manifest_reads_its_backup(batch: Path) -> None:
    (batch / "manifest.json.bak").write_bytes((batch / "manifest.json").read_bytes())
    fifo = _fifo(batch / "manifest.json")
    rows = _within(lambda: list_batches(batch.parent), fifo)
    assert [r.batch_id for r in rows] == [batch.name]
    assert rows[0].manifest_from_backup is True
    assert rows[0].state == "finished"


def test_a_fifo_in_place_of_the_manifest_without_a_backup_is_a_damaged_batch(batch: Path) -> None:
    fifo = _fifo(batch / "manifest.json")
    row = _within(lambda: summarize(batch), fifo)
    assert row.state == "damaged"
    assert "not a regular file (a fifo, a device or a folder)" in (row.error or "")


def test_a_link_to_dev_zero_in_place_of_live_progress_is_no_progress(batch: Path) -> None:
    (batch / "live_progress.json").unlink(missing_ok=True)
    (batch / "live_progress.json").symlink_to("/dev/zero")
    assert _within(lambda: BatchDir(batch).read_live()) is None
    assert _within(lambda: summarize(batch)).state == "finished"
    with pytest.raises(DamagedFile, match="a symbolic link"):
        read_small_file(batch / "live_progress.json")


def test_a_device_reached_by_its_own_name_is_not_read(tmp_path: Path) -> None:
    with pytest.raises(DamagedFile, match="not a regular file"):
        _within(lambda: read_small_file(Path("/dev/zero")))


def test_a_manifest_bigger_than_any_is_damaged_not_read(batch: Path) -> None:
    with open(batch / "manifest.json", "r+b") as fh:
        fh.truncate(SMALL_FILE_MAX + 1)  # sparse: nothing is written
    row = _within(lambda: summarize(batch))
    assert row.state == "damaged"
    assert f"{SMALL_FILE_MAX + 1:,} bytes" in (row.error or "")


def test_a_fifo_in_place_of_the_lock_is_no_engine(batch: Path) -> None:
    fifo = _fifo(batch / "lock")
    assert _within(lambda: engine_alive(batch), fifo) is None
    assert _within(lambda: summarize(batch), fifo).engine is None


@pytest.mark.parametrize("name", ["items.db", "items.db-wal", "items.db-shm"])
def test_a_fifo_in_place_of_the_store_is_a_store_error(batch: Path, name: str) -> None:
    fifo = _fifo(batch / name)
    for opening in (lambda: ItemStore.open_readonly(batch / "items.db"), lambda: ItemQueries(batch / "items.db")):
        with pytest.raises(StoreError, match="not a regular file"):
            _within(opening, fifo)


def test_show_of_a_batch_whose_report_is_a_fifo_shows_the_rest(batch: Path) -> None:
    from click.testing import CliRunner

    from batchtui.tui.cli import main

    fifo = _fifo(batch / "report.json")
    got = _within(lambda: CliRunner().invoke(main, ["show", str(batch)]), fifo)
    assert got.exception is None, got.output
    assert got.exit_code == 0 and f"BATCH SUMMARY  {batch.name}  (finished)" in got.output


def test_the_item_detail_shows_no_output_for_a_fifo_or_a_link_in_place_of_a_log(tmp_path: Path) -> None:
    from batchtui.engine.logs import log_tail as _tail

    secret = tmp_path / "secret"
    secret.write_text("not a log\n")
    (tmp_path / "0.1.out").symlink_to(secret)
    fifo = _fifo(tmp_path / "0.1.err")
    (tmp_path / "1.1.out").write_text("a\nb\n")
    assert _within(lambda: _tail(tmp_path / "0.1.out")) is None
    assert _within(lambda: _tail(tmp_path / "0.1.err"), fifo) is None
    assert _within(lambda: _tail(tmp_path / "1.1.out")) == "a\nb\n"


# A folder in place of a batch file: os.fdopen raised IsADirectoryError before the file-type
# check (a traceback from every verb, and one such batch broke ls/cleanup/resume of its whole
# output dir); it is damaged like a fifo, and its backup is read when it has one.

FOLDER_VERBS = [
    ["show", "{b}"],
    ["export", "{b}"],
    ["errors", "{b}"],
    ["logs", "{b}", "0"],
    ["check", "--batch", "{b}"],
    ["ls"],
    ["cleanup", "--dry-run", "--max-age-days", "0"],
]


@pytest.fixture
def ran(tmp_path: Path) -> tuple[Path, Path]:
    """A real finished batch of 3 items (with its manifest.json.bak): (output dir, batch)."""
    from .conftest import invoke_in_process, only_batch

    out = tmp_path / "out"
    (tmp_path / "n.txt").write_text("1\n2\n3\n")
    done = invoke_in_process(["run", "n.txt", "--cmd", "true", "--headless"], out=out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    batch = only_batch(out)
    assert (batch / "manifest.json.bak").is_file()
    return out, batch


def _verb(args: list[str], out: Path, batch: Path) -> Any:
    from .conftest import invoke_in_process

    return invoke_in_process([a.format(b=batch.name) for a in args], out=out, cwd=out.parent)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("args", FOLDER_VERBS, ids=lambda a: a[0])
def test_a_folder_in_place_of_the_manifest_reads_its_backup(ran: tuple[Path, Path], args: list[str]) -> None:
    out, batch = ran
    _folder(batch / "manifest.json")
    got = _verb(args, out, batch)
    assert "Traceback" not in got.stderr and "IsADirectoryError" not in got.stderr, got.stderr
    assert got.returncode == 0, got.stderr
    if args[0] != "cleanup":  # cleanup --dry-run reads no manifest of a batch it keeps
        assert "manifest.json is damaged (not a regular file (a fifo, a device or a folder))" in got.stderr


def test_resume_refuses_a_batch_with_a_folder_in_place_of_its_manifest_in_one_line(ran: tuple[Path, Path]) -> None:
    out, batch = ran
    _folder(batch / "manifest.json")
    got = _verb(["resume", "--headless"], out, batch)
    assert "Traceback" not in got.stderr, got.stderr
    assert got.returncode == 2
    assert f"refusing to use batch {batch.name}: manifest.json is not a regular file" in got.stderr


def test_a_folder_in_place_of_live_progress_is_no_progress(ran: tuple[Path, Path]) -> None:
    out, batch = ran
    _folder(batch / "live_progress.json")
    got = _verb(["show", "{b}"], out, batch)
    assert "Traceback" not in got.stderr, got.stderr
    assert got.returncode == 0 and f"BATCH SUMMARY  {batch.name}  (finished)" in got.stdout


def test_a_folder_in_place_of_the_backup_of_a_damaged_manifest_is_no_good_backup(ran: tuple[Path, Path]) -> None:
    out, batch = ran
    (batch / "manifest.json").write_text("junk\n")
    _folder(batch / "manifest.json.bak")
    got = _verb(["show", "{b}"], out, batch)
    assert "Traceback" not in got.stderr, got.stderr
    assert got.returncode == 2
    assert got.stderr.strip().endswith(
        "manifest.json is damaged (unexpected character, expected a JSON value: line 1 column 1 (char 0)) and has no good backup"
    )


def test_one_batch_with_a_folder_for_a_manifest_does_not_break_ls_of_the_others(ran: tuple[Path, Path]) -> None:
    out, batch = ran
    other = out / "20261118_090000_aaaa0009"
    shutil.copytree(batch, other)
    (other / "manifest.json.bak").unlink()
    _folder(other / "manifest.json")
    got = _verb(["ls"], out, batch)
    assert "Traceback" not in got.stderr, got.stderr
    assert got.returncode == 0
    assert batch.name in got.stdout and other.name in got.stdout and "damaged" in got.stdout


def test_a_folder_is_damaged_and_its_descriptor_closed(tmp_path: Path) -> None:
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = fds()
    for _ in range(5):
        with pytest.raises(DamagedFile, match=r"not a regular file \(a fifo, a device or a folder\)"):
            read_small_file(tmp_path)
    assert fds() == before


def test_the_item_detail_shows_no_output_for_a_folder_in_place_of_a_log(tmp_path: Path) -> None:
    from batchtui.engine.logs import log_tail as _tail

    (tmp_path / "0.1.out").mkdir()
    assert _tail(tmp_path / "0.1.out") is None


def test_a_folder_in_place_of_the_registry_is_no_registry(caplog: pytest.LogCaptureFixture) -> None:
    from batchtui.engine.registry import registered, registry_path

    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.mkdir()
    assert registered() == []
    assert f"cannot read the batch registry {path}: not a regular file" in caplog.text
