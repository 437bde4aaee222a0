"""The batch browser made for choosing (issue 19, point 2): the name first and never gone, the
state with its halt reason, a relative age, source and command; the preview of the selected
batch (its top error groups, its runs and what each resume changed, the command that resumes
it); enter watches a batch an engine runs, else opens its dashboard."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from textual.timer import Timer
from textual.widgets import DataTable

from batchtui.engine.batchdir import BatchDir, resume_command
from batchtui.engine.batches import BatchScope
from batchtui.engine.fmt import fmt_ago
from batchtui.engine.models import BatchState
from batchtui.engine.preview import preview
from batchtui.engine.registry import register, registered
from batchtui.engine.store import ItemQueries
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.cli import main
from batchtui.tui.keys import key_entries
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.browser_columns import COLUMNS, PRIORITY, cut_end, fit_columns
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.text import cut_middle
from batchtui.tui.widgets.batch_preview import BatchPreviewPane
from batchtui.tui.widgets.batch_table import BatchTable

from .conftest import run
from .fixtures import FROZEN, T0, hold_lock, make_batch

REASON = "failure rate 23% over --max-failure-rate 20% after 50 items"
NAME = "documents to summarize"


def _app(out: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


def _text(widget: object) -> str:
    content = getattr(widget, "content", None)
    return str(getattr(content, "plain", content))


def halted_batch(out: Path) -> Path:
    """A halted batch that ran, was stopped, and halted on its resume with two overrides."""
    batch = make_batch(out, state=BatchState.HALTED, halt_reason=REASON)
    data = orjson.loads((batch / "manifest.json").read_bytes())
    data["history"] = [
        {
            "action": "run",
            "at": T0,
            "pid": 4242,
            "host": "worker-1",
            "ended_at": "2026-11-18T09:05:00.000+00:00",
            "outcome": "stopped",
        },
        {
            "action": "resume",
            "at": "2026-11-18T09:10:00.000+00:00",
            "pid": 5151,
            "host": "worker-2",
            "overrides": {"workers": 8, "max_failure_rate": 0.2},
            "ended_at": "2026-11-18T09:12:30.000+00:00",
            "outcome": "halted",
        },
    ]
    (batch / "manifest.json").write_bytes(orjson.dumps(data))
    return batch


async def _until(pilot: object, pred: object, timeout: float = 10.0) -> None:
    """Let the app run until ``pred()`` holds (a deadline, never a fixed sleep)."""
    waited = 0.0
    while not pred():  # type: ignore[operator]
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)  # type: ignore[attr-defined]
        waited += 0.05


async def _reread(pilot: object, screen: BrowserScreen) -> None:
    """f5, as a user, and wait for the batches read again."""
    before = screen.rows
    await pilot.press("f5")  # type: ignore[attr-defined]
    await _until(pilot, lambda: screen.rows is not before)


async def _select(pilot: object, screen: BrowserScreen, batch_id: str) -> BatchPreviewPane:
    """Move the cursor to ``batch_id`` (as a user: arrow keys) and wait for its preview."""
    await _until(pilot, lambda: any(r.batch_id == batch_id for r in screen.rows))
    for _ in range(len(screen.rows)):
        ids = [r.batch_id for r in screen.rows]
        if screen.selected_id == batch_id:
            break
        current = ids.index(screen.selected_id) if screen.selected_id in ids else 0
        await pilot.press("down" if ids.index(batch_id) > current else "up")  # type: ignore[attr-defined]
    assert screen.selected_id == batch_id
    pane = screen.query_one(BatchPreviewPane)
    await _until(pilot, lambda: pane.preview is not None and pane.preview.summary.batch_id == batch_id)
    return pane


def test_the_preview_of_a_halted_batch_says_why_what_failed_its_runs_and_how_to_resume(tmp_path: Path) -> None:
    finished = make_batch(tmp_path, state=BatchState.FINISHED)
    halted = halted_batch(tmp_path)
    with ItemQueries(halted / "items.db") as queries:
        groups = queries.error_groups(limit=5)
    assert len(groups) == 3  # the fixture's three error types

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            pane = await _select(pilot, screen, halted.name)
            head = _text(pane.query_one("#preview-head"))
            assert NAME in head and halted.name in head
            assert f"halted: {REASON}" in head
            assert "180/300 done" in head and "11 failed" in head
            assert "/data/urls.txt (lines)" in head and "summarize --url {} --out {out}" in head
            # Its top error groups: the ids `batchtui errors` and --group use, with their counts.
            errors = _text(pane.query_one("#preview-errors")).splitlines()
            assert [line.split()[:2] for line in errors] == [[g.id, str(g.count)] for g in groups]
            assert "TimeoutError: upstream timed out" in "\n".join(errors)
            # Its runs: when each began, how it ended, what the resume changed.
            runs = _text(pane.query_one("#preview-runs")).splitlines()
            assert re.match(r"run\s+2026-11-18 09:00  stopped after 5m00s  worker-1 pid 4242", runs[0]), runs
            assert re.match(rf"resume 2026-11-18 09:10  halted: {re.escape(REASON)} after 2m30s", runs[1]), runs
            assert runs[2].strip() == "changed: workers 8, max_failure_rate 0.2", runs
            # The exact command that resumes it: the one the CLI prints.
            commands = _text(pane.query_one("#preview-commands")).splitlines()
            assert commands == [
                f"$ {resume_command(BatchDir(halted))}",
                "and the 11 failed items again:",
                f"$ {resume_command(BatchDir(halted), retry_failed=True)}",
            ]
            shown = CliRunner().invoke(main, ["show", halted.name, "-o", str(tmp_path)])
            printed = [line.split(":", 1)[1].strip() for line in shown.output.splitlines() if ":" in line]
            assert commands[0][2:] in printed and commands[2][2:] in printed, shown.output
            # A finished batch: nothing to resume, but its failed items can be retried.
            pane = await _select(pilot, screen, finished.name)
            assert _text(pane.query_one("#preview-commands")).splitlines() == [
                "to run the 18 failed items again:",
                f"$ {resume_command(BatchDir(finished), retry_failed=True)}",
            ]

    run(body)


def test_enter_watches_a_running_batch_and_opens_the_dashboard_of_one_at_rest(tmp_path: Path) -> None:
    running = make_batch(tmp_path, state=BatchState.RUNNING)
    finished = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        with hold_lock(running):
            app = _app(tmp_path)
            async with app.run_test(size=(120, 40)) as pilot:
                screen = app.screen
                assert isinstance(screen, BrowserScreen)
                pane = await _select(pilot, screen, running.name)
                assert "an engine runs it (pid 4242)" in _text(pane.query_one("#preview-commands"))
                assert screen.active_bindings["enter"].binding.description == "Watch"
                await pilot.press("enter")
                await _until(pilot, lambda: isinstance(app.screen, DashboardScreen))
                dashboard = app.screen
                assert isinstance(dashboard, DashboardScreen) and dashboard.bdir.batch_id == running.name
                await _until(pilot, lambda: dashboard.engine_live)
                await pilot.press("b")
                await _until(pilot, lambda: isinstance(app.screen, BrowserScreen))
                screen = app.screen
                assert isinstance(screen, BrowserScreen)
                await _select(pilot, screen, finished.name)
                assert screen.active_bindings["enter"].binding.description == "Open"
                await pilot.press("enter")
                await _until(pilot, lambda: isinstance(app.screen, DashboardScreen))
                dashboard = app.screen
                assert isinstance(dashboard, DashboardScreen) and dashboard.bdir.batch_id == finished.name
                await _until(pilot, lambda: dashboard.live is not None)
                assert not dashboard.engine_live

    run(body)


@pytest.mark.parametrize(("size", "wide"), [((80, 24), False), ((200, 60), True)])
def test_the_columns_at_80_and_200_columns_keep_the_name(tmp_path: Path, size: tuple[int, int], wide: bool) -> None:
    running = make_batch(tmp_path, state=BatchState.RUNNING)
    # The pid and a NOT RESPONDING badge once widened the table until the name was cut off.
    frozen = make_batch(tmp_path, state=BatchState.RUNNING, batch_id="20261118_090000_aaaa0005", updated_at=T0)
    halted = halted_batch(tmp_path)

    async def body() -> None:
        with hold_lock(running, pid=4_194_304), hold_lock(frozen, pid=4_194_305):
            app = _app(tmp_path)
            async with app.run_test(size=size) as pilot:
                screen = app.screen
                assert isinstance(screen, BrowserScreen)
                await _until(pilot, lambda: len(screen.rows) == 3)
                table = screen.query_one("#batches")
                pane = screen.query_one(BatchPreviewPane)
                # The table never scrolls sideways: every column is on screen, whole.
                assert table.virtual_size.width <= table.size.width
                assert {"name", "state", "progress", "age"} <= set(screen.widths)
                cells = screen.cells(halted.name)
                assert cells["name"].startswith("documents to summ") and cells["name"].endswith(" aaaa0003")
                assert cells["state"].startswith("halted: failure rate")  # the rest in the preview
                assert cells["age"] == "2 h ago"  # its last change at 09:05, the clock at 11:06
                assert screen.cells(frozen.name)["state"].startswith("running NOT RESPONDIN")  # in the warning colour
                if wide:  # the preview beside the table; source and command in full
                    assert pane.region.x >= table.region.right and pane.region.y == table.region.y
                    assert cells["name"] == f"{NAME} aaaa0003"
                    assert cells["source"] == "/data/urls.txt (lines)"
                    # The state's reason took the room left: the command is cut in the middle.
                    assert cells["command"] == cut_middle("summarize --url {} --out {out}", screen.widths["command"])
                    assert cells["command"].startswith("summarize -") and cells["command"].endswith("--out {out}")
                else:  # the preview under the table
                    assert pane.region.y >= table.region.bottom and pane.region.x == table.region.x
                    assert "source" not in screen.widths

    run(body)


def test_p_toggles_the_preview_and_a_short_terminal_hides_it(tmp_path: Path) -> None:
    make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await _until(pilot, lambda: len(screen.rows) == 1)
            pane = screen.query_one(BatchPreviewPane)
            assert pane.display
            await pilot.press("p")
            assert not pane.display
            await pilot.press("p")
            assert pane.display
            await pilot.resize_terminal(100, 19)
            await _until(pilot, lambda: not pane.display)
            await pilot.resize_terminal(100, 20)
            await _until(pilot, lambda: pane.display)

    run(body)


def test_an_empty_folder_and_hostile_names(tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def empty() -> None:
        app = _app(out)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause(0.1)
            assert "No batches in" in _text(screen.query_one("#browser-empty"))
            assert "No batch selected" in _text(screen.query_one("#preview-head"))
            await pilot.press("enter", "r", "d", "p", "p")  # nothing selected: nothing happens
            assert app.screen is screen

    run(empty)
    batch = make_batch(out, state=BatchState.STOPPED)
    data = orjson.loads((batch / "manifest.json").read_bytes())
    data["name"] = "[bold]x\x1b[2J" + "y" * 200
    data["processor"]["command"] = "echo [red]{}\x07"
    (batch / "manifest.json").write_bytes(orjson.dumps(data))

    async def hostile() -> None:
        app = _app(out)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            pane = await _select(pilot, screen, batch.name)
            name = screen.cells(batch.name)["name"]
            assert name.startswith("[bold]x\\x1b[2J") and name.endswith("… aaaa0009"), name
            head = _text(pane.query_one("#preview-head"))
            assert "[bold]x\\x1b[2Jyyy" in head and "echo [red]{}\\x07" in head
            assert "\x1b" not in head and "\x07" not in head

    run(hostile)


def test_fit_columns_keeps_the_name_and_the_priority_at_every_width() -> None:
    rank = {key: i for i, key in enumerate(PRIORITY)}
    for width in range(1, 320):
        for natural in (None, {"engine": 0, "name": 12, "failed": 6}):
            widths = fit_columns(width, natural)
            assert "name" in widths, width
            assert sum(w + 2 for w in widths.values()) <= max(width, 3), (width, widths)
            # A column is there only when every column of more priority is.
            kept = [k for k in PRIORITY if k in widths]
            assert kept == [k for k in PRIORITY if rank[k] <= max(rank[k2] for k2 in kept)], (width, widths)
            assert list(widths) == [c.key for c in COLUMNS if c.key in widths]  # shown in display order
    assert set(fit_columns(78)) == {"name", "state", "progress", "age"}  # 80 columns
    assert fit_columns(78)["name"] >= 30
    # A column never wider than its widest text: the room goes to the others.
    assert fit_columns(78, {"name": 12})["name"] == 12 and "failed" in fit_columns(78, {"name": 12})


def test_fmt_ago() -> None:
    said = [fmt_ago(s) for s in (None, -30, 0, 4, 5, 59, 60, 3599, 3600, 86399, 86400, 45 * 86400, 800 * 86400)]
    assert said == [
        "?",
        "just now",
        "just now",
        "just now",
        "5 s ago",
        "59 s ago",
        "1 min ago",
        "59 min ago",
        "1 h ago",
        "23 h ago",
        "1 d ago",
        "1 mo ago",
        "2 y ago",
    ]


def test_the_help_and_the_palette_say_what_the_browser_keys_do(tmp_path: Path) -> None:
    running = make_batch(tmp_path, state=BatchState.RUNNING)
    finished = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        with hold_lock(running):
            app = _app(tmp_path)
            async with app.run_test(size=(120, 40)) as pilot:
                screen = app.screen
                assert isinstance(screen, BrowserScreen)
                await _select(pilot, screen, finished.name)
                assert screen.unavailable("open") is None and screen.unavailable("resume") == (
                    "the batch is finished: nothing to resume"
                )
                assert screen.unavailable("watch") == "no engine runs this batch (enter opens its dashboard)"
                await _select(pilot, screen, running.name)
                assert screen.unavailable("watch") is None
                assert screen.unavailable("open") == "an engine (pid 4242) runs this batch (enter watches it)"
                # The help and the palette are made from these: every key says what it does.
                said = {e.action: (e.key_text, e.tooltip) for e in key_entries(screen) if e.node is screen}
                assert said["watch"] == ("⏎", "Watch the engine that runs this batch")
                assert said["open"][0] == "⏎" and "dashboard" in said["open"][1]
                assert said["toggle_preview"][0] == "p" and "preview" in said["toggle_preview"][1]
                assert not any(e.key_text == "w" for e in key_entries(screen))  # "w watches it" was said, never bound

    run(body)


def test_a_registered_batch_whose_folder_is_gone_is_shown_as_such_and_d_forgets_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    kept = make_batch(elsewhere, state=BatchState.FINISHED)
    moved = make_batch(elsewhere, state=BatchState.HALTED, halt_reason=REASON, batch_id="20261118_100000_aaaa0005")
    for batch in (kept, moved):
        register(batch, batch.name, NAME, T0)
    shutil.rmtree(moved)  # moved or deleted by hand
    here = tmp_path / "here"  # the operator's folder: no batch in it

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=BatchScope(here),
            watch_files=False,
            clock=lambda: FROZEN,
            handle_hangup=False,
            strict_display=True,
        )
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await _until(pilot, lambda: len(screen.rows) == 2)
            # The gone one is the newer, and listed last: hundreds of them would bury the rest.
            assert [r.batch_id for r in screen.rows] == [kept.name, moved.name]
            assert _text(screen.query_one("#browser-title")).startswith("1 batch and 1 gone (listed last) from every")
            assert screen.cells(kept.name)["state"] == "finished"
            assert screen.cells(moved.name)["state"] == cut_end(
                f"gone: {moved} is gone (moved or deleted)", screen.widths["state"]
            )
            pane = await _select(pilot, screen, moved.name)
            assert f"gone: {moved} is gone (moved or deleted)" in _text(pane.query_one("#preview-head"))
            assert not pane.query_one("#preview-commands").display  # nothing to resume
            await pilot.press("enter")  # cannot be opened: says so, stays
            assert app.screen is screen
            await pilot.press("d")
            await _until(pilot, lambda: app.screen is not screen)
            await pilot.press("y")
            await _until(pilot, lambda: [r.batch_id for r in screen.rows] == [kept.name])
            assert _text(screen.query_one("#browser-title")).startswith("1 batch from every folder")
            assert [e.batch_id for e in registered()] == [kept.name]
            assert kept.exists()

    run(body)


def test_b_from_a_dashboard_goes_back_to_the_browser_of_every_batch(tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    local = make_batch(here, state=BatchState.FINISHED)
    remote = make_batch(elsewhere, state=BatchState.HALTED)
    register(remote, remote.name, NAME, T0)

    async def body() -> None:
        app = BatchtuiApp(output_dir=BatchScope(here), watch_files=False, clock=lambda: FROZEN, handle_hangup=False)
        async with app.run_test(size=(120, 40)) as pilot:
            browser = app.screen
            assert isinstance(browser, BrowserScreen)
            await _select(pilot, browser, remote.name)
            depth = len(app.screen_stack)
            for _ in range(3):  # enter, b, enter, b...: the same browser, the stack as deep
                await pilot.press("enter")
                await _until(pilot, lambda: isinstance(app.screen, DashboardScreen))
                await pilot.press("b")
                await _until(pilot, lambda: app.screen is browser)
                assert len(app.screen_stack) == depth and browser.selected_id == remote.name

        # Started on a dashboard (batchtui watch): b lists every batch, not the batch's folder.
        app = BatchtuiApp(
            output_dir=BatchScope(here), batch=remote, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: isinstance(app.screen, DashboardScreen))
            await pilot.press("b")
            await _until(pilot, lambda: isinstance(app.screen, BrowserScreen))
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await _until(pilot, lambda: {r.batch_id for r in screen.rows} == {local.name, remote.name})

    run(body)


def test_reading_the_batches_again_reads_a_preview_again_only_when_its_batch_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchtui.tui.screens import browser

    finished = make_batch(tmp_path, state=BatchState.FINISHED)
    read: list[str] = []

    def counting(row: object) -> object:
        read.append(row.batch_id)  # type: ignore[attr-defined]
        return preview(row)  # type: ignore[arg-type]

    monkeypatch.setattr(browser, "preview", counting)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await _select(pilot, screen, finished.name)
            for _ in range(2):  # f5 twice: the batch is as it was
                before = screen.rows
                await pilot.press("f5")
                await _until(pilot, lambda before=before: screen.rows is not before)  # type: ignore[misc]
            assert read == [finished.name]
            data = orjson.loads((finished / "manifest.json").read_bytes())
            data["name"] = "renamed"
            (finished / "manifest.json").write_bytes(orjson.dumps(data))
            before = screen.rows
            await pilot.press("f5")
            await _until(pilot, lambda: screen.rows is not before and len(read) == 2)
            pane = screen.query_one(BatchPreviewPane)
            await _until(pilot, lambda: pane.preview is not None and pane.preview.summary.name == "renamed")

    run(body)


def test_reading_the_batches_again_redraws_only_the_cells_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 2 s (f5 here) the batches are read again. The table is rebuilt only when the batches
    listed change; otherwise the cells whose text changed are drawn again in place: the ages as
    time goes by, a batch whose files changed. (It was rebuilt every time: with 300 batches an
    idle browser took ~10% of a core.)"""
    finished = make_batch(tmp_path, state=BatchState.FINISHED)
    halted = make_batch(tmp_path, state=BatchState.HALTED, halt_reason=REASON)
    now = [FROZEN]
    fills: list[int] = []
    rebuild = BatchTable._fill

    def counting(self: BatchTable) -> None:
        fills.append(len(self.batches))
        rebuild(self)

    monkeypatch.setattr(BatchTable, "_fill", counting)

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, watch_files=False, clock=lambda: now[0], handle_hangup=False, strict_display=True
        )
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await _until(pilot, lambda: len(screen.rows) == 2)
            built = len(fills)
            first = {b.name: screen.cells(b.name) for b in (finished, halted)}
            for _ in range(2):
                await _reread(pilot, screen)
            assert len(fills) == built
            assert {b.name: screen.cells(b.name) for b in (finished, halted)} == first

            now[0] += 3 * 3600  # three hours on: every age moves, nothing else
            await _reread(pilot, screen)
            assert len(fills) == built
            later = screen.cells(finished.name)
            assert later["age"] != first[finished.name]["age"]
            assert later["age"] == fmt_ago(now[0] - _updated(finished))
            assert {k: v for k, v in later.items() if k != "age"} == {
                k: v for k, v in first[finished.name].items() if k != "age"
            }

            data = orjson.loads((finished / "manifest.json").read_bytes())
            data["name"] = "renamed in place"
            (finished / "manifest.json.tmp").write_bytes(orjson.dumps(data))
            (finished / "manifest.json.tmp").replace(finished / "manifest.json")
            await _reread(pilot, screen)
            assert len(fills) == built
            assert screen.cells(finished.name)["name"].startswith("renamed in place")
            assert screen.cells(halted.name) == {**first[halted.name], "age": screen.cells(halted.name)["age"]}

            make_batch(tmp_path, state=BatchState.PAUSED, batch_id="20261118_090000_aaaa0005")
            await _reread(pilot, screen)
            assert fills[built:] == [3]  # another batch: the table is built again, once
            table = screen.query_one("#batches", DataTable)
            assert table.row_count == 3

    run(body)


