"""The app's resume (the browser's ``r``) runs engine/resume.py's plan: a batch another engine
runs is refused at once, naming it; a finished one has nothing to do; neither starts an engine
here nor leaves the batch locked."""

from __future__ import annotations

from pathlib import Path

from batchtui.engine.batchdir import BatchLock, BatchLocked
from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen

from .conftest import run
from .fixtures import FROZEN, hold_lock, make_batch


def _app(out: Path) -> BatchtuiApp:
    return BatchtuiApp(output_dir=out, watch_files=False, clock=lambda: FROZEN, handle_hangup=False)


def _free(batch: Path) -> bool:
    probe = BatchLock(batch / "lock")
    try:
        probe.acquire(wait=0)
    except BatchLocked:
        return False
    probe.release()
    return True


def _resume(out: Path, batch: Path) -> list[tuple[str, str]]:
    said: list[tuple[str, str]] = []

    async def body() -> None:
        app = _app(out)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            app.notify = lambda message, **kw: said.append((str(message), kw.get("severity", "")))  # type: ignore[method-assign]
            app.resume_batch(batch)
            await pilot.pause(0.1)
            assert not app.engine_running and app.runner is None
            assert isinstance(app.screen, BrowserScreen)

    run(body)
    return said


def test_a_batch_another_engine_runs_is_refused_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.PAUSED, n=20)
    with hold_lock(batch, pid=4242, host="worker-1"):
        said = _resume(out, batch)
    assert len(said) == 1 and said[0][1] == "error"
    assert said[0][0].startswith(f"cannot resume: batch {batch.name} is being run by pid 4242 on worker-1")


def test_a_finished_batch_has_nothing_to_resume_and_is_left_unlocked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=20)
    assert _resume(out, batch) == [(f"batch {batch.name} is finished; nothing to resume", "warning")]
    assert _free(batch)
