"""The hand-off says how many running items it waits for once: engine.log and the terminal give
the same figure. QA: they were counted apart (engine.log as the drain was asked for, the terminal
once the app had gone) and said 8, then 3."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from batchtui.engine.batchdir import engine_alive
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.modals import QuitScreen

from .conftest import run
from .fixtures import until
from .terminals import wait_until


def _starts(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def _engine_log_figure(batch: Path) -> int | None:
    path = batch / "engine.log"
    found = (
        re.search(r"the (\d+) items? running at the hand-off ends? first", path.read_text()) if path.exists() else None
    )
    return int(found.group(1)) if found else None


@pytest.mark.timeout(120)
def test_engine_log_and_the_terminal_give_the_same_running_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two items run; after ``q`` ``b`` one of them ends before the terminal's line is said
    (what the app's exit takes on a busy batch). Both lines still say 2."""
    gate, log = tmp_path / "gate", tmp_path / "starts.log"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(6)))
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2, "grace": 2}, environ={})
    # Each item waits for its own gate (gate.SEQ) or the common one.
    cmd = f"echo {{seq}} >> {log}; while [ ! -e {gate}.{{seq}} ] && [ ! -e {gate} ]; do sleep 0.02; done"
    runner = BatchRunner(create_batch(config, build_spec([str(items)]), shell_spec(cmd)), config=config)
    batch = runner.batch.path
    app = BatchtuiApp(output_dir=batch.parent, runner=runner, handle_hangup=False, strict_display=True)

    async def body() -> None:
        async with app.run_test(size=(140, 48)) as pilot:
            await until(pilot, lambda: runner.running_items == 2, "two items running", timeout=60)
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit dialog")
            await pilot.press("b")
            await until(pilot, lambda: not app.is_running, "the app ends at once")

    said: list[str] = []

    def terminal_line() -> bool:
        said.append(capsys.readouterr().err)
        return "here first" in "".join(said)

    after = None
    try:
        run(body)
        wait_until(lambda: _engine_log_figure(batch) is not None, 30, "engine.log's line")
        first = _starts(log)[0]
        (tmp_path / f"gate.{first}").touch()  # one running item ends before the terminal says its line
        wait_until(lambda: runner.running_items == 1, 30, "one item left running")
        # What launch_tui does once the app has gone: wait for the hand-off, saying what for.
        after = threading.Thread(target=app.stop_engine_after_exit)
        after.start()
        wait_until(terminal_line, 30, "the terminal's line")
    finally:
        gate.touch()
        if after is not None:
            after.join(60)
    text = "".join(said)
    assert "2 items running at the hand-off finish here first" in text, text
    assert _engine_log_figure(batch) == 2, (batch / "engine.log").read_text()
    assert app.handoff is not None and app.handoff.pid is not None, app.handoff
    wait_until(lambda: engine_alive(batch) is None, 60, "the background engine ends")  # nothing outlives the test
