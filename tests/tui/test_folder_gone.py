"""A batch folder that goes (moved or deleted) while the dashboard shows it: the dashboard says
so, and never goes on showing a run with an ETA that nothing carries on."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.models import BatchState
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.store import ItemStore
from batchtui.engine.store.queries import ItemQueries, StoreError
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.widgets.status import ProgressLine, TitleBar

from .conftest import run
from .fixtures import FROZEN, hold_lock, make_batch


def _status(screen: DashboardScreen) -> str:
    return str(screen.query_one(ProgressLine).query_one("#progress-text").render())


def _title(screen: DashboardScreen) -> str:
    return str(screen.query_one(TitleBar).render())


def test_a_batch_folder_moved_under_the_engine_in_the_app_shows_halted_not_running(tmp_path: Path) -> None:
    """The engine in the app halts when its folder moves away (engine/guard.py) and writes how
    it ended where the folder went: no file here says it. The dashboard shows the engine's own
    word then: HALTED with the reason, no ETA, nothing running, not the last write's RUNNING."""
    gate = tmp_path / "gate"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(40)))
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2, "grace": 2}, environ={})
    command = f"while [ ! -e {gate} ]; do sleep 0.02; done"  # nothing ends before the test says
    runner = BatchRunner(create_batch(config, build_spec([str(items)]), shell_spec(command)), config=config)
    batch = runner.batch.path

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.parent, runner=runner, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(140, 48)) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            for _ in range(300):  # until the dashboard shows the engine running items
                await pilot.pause(0.05)
                if screen.live is not None and screen.live.counts.running and "RUNNING" in _status(screen):
                    break
            assert screen.live is not None and screen.live.counts.running, "the engine never ran items"
            assert "ETA" in _status(screen)
            batch.rename(tmp_path / "moved")
            for _ in range(300):
                await pilot.pause(0.05)
                if app.engine_result is not None:
                    break
            assert app.engine_result is not None and app.engine_result.exit_code == 3
            await pilot.pause(0.1)
            # The engine's word: halted, why, nothing running.
            assert screen.live is not None and screen.live.state == BatchState.HALTED
            assert screen.live.halt_reason is not None and "moved or deleted" in screen.live.halt_reason
            assert screen.live.counts.running == 0 and screen.live.in_flight == []
            for _ in range(100):  # and the dashboard's own look at the folder (once a second)
                await pilot.pause(0.05)
                if screen.gone:
                    break
            shown = _status(screen)
            assert shown.lstrip().startswith("GONE"), shown
            assert "ETA" not in shown and "running" not in shown, shown
            assert "[GONE]  the batch folder" in _title(screen), _title(screen)  # and the halt reason

    try:
        run(body)
    finally:
        gate.touch()


def test_a_watched_batch_whose_folder_goes_shows_gone_and_offers_no_resume(tmp_path: Path) -> None:
    """Watching a batch an engine in another process runs: its folder moves away. The dashboard
    says GONE (not INTERRUPTED with an ETA, as the missing lock alone would read), once in the
    event log, and resume is not offered: there is nothing here to resume."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    notes: list[str] = []

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path,
            batch=batch,
            watch_files=False,
            clock=lambda: FROZEN,
            handle_hangup=False,
            strict_display=True,
        )
        with hold_lock(batch):
            async with app.run_test(size=(140, 48), notifications=True) as pilot:
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                await pilot.pause()
                assert "ETA" in _status(screen) and not screen.gone
                assert screen.unavailable("resume_batch") == "an engine runs this batch"
                batch.rename(tmp_path / "moved")
                for _ in range(100):
                    await pilot.pause(0.05)
                    if screen.gone:
                        break
                await pilot.pause()
                shown = _status(screen)
                assert shown.lstrip().startswith("GONE") and "ETA" not in shown, shown
                assert "[GONE]" in _title(screen) and "RUNNING" not in _title(screen), _title(screen)
                assert screen.live is not None and screen.live.in_flight == []  # nothing known to run
                counts = " ".join(str(w.render()) for w in screen.query("#counts Static"))
                assert "running 0/" in counts and "queued 0" in counts, counts
                assert screen.unavailable("resume_batch") == "the batch folder is gone"
                notes.extend(n.message for n in app._notifications)
                await pilot.press("u")
                await pilot.pause()
                notes.extend(n.message for n in app._notifications)

    run(body)
    gone = f"the batch folder {batch} is gone (moved or deleted): these are its last figures"
    assert gone in notes
    assert f"batch {batch.name}: its folder is gone" in notes


def test_triage_on_a_batch_whose_folder_went_says_it_is_gone_not_to_recover(tmp_path: Path) -> None:
    """A retry, skip or run-first of the item under the cursor, and its detail, once the batch
    folder went: each says the folder is gone. It said '.../items.db does not exist; rebuild it
    from results.jsonl and the source with `batchtui recover ID`', a way out with nothing left to
    rebuild from (the table still shows the rows of the store it had open)."""
    batch = make_batch(tmp_path, state=BatchState.HALTED, halt_reason="max failure rate")
    notes: list[str] = []

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
        )
        async with app.run_test(size=(140, 48), notifications=True) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            await pilot.pause()
            batch.rename(tmp_path / "moved")
            for _ in range(100):
                await pilot.pause(0.05)
                if screen.gone:
                    break
            assert screen.gone
            for key in ("r", "s", "plus"):
                await pilot.press(key)
                await pilot.pause()
                assert app.screen is screen, f"{key}: a dialog over a store that is gone"
            notes.extend(n.message for n in app._notifications)

    run(body)
    said = [n for n in notes if "items.db" in n]
    assert len(said) == 3, notes
    for note in said:
        assert f"the batch folder {batch} is gone (moved or deleted)" in note, note
        assert "recover" not in note, note


def test_a_store_opened_once_its_folder_went_says_the_folder_is_gone(tmp_path: Path) -> None:
    """ItemQueries and ItemStore on a batch folder that is gone say so; a folder that lost only
    its items.db still gets the way to rebuild it."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED)
    (batch / "items.db").unlink()
    with pytest.raises(StoreError, match=r"rebuild it from results\.jsonl"):
        ItemQueries(batch / "items.db")
    batch.rename(tmp_path / "moved")
    for opener in (ItemQueries, ItemStore.open, ItemStore.open_readonly):
        with pytest.raises(StoreError) as got:
            opener(batch / "items.db")
        assert str(got.value) == f"the batch folder {batch} is gone (moved or deleted)", opener
