"""The dashboard's resume (``u``, the palette's "Resume batch") on real batches made with the
engine API: the dialog opens only for a resumable batch; its overrides are the CLI's (same
checks, same messages, same history); a run here replaces the finished view by the live run; a
run in the background starts a detached engine that the dashboard then watches."""

from __future__ import annotations

import contextlib
import io
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from textual.pilot import Pilot
from textual.widgets import Input, RadioButton, Static

from batchtui.engine.batchdir import BatchDir, BatchLock, BatchLocked, engine_alive
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.models import BatchState
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.cli.group import main
from batchtui.tui.commands import palette_entries
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.resume_dialog import ResumeDialog

from ..conftest import wait_until
from .conftest import run
from .fixtures import hold_lock
from .test_snapshots import settle

#: Odd lines fail (exit 1): half the items.
HALF_FAIL = "case {} in *[13579]) exit 1;; esac"


def _batch(tmp_path: Path, name: str, n: int = 40, **settings: Any) -> BatchDir:
    """A batch run once by the engine API: with a failure-rate limit it halts early."""
    source = tmp_path / f"{name}.txt"
    source.write_text("".join(f"{i}\n" for i in range(n)))
    flags = {"output_dir": str(tmp_path / "out"), "workers": 2, "name": name, **settings}
    config = load_config(flags, environ={}, cwd=tmp_path)
    batch = create_batch(config, build_spec([str(source)]), shell_spec(HALF_FAIL))
    BatchRunner(batch, config=config, action="run").run()
    return batch


def _halted(tmp_path: Path, name: str = "halted") -> BatchDir:
    batch = _batch(tmp_path, name, max_failure_rate=0.2, min_items=4)
    assert _manifest(batch)["state"] == "halted"
    return batch


def _manifest(batch: BatchDir) -> dict[str, Any]:
    return orjson.loads(batch.manifest.read_bytes())  # type: ignore[no-any-return]


def _app(batch: BatchDir, *, watch_files: bool = False) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=batch.path.parent,
        batch=batch.path,
        watch_files=watch_files,
        handle_hangup=False,
        strict_display=True,
    )


def _free(batch: BatchDir) -> bool:
    probe = BatchLock(batch.lock)
    try:
        probe.acquire(wait=0)
    except BatchLocked:
        return False
    probe.release()
    return True


async def _open_dialog(pilot: Pilot[Any]) -> ResumeDialog:
    await settle(pilot)
    await pilot.press("u")
    await pilot.pause(0.1)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)
    dialog = pilot.app.screen
    assert isinstance(dialog, ResumeDialog) and dialog.plan is not None
    return dialog


async def _fill(pilot: Pilot[Any], dialog: ResumeDialog, **values: str) -> None:
    for name, value in values.items():
        dialog.query_one(f"#field-{name}", Input).value = value
    await pilot.pause(0.1)


async def _until(
    pilot: Pilot[Any],
    pred: Callable[[], object],
    what: str,
    timeout: float = 90.0,
    state: Callable[[], str] | None = None,
) -> None:
    """Let the app run until ``pred`` holds (the app's loop goes on while waiting); ``state``
    says, when the wait runs out, what there was to see."""
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{state()}" if state else ""))


def _on_disk(batch: BatchDir, dashboard: DashboardScreen) -> str:
    """What a wait on a background engine had to go by: the batch's files, the engine holding
    it, and the dashboard's view (a flake of the background test is then told apart: an engine
    that did not finish, or a dashboard that did not see it)."""

    def read(path: Path, tail: int = 0) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            return f"<{exc}>"
        return text[-tail:] if tail else text

    holder = engine_alive(batch.path)
    live = dashboard.live
    return "\n".join(
        [
            f"engine holding the batch: {holder}",
            f"dashboard's live state: {None if live is None else live.state}",
            f"live_progress.json: {read(batch.live_progress)[:600]}",
            f"manifest state: {_manifest(batch).get('state')}",
            f"engine.log (end): {read(batch.engine_log, 2000)}",
        ]
    )


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


# -- which batches ---------------------------------------------------------------------------


