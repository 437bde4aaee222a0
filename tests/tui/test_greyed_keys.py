"""Keys that do nothing say so: a greyed-out key pressed says why (tui/keys.py ``explained``):
`p` and `x` on a batch no engine runs, `d` and `r` in the browser with no batch to act on
(before, they did nothing without a word; only the command palette said why); and the footer
of a screen under a dialog, whose keys the dialog takes, is hidden."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.keys import key_entries
from batchtui.tui.screens.resume_dialog import ResumeDialog
from batchtui.tui.widgets.footer import KeyFooter

from .conftest import run
from .fixtures import FROZEN, make_batch


def _said(app: BatchtuiApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def _dashboard(batch: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=batch.parent, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
    )


def test_pause_and_stop_on_a_batch_no_engine_runs_say_why(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "out", state=BatchState.FINISHED, n=40)

    async def body() -> None:
        app = _dashboard(batch)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.pause()
            assert _said(app) == []
            await pilot.press("p")
            await pilot.pause()
            assert _said(app) == ["Pause/Resume: no engine runs this batch"]
            await pilot.press("x")
            await pilot.pause()
            assert _said(app)[-1] == "Stop: no engine runs this batch"
            # The help dialog and the palette list the key once, as the action it is bound to.
            entries = key_entries(app.screen)
            assert [e.key_text for e in entries if e.action_name == "toggle_pause"] == ["p"]
            assert not [e for e in entries if e.action_name == "why_not"]

    run(body)


def test_a_keymap_moves_the_explanation_with_its_key(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "out", state=BatchState.FINISHED, n=40)
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "batchtui"
    config.mkdir(parents=True)
    (config / "keymap.toml").write_text('pause = "P"\n')

    async def body() -> None:
        app = _dashboard(batch)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.pause()
            await pilot.press("p")
            await pilot.pause()
            assert _said(app) == []
            await pilot.press("P")
            await pilot.pause()
            assert _said(app) == ["Pause/Resume: no engine runs this batch"]

    run(body)


def test_browser_keys_with_no_batch_to_act_on_say_why(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()

    async def body() -> None:
        app: Any = BatchtuiApp(output_dir=tmp_path / "out", watch_files=False, handle_hangup=False)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.pause()
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("r")
            await pilot.pause()
            assert _said(app) == ["Delete: no batch selected", "Resume here: no batch selected"]

    run(body)


def test_the_footer_of_a_screen_under_a_dialog_is_hidden_until_the_dialog_closes(tmp_path: Path) -> None:
    """A dialog takes every key: the dashboard's footer under it listed keys that did nothing."""
    batch = make_batch(tmp_path / "out", state=BatchState.FINISHED, n=40)

    async def body() -> None:
        app = _dashboard(batch)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.pause()
            footer = app.screen.query_one(KeyFooter)
            assert footer.visible
            await pilot.press("u")  # the resume dialog
            await pilot.pause()
            assert isinstance(app.screen, ResumeDialog)
            assert not footer.visible
            await pilot.press("escape")
            await pilot.pause()
            assert footer.visible and footer.region.height == 1

    run(body)
