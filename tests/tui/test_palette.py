"""The command palette: each action once with its key; an action that cannot apply now is
listed greyed with why, and choosing it says why instead of acting."""

from __future__ import annotations

from pathlib import Path

from textual.command import CommandList, CommandPalette

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.commands import palette_entries

from .conftest import run
from .fixtures import FROZEN, hold_lock, make_batch


def _app(out: Path, batch: Path | None = None) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


def test_each_action_once_with_its_key_and_the_greyed_ones_with_why(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            # No engine holds the batch: nothing to pause or stop.
            entries = palette_entries(app, app.screen)
            titles = [e.title for e in entries]
            assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)
            by_title = {e.title: e for e in entries}
            assert "Keys" not in by_title  # Textual's key panel: our Help (?) is it
            assert (
                "q" in by_title["Quit"].key.split(" / ")
                and by_title["Help"].key == "?"
                and by_title["Retry"].key == "r"
            )
            assert by_title["Run first"].key == "+" and by_title["Mark"].key == "space"
            assert by_title["Pause/Resume"].why_not == "no engine runs this batch"
            assert by_title["Stop"].why_not == "no engine runs this batch"
            assert by_title["Retry"].why_not is None and by_title["Batches"].key == "b"

            # The palette itself: the greyed entry is listed, dim, with why under it.
            await pilot.press("ctrl+p")
            await pilot.pause()
            assert isinstance(app.screen, CommandPalette)
            await pilot.press(*"pause")
            await pilot.pause(0.3)
            options = app.screen.query_one(CommandList)
            prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
            assert any("Pause/Resume" in p and "not now: no engine runs this batch" in p for p in prompts), prompts
            await pilot.press("enter")  # the top hit: Pause/Resume
            await pilot.pause(0.3)
            assert not (batch / "control.jsonl").exists()  # nothing was sent
            said = [n.message for n in app._notifications]
            assert "Pause/Resume: no engine runs this batch" in said, said

        with hold_lock(batch):
            app = _app(tmp_path, batch)
            async with app.run_test(size=(120, 40)) as pilot:
                await pilot.pause()
                by_title = {e.title: e for e in palette_entries(app, app.screen)}
                assert by_title["Pause/Resume"].why_not is None
                assert by_title["Resume batch"].why_not == "an engine runs this batch"

    run(body)