def test_the_dialog_opens_only_for_a_resumable_batch(tmp_path: Path) -> None:
    done = _batch(tmp_path, "done", n=10, max_failure_rate=None)  # finished, with failed items
    complete_source = tmp_path / "ok.txt"
    complete_source.write_text("0\n2\n4\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2}, environ={}, cwd=tmp_path)
    complete = create_batch(config, build_spec([str(complete_source)]), shell_spec(HALF_FAIL))
    BatchRunner(complete, config=config, action="run").run()
    # The same, read from stdin: a rescan cannot read it again, so a resume has nothing to do.
    piped = create_batch(config, build_spec(["-"]), shell_spec(HALF_FAIL), stdin=io.StringIO("0\n2\n"))
    BatchRunner(piped, config=config, action="run").run()
    halted = _halted(tmp_path)
    said: list[str] = []

    async def check(batch: BatchDir, opens: bool, lock: bool = False) -> None:
        app = _app(batch)
        async with app.run_test(size=(120, 40)) as pilot:
            app.notify = lambda message, **kw: said.append(str(message))  # type: ignore[method-assign]
            await settle(pilot)
            dashboard = app.screen
            assert isinstance(dashboard, DashboardScreen)
            palette = {e.title: e for e in palette_entries(app, dashboard)}
            assert (palette["Resume batch"].why_not is None) is opens  # else greyed, with why
            await pilot.press("u")
            await settle(pilot)
            assert isinstance(app.screen, ResumeDialog) is opens

    async def body() -> None:
        await check(halted, True)
        await check(done, True)  # finished, but its failed items can be retried
        await check(complete, True)  # finished, but its source can be read again (rescan)
        await check(piped, False)
        assert said[-1] == f"batch {piped.batch_id} is finished: nothing to resume"
        with hold_lock(halted.path, pid=4242):
            await check(halted, False)
        assert said[-1] == "an engine (pid 4242) runs this batch: nothing to resume"

    run(body)


# -- overrides: the CLI's checks, messages and history ------------------------------------------


def test_a_halted_batch_resumed_with_a_raised_limit_runs_to_the_end(tmp_path: Path) -> None:
    batch = _halted(tmp_path)
    before = _manifest(batch)["totals"]
    assert before["pending"] > 20  # it halted at once

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)
            await _fill(pilot, dialog, max_failure_rate="0.9")
            command = str(dialog.query_one("#resume-command", Static).render())
            out = batch.path.parent
            assert command == f"$ batchtui resume {batch.batch_id} --output-dir {out} --max-failure-rate 0.9"
            await pilot.press("enter")
            await _until(pilot, lambda: app.engine_result is not None, "the engine's end")
            screen = app.screen
            # The finished view was replaced by the run's, in this app (not pushed on top of it).
            assert isinstance(screen, DashboardScreen) and screen.in_process
            assert sum(isinstance(s, DashboardScreen) for s in app.screen_stack) == 1
            assert app.engine_result is not None and app.engine_result.state == BatchState.FINISHED

    run(body)
    m = _manifest(batch)
    assert m["state"] == "finished"
    assert m["totals"]["pending"] == 0 and m["totals"]["complete"] + m["totals"]["failed"] == 40
    assert m["history"][-1]["action"] == "resume"
    assert m["history"][-1]["overrides"] == {"max_failure_rate": 0.9}
    assert _free(batch)


def test_the_plan_says_when_the_settings_would_halt_before_anything_starts(tmp_path: Path) -> None:
    """A batch halted by its failure rate, with the limit unchanged, would halt again before
    anything starts (BatchRunner.step): the plan says so, and what would let it run, as the
    fields change (a higher limit, the failed items retried)."""
    batch = _halted(tmp_path)
    before = _manifest(batch)["totals"]

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)

            def plan() -> str:
                return " ".join(str(dialog.query_one("#resume-plan", Static).render()).split())

            assert plan().startswith(
                "Plan: nothing will run: with these settings the batch halts before anything starts (failure rate"
            ), plan()
            assert plan().endswith("To run it: raise the failure-rate limit, or retry the failed items.")
            await _fill(pilot, dialog, max_failure_rate="0.9")
            assert plan().startswith(f"Plan: {before['pending']:,} of 40 items will run"), plan()
            await _fill(pilot, dialog, max_failure_rate="")
            assert plan().startswith("Plan: nothing will run")
            await pilot.click("#retry-failed")
            assert plan().startswith(f"Plan: {before['pending'] + before['failed']:,} of 40 items will run"), plan()

    run(body)


