"""A batch opened by its path may have any folder name: an escape sequence in it is shown
escaped, in the dashboard's title, its resume dialog and the CLI's lines, never sent to the
terminal (the title bar sent ``ESC [41m`` as it was: the terminal turned the rest red)."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from batchtui.engine.models import BatchState
from batchtui.tui.screens.resume_dialog import ResumeDialog

from ..conftest import CLI, cli_env
from .conftest import run
from .fixtures import make_batch
from .test_snapshots import dashboard_open, settle

NAME = "e\x1b[41mRED\x07"
SHOWN = "e\\x1b[41mRED\\x07"


def _text(widget: object) -> str:
    render = getattr(widget, "render")  # noqa: B009
    return str(render())


def test_the_dashboard_and_its_resume_dialog_show_a_hostile_folder_name_escaped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.HALTED, batch_id=NAME)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, screen):
            app = pilot.app
            title = _text(screen.query_one("#title"))
            assert SHOWN in title and "\x1b" not in title and "\x07" not in title, title
            await pilot.press("u")
            await settle(pilot)
            dialog = app.screen
            assert isinstance(dialog, ResumeDialog)
            heading = _text(dialog.query_one("#resume-title"))
            assert SHOWN in heading and "\x1b" not in heading, heading

    run(body)


def test_cli_lines_naming_a_hostile_folder_show_it_escaped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, batch_id=NAME)
    for args in (["show", str(batch)], ["errors", str(batch)]):
        master, slave = pty.openpty()
        proc = subprocess.Popen([*CLI, *args], stdout=slave, stderr=slave, env=cli_env(out), cwd=tmp_path)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait(timeout=60) == 0
        shown = b"".join(chunks).decode()
        if args[0] == "show":  # errors names the batch only when it has no failed items
            assert SHOWN in shown, (args, shown[:2000])
        assert "\x1b" not in shown and "\x07" not in shown, (args, shown[:2000])
