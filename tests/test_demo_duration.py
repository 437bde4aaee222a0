"""`batchtui demo` runs about a minute on a terminal (long enough to explore the dashboard) and
stays short headless (CI, the README's main job), unless --items says otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.demo import HEADLESS_ITEMS, TUI_SECONDS, demo_items, latency
from batchtui.tui.cli import group, running, watching

from .conftest import invoke_in_process


def test_a_terminals_demo_takes_about_a_minute_of_its_latency() -> None:
    for workers in (1, 8, 32):
        n = demo_items(workers, on_terminal=True)
        busy = sum(latency(seq, 1) for seq in range(n)) / workers  # first attempts alone
        assert 0.8 * TUI_SECONDS <= busy <= TUI_SECONDS, (workers, n, busy)
    assert demo_items(8, on_terminal=False) == HEADLESS_ITEMS == 200


def _started(monkeypatch: pytest.MonkeyPatch, tty: bool) -> list[tuple[str, int, str | None]]:
    """What demo starts (how, how many items, its name), without running it."""
    seen: list[tuple[str, int, str | None]] = []

    def record(how: str) -> Any:
        def start(*args: Any, runner: Any = None, **kwargs: Any) -> None:
            runner = runner or args[0]
            manifest = runner.batch.read_manifest()
            seen.append((how, manifest.totals.total, manifest.name))
            raise SystemExit(0)

        return start

    monkeypatch.setattr(running, "terminal", lambda: tty)
    monkeypatch.setattr(group, "terminal", lambda: tty)  # what dashboard_here asks
    monkeypatch.setattr(watching, "launch_tui", record("tui"))  # imported by run/demo when they use it
    monkeypatch.setattr(running, "run_headless", record("headless"))
    return seen


@pytest.mark.parametrize(
    ("tty", "args", "how", "items"),
    [
        (True, [], "tui", demo_items(8, on_terminal=True)),
        (False, [], "headless", 200),
        (True, ["--headless"], "headless", 200),
        (True, ["--items", "50"], "tui", 50),
        (True, ["--workers", "2"], "tui", demo_items(2, on_terminal=True)),
    ],
)
def test_the_default_item_count_follows_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tty: bool, args: list[str], how: str, items: int
) -> None:
    seen = _started(monkeypatch, tty)
    result = invoke_in_process(["demo", *args], out=tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert seen == [(how, items, f"demo ({items} items)")]