def test_the_plan_says_a_batch_at_its_cost_cap_would_halt_before_anything_starts(tmp_path: Path) -> None:
    """The same for a batch halted at --max-cost (the cap is no field of the dialog: the way on
    is the command line's)."""
    source = tmp_path / "costly.txt"
    source.write_text("".join(f"{i}\n" for i in range(20)))
    flags = {"output_dir": str(tmp_path / "out"), "workers": 1, "name": "costly", "max_cost": 5.0}
    config = load_config(flags, environ={}, cwd=tmp_path)
    batch = create_batch(config, build_spec([str(source)]), shell_spec('echo "{{\\"cost\\": 1}}"'))
    BatchRunner(batch, config=config, action="run").run()
    assert _manifest(batch)["halt_reason"] == "cost 5 reached --max-cost 5"

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)
            plan = " ".join(str(dialog.query_one("#resume-plan", Static).render()).split())
            assert plan == (
                "Plan: nothing will run: with these settings the batch halts before anything starts"
                " (cost 5 reached --max-cost 5). To run it: resume with a higher --max-cost."
            ), plan

    run(body)


def test_overrides_are_recorded_in_the_history_exactly_as_the_cli_records_them(tmp_path: Path) -> None:
    by_dialog = _halted(tmp_path, "dialog")
    by_cli = _halted(tmp_path, "cli")
    flags = ["--workers", "3", "--max-failure-rate", "1", "--min-items", "7", "--timeout", "30", "--retry-failed"]
    shown: list[str] = []

    async def body() -> None:
        app = _app(by_dialog)
        async with app.run_test(size=(120, 40)) as pilot:
            dialog = await _open_dialog(pilot)
            await _fill(pilot, dialog, workers="3", timeout="30", max_failure_rate="1", min_items="7")
            await pilot.click("#retry-failed")
            await pilot.pause(0.1)
            out = str(by_dialog.path.parent)
            assert dialog.command() == " ".join(["batchtui", "resume", by_dialog.batch_id, "--output-dir", out, *flags])
            shown.extend(dialog.argv())
            await pilot.click("#resume")
            await _until(pilot, lambda: app.engine_result is not None, "the engine's end")

    run(body)
    # The very command the dialog showed, run by the CLI on the twin batch.
    code, output = _cli("resume", by_cli.batch_id, *shown[1:], "--headless")
    assert code == 1, output  # some items failed
    ours, theirs = _manifest(by_dialog), _manifest(by_cli)
    assert ours["history"][-1]["overrides"] == theirs["history"][-1]["overrides"]
    assert ours["history"][-1]["overrides"] == {"max_failure_rate": 1.0, "min_items": 7, "timeout": 30.0, "workers": 3}
    assert ours["config"] == {**theirs["config"], "name": "dialog"}
    assert ours["totals"] == theirs["totals"] == {**ours["totals"], "pending": 0, "complete": 20, "failed": 20}


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [("workers", "0", "--workers"), ("timeout", "inf", "--timeout"), ("max_failure_rate", "2", "--max-failure-rate")],
)
def test_an_invalid_value_is_refused_with_the_clis_message_and_nothing_starts(
    tmp_path: Path, field: str, value: str, flag: str
) -> None:
    batch = _halted(tmp_path)
    before = batch.manifest.read_bytes()
    code, output = _cli("resume", str(batch.path), flag, value, "--headless")
    assert code == 2
    cli_error = output.strip().splitlines()[-1].removeprefix("Error: ")

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(120, 40)) as pilot:
            dialog = await _open_dialog(pilot)
            await _fill(pilot, dialog, **{field: value})
            error = dialog.query_one("#resume-error", Static)
            assert error.display and str(error.render()) == cli_error
            await pilot.press("enter")
            await pilot.pause(0.3)
            await app.workers.wait_for_complete()
            assert app.screen is dialog and not app.engine_running and app.runner is None
            # Corrected, the same dialog goes on.
            await _fill(pilot, dialog, **{field: ""})
            assert not error.display

    run(body)
    assert batch.manifest.read_bytes() == before and _free(batch)


# -- in the background --------------------------------------------------------------------------


@contextlib.contextmanager
def _reaped(batch: BatchDir) -> Iterator[None]:
    """Whatever engine holds ``batch`` when the test ends is killed (a failed test leaves none)."""
    try:
        yield
    finally:
        holder = engine_alive(batch.path)
        if holder is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder.pid, signal.SIGKILL)