def _updated(batch: Path) -> float:
    from batchtui.engine.batchdir import parse_iso
    from batchtui.engine.summary import summarize

    updated = summarize(batch).updated_at
    assert updated is not None
    return parse_iso(updated)


def test_readings_take_at_most_their_share_of_a_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The browser reads the batches every 2 s, or less often when a reading costs more than
    4% of a core (thousands of batches), and after f5 still keeps one reading pending."""
    from batchtui.tui.screens import browser

    assert browser.reload_in(0.0) == browser.REFRESH_S == 2.0
    assert browser.reload_in(0.08) == 2.0  # exactly 4% of a core: as often as it can
    assert browser.reload_in(0.25) == pytest.approx(6.25)
    assert browser.reload_in(1.0) == pytest.approx(25.0)

    make_batch(tmp_path, state=BatchState.FINISHED)
    ticks = iter(range(10**6))
    monkeypatch.setattr(browser, "thread_time", lambda: next(ticks) * 0.1)  # each reading: 0.2 s
    reads: list[float] = []
    listing = browser.BatchLister.list

    def counting(self: object, **kw: object) -> object:
        reads.append(0)
        return listing(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(browser.BatchLister, "list", counting)
    timers: list[Timer] = []
    set_timer = BrowserScreen.set_timer

    def recording(self: BrowserScreen, *args: Any, **kw: Any) -> Timer:
        timer = set_timer(self, *args, **kw)
        if args[1:] and getattr(args[1], "__name__", "") == "action_reload":
            timers.append(timer)
        return timer

    monkeypatch.setattr(BrowserScreen, "set_timer", recording)

    async def body() -> None:
        app = BatchtuiApp(
            output_dir=tmp_path, watch_files=True, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
        )
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await _until(pilot, lambda: len(screen.rows) == 1)
            # The first reading read every batch: the second comes as soon as any would.
            assert screen.reload_in == browser.REFRESH_S
            for _ in range(3):
                await pilot.press("f5")
            await _until(pilot, lambda: len(reads) == 4 and len(timers) == 4)
            # Each later reading put the next one 5 s on (0.2 s of CPU: 4% of 5 s) and took
            # back the one pending before it.
            assert [t._task is None for t in timers] == [True, True, True, False]
            assert screen.reload_in == pytest.approx(5.0)

    run(body)


def test_until_the_first_reading_the_title_says_it_reads_not_0_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of batches take a second to read: meanwhile the browser says so (it said
    "0 batches in ...", and showed an empty table)."""
    import threading

    from batchtui.tui.screens import browser

    finished = make_batch(tmp_path, state=BatchState.FINISHED)
    gate = threading.Event()
    listing = browser.BatchLister.list

    def slow(self: object, **kw: object) -> object:
        assert gate.wait(10)
        return listing(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(browser.BatchLister, "list", slow)

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            title = screen.query_one("#browser-title")
            assert _text(title) == f"Reading the batches in {tmp_path}…"
            assert not screen.query_one("#browser-empty").display
            gate.set()
            await _until(pilot, lambda: screen.rows != [])
            assert _text(title) == f"1 batch in {tmp_path}"
            assert screen.cells(finished.name)["state"] == "finished"

    run(body)


def test_a_batch_made_meanwhile_does_not_take_the_cursor(tmp_path: Path) -> None:
    """Batches are listed newest first: one made by another shell comes in above the one the
    operator is on. The cursor stays on that batch (it went to the new one, by its row number)."""
    older = make_batch(tmp_path, state=BatchState.HALTED, halt_reason=REASON)
    newer = make_batch(tmp_path, state=BatchState.FINISHED, batch_id="20261118_100000_aaaa0004")

    async def body() -> None:
        app = _app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            await _select(pilot, screen, newer.name)
            assert [r.batch_id for r in screen.rows].index(newer.name) == 0
            newest = make_batch(tmp_path, state=BatchState.PAUSED, batch_id="20261118_110000_aaaa0005")
            await _reread(pilot, screen)
            assert [r.batch_id for r in screen.rows] == [newest.name, newer.name, older.name]
            assert screen.selected_id == newer.name

    run(body)
