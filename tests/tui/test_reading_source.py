"""The dashboard of a batch whose engine still reads its source says so, and switches to the
running view on its own once the source is read.

By hand (80x24): `batchtui watch` of `batchtui run FIFO --headless` whose writer paused showed
``[CREATED]``, an empty status line and the tabs at ``All 0`` over 100 rows, and offered
``u Resume batch`` ("an engine runs this batch: nothing to resume"); ``p`` and ``x`` did nothing
without a word. A batch whose reading engine was killed -9 showed ``[CREATED]`` too, where
``ls`` says interrupted.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
from textual.widgets import Tab

from batchtui.engine.batchdir import HOST
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.modals import ConfirmScreen
from batchtui.tui.screens.resume_dialog import ResumeDialog
from batchtui.tui.widgets.items_table import ItemsTable

from ..conftest import CLI, cli_env, only_batch, wait_until
from ..test_source_waiting import _reading_batch
from .conftest import run
from .fixtures import until


def _text(widget: object) -> str:
    content = getattr(widget, "content", None)
    return str(getattr(content, "plain", content))


def _footer(app: BatchtuiApp) -> set[str]:
    """The binding ids the dashboard's footer shows (or would, at any width)."""
    return {a.binding.id or "" for a in app.screen.active_bindings.values() if a.binding.show}


def _events(screen: DashboardScreen) -> str:
    return "\n".join(str(line) for line in screen.query_one("#events").lines)  # type: ignore[attr-defined]


def _toasts(app: BatchtuiApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def test_the_dashboard_says_the_engine_reads_its_source_then_shows_it_running(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DashboardScreen, "ACK_TIMEOUT_S", 0.5)
    fifo = tmp_path / "items.fifo"
    os.mkfifo(fifo)
    engine = subprocess.Popen(
        [*CLI, "run", str(fifo), "--as", "lines", "--cmd", "true", "--headless"],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def body(batch: Path, pid: int) -> None:
        app = BatchtuiApp(output_dir=out_dir, batch=batch, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            title, status = screen.query_one("#title"), screen.query_one("#progress-text")
            await until(pilot, lambda: "WAITING FOR SOURCE" in _text(title), "the title says it waits")
            assert f"[WAITING FOR SOURCE pid {pid}]" in _text(title), _text(title)
            assert "CREATED" not in _text(title)
            line = _text(status)
            assert "WAITING FOR SOURCE" in line and "100 items so far" in line and "nothing new for" in line, line
            # The rows read so far, counted in the tabs as the status line counts them.
            assert screen.query_one(ItemsTable).row_count == 100
            assert "All 100" in str(screen.query_one("#tab-all", Tab).label)
            # Nothing runs yet: no pause, stop or resume in the footer, and their keys say why.
            shown = _footer(app)
            assert {"pause", "stop", "resume_batch"}.isdisjoint(shown) and "retry" in shown, shown
            for key, words in (
                ("p", "nothing runs yet to pause"),
                ("x", "nothing runs yet to stop"),
                ("u", "nothing to resume"),
            ):
                await pilot.press(key)
                said = f"the engine (pid {pid}) is reading the batch's source: {words}"
                await until(pilot, lambda s=said: any(s in t for t in _toasts(app)), f"the toast of {key}")
                assert not isinstance(app.screen, ConfirmScreen | ResumeDialog)
            assert not (batch / "control.jsonl").exists()  # nothing was sent
            # A skip is queued: the engine applies it once the source is read, as the log says.
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the skip's confirm")
            await pilot.press("y")
            queued = f"skip 1 item (#0): queued; the engine (pid {pid} on {HOST}) still reads the batch's source"
            await until(pilot, lambda: queued in _events(screen), "the skip said queued")

            done.set()  # the writer closes the pipe: the source ends, the items run
            await until(pilot, lambda: "[FINISHED" in _text(title) or "[RUNNING" in _text(title), "running", 60)
            await until(pilot, lambda: "100/100" in _text(status), "the status line of the run", 30)
            assert "SOURCE" not in _text(status) and screen.reading is None
            await until(pilot, lambda: "acknowledged late" in _events(screen), "the skip applied")
            assert "skip 1 item (#0): 1 skipped" in _events(screen)
            assert "resume_batch" in _footer(app) or "pause" in _footer(app)

    done = threading.Event()

    def write() -> None:  # a program that sends 100 lines and pauses until the test says
        with open(fifo, "w") as f:
            f.write("".join(f"line-{i}\n" for i in range(100)))
            f.flush()
            done.wait(120)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/items.db")), 30, "the batch")
        run(lambda: body(only_batch(out_dir), engine.pid))
        assert engine.wait(timeout=60) == 1  # the item skipped while the source was read
    finally:
        done.set()
        writer.join(10)
        if engine.poll() is None:
            engine.kill()
            engine.wait()


def test_the_dashboard_of_a_batch_whose_reading_engine_was_killed_says_interrupted(
    tmp_path: Path, out_dir: Path
) -> None:
    batch = _reading_batch(tmp_path, out_dir, 30)  # its engine killed -9 while it read

    async def body() -> None:
        app = BatchtuiApp(output_dir=out_dir, batch=batch, watch_files=False, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            title, status = screen.query_one("#title"), screen.query_one("#progress-text")
            await until(pilot, lambda: "[INTERRUPTED]" in _text(title), "the title says interrupted")
            assert "CREATED" not in _text(title) and "SOURCE" not in _text(title)
            await until(pilot, lambda: "its enqueue was cut short: 30 items read" in _text(status), "the status line")
            assert "resume_batch" in _footer(app)  # a resume reads the rest

    run(body)