def test_the_background_choice_starts_a_detached_engine_the_dashboard_watches(tmp_path: Path) -> None:
    batch = _halted(tmp_path)
    seen: dict[str, Any] = {}

    async def body() -> None:
        app = _app(batch, watch_files=True)
        async with app.run_test(size=(120, 40)) as pilot:
            dashboard = app.screen
            dialog = await _open_dialog(pilot)
            await _fill(pilot, dialog, max_failure_rate="0.9", workers="3")
            await pilot.click("#background")
            await pilot.pause(0.1)
            assert dialog.query_one("#background", RadioButton).value
            assert dialog.command().endswith("--workers 3 --max-failure-rate 0.9 --detach")
            await pilot.click("#resume")
            # detach_engine waits for the background engine to take the lock (a loaded machine
            # takes seconds to start a Python process); a refusal would be said in the dialog.
            await _until(pilot, lambda: app.screen is dashboard, "the dialog to close")
            assert not app.engine_running  # not in this app
            assert isinstance(dashboard, DashboardScreen)
            await _until(
                pilot,
                lambda: dashboard.live is not None and dashboard.live.state == BatchState.FINISHED,
                "the dashboard to see the background engine finish",
                state=lambda: _on_disk(batch, dashboard),
            )
            seen["pid"] = _manifest(batch)["history"][-1]["pid"]
            # The engine writes "finished" before it lets go of the lock and exits: the title
            # says "[FINISHED pid N]" until the dashboard's next look at the lock (once a second).
            await _until(
                pilot,
                lambda: "[FINISHED]" in str(dashboard.query_one("#title", Static).render()),
                "the title to say the batch finished, with no engine holding it",
            )
            seen["title"] = str(dashboard.query_one("#title", Static).render())

    with _reaped(batch):
        run(body)
        wait_until(lambda: engine_alive(batch.path) is None, what="the background engine to exit")
    m = _manifest(batch)
    assert m["state"] == "finished" and m["totals"]["pending"] == 0
    assert m["history"][-1]["overrides"] == {"max_failure_rate": 0.9, "workers": 3}
    assert seen["pid"] != os.getpid()  # another process ran it
    assert "[FINISHED]" in seen["title"]


def test_a_finished_batch_without_retry_is_refused_in_the_dialog_which_keeps_its_focus(tmp_path: Path) -> None:
    done = _batch(tmp_path, "done", n=10)  # finished, 5 failed: the dialog ticks retry for it
    before = done.manifest.read_bytes()

    async def body() -> None:
        app = _app(done)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)
            retry = dialog.query_one("#retry-failed")
            assert retry.value  # type: ignore[attr-defined]
            await pilot.click("#retry-failed")  # untick: nothing left to run
            plan = str(dialog.query_one("#resume-plan", Static).render())
            assert plan.startswith("Nothing to run: the batch is finished")
            dialog.query_one("#resume").focus()
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause(0.1)
            error = str(dialog.query_one("#resume-error", Static).render())
            assert error == f"batch {done.batch_id} is finished; nothing to resume"  # the CLI's words
            assert app.screen is dialog and app.focused is dialog.query_one("#resume")
            assert not app.engine_running

    run(body)
    assert done.manifest.read_bytes() == before and _free(done)


def test_enter_on_a_ticked_checkbox_resumes_with_it_ticked(tmp_path: Path) -> None:
    """The operator's pass: space ticked "Retry the failed items", and the enter that followed
    (the button says "Resume (enter)") ticked it off again, the dialog still open."""
    batch = _halted(tmp_path)
    failed = _manifest(batch)["totals"]["failed"]
    assert failed > 0
    import sqlite3

    def failed_once() -> set[int]:
        """Failed items with one attempt (a retry puts them all back; the resumed run, halting
        again, may not run each of them)."""
        db = sqlite3.connect(f"file:{batch.items_db}?mode=ro", uri=True)
        try:
            return {seq for (seq,) in db.execute("SELECT seq FROM items WHERE status='failed' AND attempts=1")}
        finally:
            db.close()

    before = failed_once()
    assert len(before) == failed

    async def body() -> None:
        app = _app(batch)
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await _open_dialog(pilot)
            assert str(dialog.query_one("#retry-failed").label) == f"Retry the {failed} failed items"
            dialog.query_one("#retry-failed").focus()
            await pilot.press("space")
            assert dialog.retry_failed
            await pilot.press("enter")
            await _until(pilot, lambda: app.screen is not dialog, "the dialog to close", timeout=20)
            await _until(pilot, lambda: app.engine_result is not None, "the engine's end")

    run(body)
    # The retry was done: no item of the first run is failed with its one attempt any more (each
    # went back to pending; the resumed run, halting again, may not have run them all).
    assert before.isdisjoint(failed_once())
