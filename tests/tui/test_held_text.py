"""Why ``u`` (resume) does nothing while the batch's lock is held, and by whom.

A stop gives up on Python calls it cannot end (threads cannot be stopped): they go back to
pending, and the lock stays with the process that runs them until it exits, so that none runs
twice. When that process is this app, after its own engine ended, the key said "an engine
(pid N) runs this batch": no engine ran, and the pid was the app's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from batchtui.engine.batchdir import HOST
from batchtui.engine.models import LockInfo
from batchtui.tui.screens.dashboard_gates import DashboardGates


def _text(tmp_path: Path, pid: int, host: str, in_process_engine: bool) -> str:
    holder = LockInfo(pid=pid, host=host, started_at="2026-12-06T00:00:00.000+00:00")
    engine = SimpleNamespace(holder=holder, pid=pid)
    bdir = SimpleNamespace(batch_id="20261206_000000_0000abcd", path=tmp_path / "out dir" / "20261206_000000_0000abcd")
    screen = SimpleNamespace(engine=engine, in_process_engine=in_process_engine, bdir=bdir)
    return DashboardGates(screen).held_text()  # type: ignore[arg-type]


def test_calls_left_running_in_this_app_say_so_and_how_to_go_on(tmp_path: Path) -> None:
    text = _text(tmp_path, os.getpid(), HOST, in_process_engine=False)
    assert text.startswith("this app still runs Python calls its engine could not stop")
    assert text.endswith(f"then: batchtui resume 20261206_000000_0000abcd --output-dir '{tmp_path}/out dir'")


def test_another_engine_is_named_by_its_pid(tmp_path: Path) -> None:
    assert _text(tmp_path, 4242, HOST, False) == "an engine (pid 4242) runs this batch: nothing to resume"
    # The same pid on another host is another process.
    assert _text(tmp_path, os.getpid(), "elsewhere", False).startswith(f"an engine (pid {os.getpid()})")


def test_this_apps_running_engine_is_this_app(tmp_path: Path) -> None:
    assert _text(tmp_path, os.getpid(), HOST, True) == "an engine (this app) runs this batch: nothing to resume"
