"""Leaving the TUI: the app's objects are kept out of the interpreter's last garbage collection."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import click
import pytest

from batchtui.tui import app as app_mod
from batchtui.tui.cli.watching import launch_tui


class _App:
    """Stands in for BatchtuiApp: it has run and exited (no terminal in a test)."""

    engine_result = None
    engine_error = None
    handoff = None
    runner = None  # no batch to report on once it is gone
    initial_batch = None
    engine_running = False
    stopped = False

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def run(self) -> int:
        assert gc.get_freeze_count() == 0  # frozen only once the app is gone
        return 0

    def stop_engine_after_exit(self, *, interrupted: bool = False) -> None:
        _App.stopped = True


def test_leaving_the_app_freezes_its_objects_out_of_the_last_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_mod, "BatchtuiApp", _App)
    gc.unfreeze()
    ctx = click.Context(click.Command("watch"), obj={})
    try:
        with pytest.raises(SystemExit) as exit_info:
            launch_tui(ctx, output_dir=tmp_path)
        assert exit_info.value.code == 0
        assert _App.stopped  # the engine was stopped first
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


class _Runner:
    def __init__(self, kind: str, executor: str | None) -> None:
        from batchtui.engine.config import BatchConfig

        self.spec = type("Spec", (), {"kind": kind})()
        self.config = BatchConfig(executor=executor)


@pytest.mark.parametrize(
    ("kind", "executor", "frozen"),
    [
        ("python", "thread", False),  # the user's callable ran here: its objects get the last collection
        ("python", None, True),  # the process executor (the default for --call): it ran elsewhere
        ("shell", None, True),
        ("demo", "thread", True),
    ],
)
def test_objects_of_a_callable_run_in_this_process_get_the_last_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, executor: str | None, frozen: bool
) -> None:
    monkeypatch.setattr(app_mod, "BatchtuiApp", _App)
    gc.unfreeze()
    ctx = click.Context(click.Command("run"), obj={})
    try:
        with pytest.raises(SystemExit):
            launch_tui(ctx, output_dir=tmp_path, runner=_Runner(kind, executor))
        assert (gc.get_freeze_count() > 0) is frozen
    finally:
        gc.unfreeze()
