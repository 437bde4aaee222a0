"""Leaving the TUI: the app's objects are kept out of the interpreter's last garbage collection."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import click
import pytest

from batchtui.tui import app as app_mod
from batchtui.tui.cli import launch_tui


class _App:
    """Stands in for BatchtuiApp: it has run and exited (no terminal in a test)."""

    engine_result = None
    stopped = False

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def run(self) -> int:
        assert gc.get_freeze_count() == 0  # frozen only once the app is gone
        return 0

    def stop_engine_after_exit(self) -> None:
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
