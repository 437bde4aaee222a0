"""Shell completion: every BATCH argument completes batch ids and names (tui/cli/completion.py),
through click's completion API, in process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.shell_completion import ShellComplete

from batchtui.tui.cli import main
from batchtui.tui.cli.group import VERBS

from .conftest import only_batch


def _complete(args: list[str], incomplete: str) -> list[tuple[str, str | None]]:
    comp = ShellComplete(main, {}, "batchtui", "_BATCHTUI_COMPLETE")
    return [(item.value, item.help) for item in comp.get_completions(args, incomplete)]


@pytest.fixture
def two_batches(tmp_path: Path, out_dir: Path, invoke_cli: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    items = tmp_path / "items.txt"
    items.write_text("a\n")
    assert invoke_cli(["run", str(items), "--cmd", "true", "--name", "nightly"]).returncode == 0
    first = only_batch(out_dir).name
    assert invoke_cli(["run", str(items), "--cmd", "true", "--name", "weekly"]).returncode == 0
    second = next(p.name for p in out_dir.iterdir() if p.name != first)
    monkeypatch.setenv("BATCHTUI_OUTPUT_DIR", str(out_dir))  # as the shell's environment would
    return [second, first]  # newest first


def test_batch_ids_and_names_complete_for_a_prefix(two_batches: list[str]) -> None:
    newest, oldest = two_batches
    assert _complete(["show"], newest[:4]) == [(newest, "weekly"), (oldest, "nightly")]
    assert _complete(["wait"], "ni") == [("nightly", f"batch {oldest}")]
    assert _complete(["export"], newest) == [(newest, "weekly")]
    assert _complete(["logs"], "zz") == []


def test_every_batch_argument_completes(two_batches: list[str]) -> None:
    newest, _ = two_batches
    verbs = []
    for verb in sorted(VERBS):
        command = main.get_command(click.Context(main), verb)
        assert command is not None
        if any(p.name == "batch" for p in command.params):
            verbs.append(verb)
            assert _complete([verb], "week") == [("weekly", f"batch {newest}")], verb
    assert {"show", "export", "wait", "resume", "watch", "logs", "stop", "retry", "recover"} <= set(verbs)


def test_output_dir_on_the_line_narrows_the_completion(two_batches: list[str], tmp_path: Path, invoke_cli: Any) -> None:
    other = tmp_path / "other"
    items = tmp_path / "items.txt"
    assert invoke_cli(["run", str(items), "--cmd", "true", "--name", "elsewhere", "-o", str(other)]).returncode == 0
    elsewhere = only_batch(other).name
    # Registered: found from anywhere; with --output-dir, that folder's batches only.
    assert ("elsewhere", f"batch {elsewhere}") in _complete(["show"], "")
    narrowed = [(elsewhere, "elsewhere"), ("elsewhere", f"batch {elsewhere}")]
    assert _complete(["show", "--output-dir", str(other)], "") == narrowed
    assert _complete(["--output-dir", str(other), "show"], "") == narrowed  # the group's option too


def test_completion_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("BATCHTUI_OUTPUT_DIR", str(not_a_dir / "sub"))
    assert _complete(["show"], "") == []
    (tmp_path / "batchtui.toml").write_text("this is = not toml [")
    monkeypatch.chdir(tmp_path)
    assert _complete(["show"], "2") == []
