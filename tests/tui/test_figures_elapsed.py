"""The dashboard's elapsed time after a resume is the batch's (the sum of its runs), with this
run's apart, and agrees with the summary every other view shows (issue 19, point 4)."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchtui.engine.batchdir import BatchDir, parse_iso
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.files import write_model
from batchtui.engine.fmt import fmt_duration
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.summary import summarize
from batchtui.tui.app import BatchtuiApp

from ..conftest import read_live, wait_until
from .conftest import run

#: How long the first run is made to have lasted (a test cannot wait two minutes).
FIRST_RUN_S = 125.0


def _text(widget: object) -> str:
    content = getattr(widget, "content", None)
    return str(getattr(content, "plain", content))


def _first_run_lasted(batch: BatchDir, seconds: float) -> None:
    """The first run began ``seconds`` before it ended (its start moved back)."""
    manifest = batch.read_manifest()
    first = manifest.history[0]
    began = datetime.fromtimestamp(parse_iso(first.ended_at or "") - seconds, UTC).isoformat(timespec="milliseconds")
    history = [first.model_copy(update={"at": began}), *manifest.history[1:]]
    write_model(batch.manifest, manifest.model_copy(update={"history": history}), durable=False, backup=True)


async def _wait_for(pilot: Any, pred: Any, what: str, timeout: float = 30.0, detail: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s ({detail() if detail else ''})")
        await pilot.pause(0.05)


def test_the_dashboard_elapsed_after_a_resume_is_the_batchs_with_this_run_apart(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(6)))
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2, "grace": 0}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec(f"while [ ! -e {gate} ]; do sleep 0.05; done"))
    # Run 1: its items start, wait at the gate, and the run is stopped (they go back to pending).
    first = BatchRunner(batch, config=config)
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: read_live(batch.path)["counts"]["running"] == 2, what="two items running")  # type: ignore[index]
    finally:
        first.request_stop("test", grace=0.0)
        thread.join(30)
    assert not thread.is_alive()
    _first_run_lasted(batch, FIRST_RUN_S)

    runner = BatchRunner(batch, config=config, action="resume")

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, runner=runner, handle_hangup=False)
        async with app.run_test(size=(160, 50)) as pilot:
            try:
                text = app.screen.query_one("#progress-text")
                await _wait_for(
                    pilot,
                    lambda: "(this run " in _text(text),
                    "the resumed run's elapsed",
                    detail=lambda: (_text(text), read_live(batch.path)),
                )
                shown = re.search(r"elapsed (\d+)m(\d+)s \(this run (\d+)s\)", _text(text))
                assert shown is not None, _text(text)
                elapsed = int(shown[1]) * 60 + int(shown[2])
                this_run = int(shown[3])
                # Each figure is rounded to the second: the sum may be one off.
                assert abs(elapsed - (FIRST_RUN_S + this_run)) <= 1, _text(text)
                assert this_run < 60  # this run, not the batch
                gate.touch()
                await _wait_for(pilot, lambda: not app.engine_running, "the run's end")
                await _wait_for(
                    pilot,
                    lambda: "6/6" in _text(text),
                    "the final figures",
                    detail=lambda: (_text(text), read_live(batch.path), app.engine_error),
                )
                # The same time as ls, show and report.json (to the second the line shows).
                summary = summarize(batch)
                assert summary.runs == 2 and summary.duration_s >= FIRST_RUN_S
                assert f"elapsed {fmt_duration(summary.duration_s)} (this run " in _text(text), _text(text)
            finally:
                gate.touch()

    run(body)
