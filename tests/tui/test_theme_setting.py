"""The theme setting reaches every dashboard: ``theme = "light"`` in batchtui.toml (or
BATCHTUI_THEME) was validated and stored, then ignored by ``watch``, ``resume`` and the browser,
which read only the --theme flags; ``batchtui --theme T run ...`` lost to the setting's default."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from batchtui.tui import app as app_module
from batchtui.tui.cli import watching

RunCli = Callable[..., subprocess.CompletedProcess[str]]


class _Opened(Exception):
    """Raised by the fake app as it is made: the theme it was given is all this test needs."""


@pytest.fixture
def themes(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    seen: list[str | None] = []

    class FakeApp:
        def __init__(self, **kw: Any) -> None:
            seen.append(kw.get("theme"))
            raise _Opened

    monkeypatch.setattr(app_module, "BatchtuiApp", FakeApp)
    monkeypatch.setattr(watching, "terminal", lambda: True)
    return seen


def _watch(invoke_cli: RunCli, args: Sequence[str], tmp_path: Path, env: dict[str, str] | None = None) -> None:
    done = invoke_cli(args, env=env, cwd=tmp_path)
    assert "_Opened" in done.stderr, done.stdout + done.stderr  # the app was made, nothing ran


def test_watch_takes_the_theme_of_the_settings_after_the_flags(
    tmp_path: Path, invoke_cli: RunCli, themes: list[str | None]
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    assert invoke_cli(["run", str(src), "--cmd", "true", "--headless"]).returncode == 0
    (tmp_path / "batchtui.toml").write_text('theme = "light"\n')
    _watch(invoke_cli, ["watch"], tmp_path)
    _watch(invoke_cli, ["watch"], tmp_path, env={"BATCHTUI_THEME": "nord"})
    _watch(invoke_cli, ["--theme", "gruvbox-light", "watch"], tmp_path, env={"BATCHTUI_THEME": "nord"})
    _watch(invoke_cli, ["--theme", "gruvbox-light", "watch", "--theme", "high-contrast"], tmp_path)
    assert themes == ["light", "nord", "gruvbox-light", "high-contrast"]
