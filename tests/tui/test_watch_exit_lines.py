"""What `watch` says as it exits while an engine holds the batch: its log only when that engine
writes one (the operator's pass: a watcher of a batch run in another terminal's dashboard named
an engine.log that did not exist)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock
from batchtui.tui.cli.watching import _after_tui, _tell_who_runs


@pytest.mark.parametrize("log", ["none", "older", "written"])
def test_the_log_line_names_only_a_log_the_holding_engine_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log: str
) -> None:
    bdir = BatchDir(tmp_path / "20260101_000000_abcdef12")
    bdir.path.mkdir()
    if log == "older":  # a detached engine of an earlier run wrote it
        bdir.engine_log.write_text("old\n")
        old = time.time() - 3600
        os.utime(bdir.engine_log, (old, old))
    lock = BatchLock(bdir.lock)
    lock.acquire()
    try:
        if log == "written":  # the engine holding the batch writes it (a background engine)
            bdir.engine_log.write_text("Progress: 0/1\n")
        _tell_who_runs(bdir, None)
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert f"run by pid {os.getpid()} on" in out and "  stop:   batchtui stop" in out
    assert ("  log:    " in out) == (log == "written"), out


def test_a_watched_batch_whose_folder_went_is_said_gone_on_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The folder deleted while watching: the exit said "batch ID: /its/path/manifest.json" (the
    # FileNotFoundError's bare path), which reads as a manifest to look at, not a folder gone.
    gone = tmp_path / "20260101_000000_abcdef12"
    app = SimpleNamespace(handoff=None, engine_error=None, runner=None, engine_result=None, initial_batch=gone)
    assert _after_tui(app, None) == 0
    err = capsys.readouterr().err
    assert err == f"batch 20260101_000000_abcdef12: its folder {gone} is gone (moved or deleted)\n"
