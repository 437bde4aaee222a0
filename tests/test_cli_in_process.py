"""invoke_in_process (tests/conftest.py) answers as the console script would, so the tests that
use it instead of a subprocess keep what they prove."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from batchtui.tui.cli.inspecting import ls_cmd

from .conftest import invoke_in_process


def test_an_uncaught_exception_is_exit_1_with_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**_kw: object) -> None:
        raise RuntimeError("planted")

    monkeypatch.setattr(ls_cmd, "callback", boom)
    done = invoke_in_process(["ls"], out=tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "RuntimeError: planted" in done.stderr


def test_a_user_error_is_its_exit_code_and_one_line_on_stderr(tmp_path: Path) -> None:
    xdg = os.environ["XDG_STATE_HOME"]  # the test's own registry (tests/conftest.py)
    done = invoke_in_process(["show", "nope"], out=tmp_path / "out", cwd=tmp_path)
    real = subprocess.run(
        [*invoke_in_process(["show", "nope"], out=tmp_path / "out", cwd=tmp_path).args],
        capture_output=True,
        text=True,
        env={"BATCHTUI_OUTPUT_DIR": str(tmp_path / "out"), "PATH": "/usr/bin:/bin", "XDG_STATE_HOME": xdg},
        cwd=tmp_path,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (real.returncode, real.stdout, real.stderr)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_the_settings_of_the_test_process_are_not_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHTUI_WORKERS", "nonsense")  # would be a config error if it were read
    (tmp_path / "in.txt").write_text("a\n")
    done = invoke_in_process(["run", "in.txt", "--cmd", "true", "--headless"], out=tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()]  # the batch went to the dir given
