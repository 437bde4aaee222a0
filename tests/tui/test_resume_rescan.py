"""The resume dialog's rescan (issue 20, point 5): ticked, it says what a rescan would find
("N new, M missing", read without changing the batch) and the command gets --rescan; confirmed,
the resume reads the source again before the engine starts."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.store import ItemQueries

from .conftest import run
from .test_resume_dialog import HALF_FAIL, _app, _halted, _open_dialog, _until


def test_the_dialog_shows_what_a_rescan_finds_and_resumes_with_it(tmp_path: Path) -> None:
    batch = _halted(tmp_path)
    source = tmp_path / "halted.txt"
    # "1" disappears; 40 and 41 are new.
    source.write_text("".join(f"{i}\n" for i in range(42) if i != 1))

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)
            plan = dialog.query_one("#resume-plan", Static)
            assert "Rescan" not in str(plan.render())
            await pilot.click("#rescan")
            await _until(pilot, lambda: "Rescan: 2 new, 1 missing." in str(plan.render()), "the rescan's preview")
            assert dialog.command().endswith(" --rescan")
            with ItemQueries(batch.items_db) as queries:
                assert queries.counts().total == 40  # the preview changed nothing
            await pilot.click("#resume")  # (enter would tick the focused checkbox)
            await _until(pilot, lambda: app.engine_result is not None, "the engine's end")

    run(body)
    with ItemQueries(batch.items_db) as queries:
        assert queries.counts().total == 42


def _finished_then_grown(tmp_path: Path, template: str, lines: str, grown: str) -> BatchDir:
    """A batch of ``lines`` run to its end with ``template``, its source then holding ``grown``."""
    source = tmp_path / "evens.txt"
    source.write_text(lines)
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2}, environ={}, cwd=tmp_path)
    batch = create_batch(config, build_spec([str(source)]), shell_spec(template))
    BatchRunner(batch, config=config, action="run").run()
    source.write_text(grown)
    return batch


def test_a_finished_batch_whose_source_grew_is_rescanned_from_the_dashboard(tmp_path: Path) -> None:
    """A finished batch with nothing failed: `u` opens the dialog with the rescan ticked (the
    only resume it has, as `batchtui resume --rescan`), which says what it finds; confirmed, the
    new items run. Before, `u` said "finished: nothing to resume"."""
    batch = _finished_then_grown(tmp_path, HALF_FAIL, "0\n2\n4\n", "0\n2\n4\n6\n8\n")

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)
            plan = dialog.query_one("#resume-plan", Static)
            await _until(pilot, lambda: "Rescan: 2 new, 0 missing." in str(plan.render()), "the rescan's preview")
            assert str(plan.render()).startswith("The batch is finished: only what the rescan finds will run.")
            await pilot.click("#rescan")  # unticked: nothing would run, and the plan says how to change it
            await _until(
                pilot,
                lambda: str(plan.render()).startswith("Nothing to run: the batch is finished (tick rescan"),
                "the plan without the rescan",
            )
            await pilot.click("#rescan")
            await _until(pilot, lambda: "Rescan: 2 new, 0 missing." in str(plan.render()), "the rescan again")
            assert dialog.command().endswith(" --rescan")
            await pilot.click("#resume")
            await _until(pilot, lambda: app.engine_result is not None, "the engine's end")

    run(body)
    with ItemQueries(batch.items_db) as queries:
        counts = queries.counts()
    assert (counts.total, counts.complete) == (5, 5)


def test_a_rescan_the_preflight_refuses_adds_nothing_to_the_batch(tmp_path: Path) -> None:
    """The dialog's resume read the source before its preflight: refused (the command's script
    is gone), the new keys were in the batch anyway, pending, for a resume that did not run."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    batch = _finished_then_grown(tmp_path, f"{script} {{}}", "0\n2\n", "0\n2\n4\n")
    script.unlink()

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)
            plan = dialog.query_one("#resume-plan", Static)
            await _until(pilot, lambda: "Rescan: 1 new, 0 missing." in str(plan.render()), "the rescan's preview")
            await pilot.click("#resume")
            error = dialog.query_one("#resume-error", Static)
            await _until(pilot, lambda: "is not an executable file" in str(error.render()), "the refusal")
            assert app.engine_result is None

    run(body)
    with ItemQueries(batch.items_db) as queries:
        assert queries.counts().total == 2
