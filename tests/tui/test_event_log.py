"""The dashboard's event log: it keeps showing the newest event past its line limit and through
resizes (unless the operator scrolled up to read), and an event read from live_progress.json
carries the time it happened, not the time the dashboard read it. Checked on what is drawn on
the screen: the log's lines can be right while the rows on screen are stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from batchtui.engine.files import read_model, write_model
from batchtui.engine.liveness import EngineStatus, Liveness
from batchtui.engine.models import BatchState, LiveProgress, LockInfo, RecentError
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.messages import EngineFinished, LiveUpdated
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.modals import ConfirmScreen
from batchtui.tui.widgets.event_log import EventLog
from batchtui.tui.widgets.items_table import ItemsTable
from batchtui.tui.widgets.status import GONE

from .conftest import run
from .fixtures import T1, frozen_app, hold_lock, make_batch, until


def _drawn(app: BatchtuiApp, log: EventLog) -> list[str]:
    """The log's rows as the terminal shows them now (its region of the screen)."""
    region = log.scrollable_content_region
    rows = [strip.text for strip in app.screen._compositor.render_strips()]
    return [row[region.x : region.right].rstrip() for row in rows[region.y : region.bottom]]


def _error(seq: int) -> RecentError:
    return RecentError(seq=seq, key=str(seq), error_type="exit 1", category="item", message="exit 1", at=T1, attempt=1)


async def _dashboard(app: BatchtuiApp, pilot: Any) -> tuple[DashboardScreen, EventLog]:
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    log = screen.query_one("#events", EventLog)
    await until(pilot, lambda: screen.live is not None and log.line_count > 0, "the first events")
    await pilot.pause()
    return screen, log


def test_the_log_shows_the_newest_event_once_it_is_full(tmp_path: Path) -> None:
    """Past max_lines the oldest line goes at each write and the scroll offset stays: the rows
    shown must still move on (Log repaints only the new line's row, off screen)."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    base = read_model(batch / "live_progress.json", LiveProgress)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(80, 24)) as pilot:
                screen, log = await _dashboard(app, pilot)
                assert log.max_lines is not None
                # As the engine reports them: a window of the latest errors on each write.
                last = log.max_lines + 100
                for first in range(0, last, 20):
                    window = [_error(seq) for seq in range(first, first + 20)]
                    screen.post_message(LiveUpdated(batch, base.model_copy(update={"recent_errors": window})))
                    await pilot.pause()
                await until(pilot, lambda: f"#{last - 1} try 1" in log.lines[-1], "the last error in the log")
                await pilot.pause()
                drawn = _drawn(app, log)
                assert f"#{last - 1} try 1 item exit 1" in drawn[-1], drawn

    run(body)


def test_the_log_follows_through_resizes_unless_scrolled_up(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(80, 24)) as pilot:
                screen, log = await _dashboard(app, pilot)

                async def event(text: str) -> None:
                    screen._event(text)
                    await pilot.pause()

                for i in range(8):
                    await event(f"before {i}")
                assert "before 7" in _drawn(app, log)[-1]
                await pilot.resize_terminal(200, 60)
                await until(pilot, lambda: not screen.has_class("short"), "the full layout")
                await pilot.pause()
                assert "before 7" in _drawn(app, log)[-1], _drawn(app, log)
                await event("while big")
                assert "while big" in _drawn(app, log)[-1], _drawn(app, log)
                await pilot.resize_terminal(80, 24)
                await until(pilot, lambda: screen.has_class("short"), "the small layout")
                await pilot.pause()
                assert "while big" in _drawn(app, log)[-1], _drawn(app, log)
                for i in range(3):
                    await event(f"after {i}")
                    assert f"after {i}" in _drawn(app, log)[-1], _drawn(app, log)

                # An operator who scrolled up to read keeps their place; back at the end, it follows.
                log.scroll_home(animate=False, immediate=True)
                await pilot.pause()
                top = _drawn(app, log)
                await event("while reading")
                assert _drawn(app, log) == top
                await pilot.resize_terminal(200, 60)
                await until(pilot, lambda: not screen.has_class("short"), "the full layout")
                await pilot.resize_terminal(80, 24)
                await until(pilot, lambda: screen.has_class("short"), "the small layout")
                await pilot.pause()
                assert "while reading" not in "\n".join(_drawn(app, log))
                log.scroll_end(animate=False, immediate=True)
                await pilot.pause()
                await event("reading done")
                assert "reading done" in _drawn(app, log)[-1], _drawn(app, log)

    run(body)


def test_replayed_errors_carry_the_time_they_happened(tmp_path: Path) -> None:
    """A finished batch opened later: its recent errors are stamped with their own time (T1,
    09:05:00 UTC), not the dashboard's clock (FROZEN, 11:06:40); a malformed time falls back to
    the clock rather than losing the line."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED)
    base = read_model(batch / "live_progress.json", LiveProgress)

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(120, 40)) as pilot:
            screen, log = await _dashboard(app, pilot)
            await until(pilot, lambda: any("#3 try 3" in line for line in log.lines), "the replayed error")
            replayed = next(line for line in log.lines if "#3 try 3" in line)
            assert replayed.startswith("09:05:00 #3 try 3 transient TimeoutError"), replayed
            odd = base.recent_errors[0].model_copy(update={"seq": 4, "at": "yesterday"})
            screen.post_message(LiveUpdated(batch, base.model_copy(update={"recent_errors": [odd]})))
            await until(pilot, lambda: "#4 try 3" in log.lines[-1], "the error with a malformed time")
            assert log.lines[-1].startswith("11:06:40 #4 try 3"), log.lines[-1]

    run(body)


def _at(hms: str) -> str:
    return f"2026-11-18T{hms}.000+00:00"


def test_a_dashboard_opened_late_replays_each_line_at_its_own_time_in_order(tmp_path: Path) -> None:
    """A finished batch opened later: its state, warnings and errors are stamped with the time
    each happened (the state with the write that ended the run, a warning with the time the
    engine gave it), not the dashboard's clock (FROZEN, 11:06:40), and listed in that order,
    before the line that the dashboard started watching. A warning with no time of its own
    gets the clock."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED, updated_at=_at("09:10:00"))
    live = read_model(batch / "live_progress.json", LiveProgress)
    late = _error(40).model_copy(update={"at": _at("09:09:59")})
    warnings = [f"{_at('09:07:30')} --on-event new-group exited 3", "a warning of an older engine"]
    write_model(
        batch / "live_progress.json",
        live.model_copy(update={"recent_errors": [late, *live.recent_errors], "warnings": warnings}),
    )

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(120, 40)) as pilot:
            _screen, log = await _dashboard(app, pilot)
            await until(pilot, lambda: any("watching" in line for line in log.lines), "the watching line")
            assert list(log.lines) == [
                "09:05:00 #3 try 3 transient TimeoutError: upstream timed out after 30s fetching https://api.example.com/v1/doc/17",
                "09:07:30 warning: --on-event new-group exited 3",
                "09:09:59 #40 try 1 item exit 1",
                "09:10:00 state finished",
                "11:06:40 warning: a warning of an older engine",
                f"11:06:40 watching batch {batch.name}",
            ]

    run(body)


def test_a_running_batch_opened_late_says_it_runs_since_its_run_began(tmp_path: Path) -> None:
    """Its last write is a moment ago (the heartbeat, 11:06:39.6) but it has run for 300 s: the
    state line says 11:01:39, when the run began."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    live = read_model(batch / "live_progress.json", LiveProgress)
    write_model(batch / "live_progress.json", live.model_copy(update={"run_elapsed_s": 300.0}))

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(120, 40)) as pilot:
                _screen, log = await _dashboard(app, pilot)
                assert "11:01:39 state running" in log.lines, list(log.lines)

    run(body)


def test_the_runs_last_items_and_its_end_come_before_engine_finished(tmp_path: Path) -> None:
    """The engine in the app's thread returns (EngineFinished) before the watcher has read its
    last write: that write's errors, then its state, then "engine finished", in the order they
    happened, however late the watcher's read comes. Within one write an error comes before the
    end it led to."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    running = read_model(batch / "live_progress.json", LiveProgress)

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(120, 40)) as pilot:
            screen, log = await _dashboard(app, pilot)
            last = [_error(seq).model_copy(update={"at": _at(f"11:06:3{seq - 50}")}) for seq in (50, 51)]
            final = running.model_copy(
                update={"state": BatchState.FINISHED, "updated_at": _at("11:06:39"), "recent_errors": last}
            )
            write_model(batch / "live_progress.json", final)  # the engine's last write, not read yet
            screen.post_message(EngineFinished(batch, 1, "finished"))
            await until(pilot, lambda: "engine finished" in log.lines[-1], "the engine's end")
            screen.post_message(LiveUpdated(batch, final))  # the watcher's read, late
            await pilot.pause()
            assert list(log.lines)[-4:] == [
                "11:06:30 #50 try 1 item exit 1",
                "11:06:31 #51 try 1 item exit 1",
                "11:06:39 state finished",
                "11:06:40 engine finished: finished (exit 1)",
            ], list(log.lines)

    run(body)


@pytest.mark.parametrize(
    ("size", "rows"), [((80, 24), 15), ((60, 14), 8), ((120, 40), 30)]
)  # at 14 rows the log is hidden
def test_l_shows_the_whole_log_on_the_screen_to_read_back_and_l_or_escape_goes_back(
    tmp_path: Path, size: tuple[int, int], rows: int
) -> None:
    """At 80x24 the log is two rows: an acknowledgement scrolled away within a second, and a long
    line was cut at the panel's edge (the operator's pass). ``l`` gives it the screen."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    base = read_model(batch / "live_progress.json", LiveProgress)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=size) as pilot:
                screen, log = await _dashboard(app, pilot)
                window = [_error(seq) for seq in range(30)]
                screen.post_message(LiveUpdated(batch, base.model_copy(update={"recent_errors": window})))
                await until(pilot, lambda: "#29 try 1" in log.lines[-1], "the errors in the log")
                await pilot.pause()
                small = [row for row in _drawn(app, log) if row]
                assert len(small) < rows // 2  # the panel: a few rows
                for key in ("l", "escape"):
                    await pilot.press("l")
                    await pilot.pause()
                    assert screen.maximized is log and screen.focused is log
                    # The title and the status line stay above it (not the counts, the charts).
                    top = [strip.text for strip in app.screen._compositor.render_strips()][:6]
                    at = next(i for i, row in enumerate(top) if row.lstrip().startswith("RUNNING"))
                    assert "[RUNNING" in top[0] and "180/300" in top[at], top
                    below = [row for row in top[at + 1 :] if row.strip()]
                    assert below[0].startswith("───"), top  # the log's own top edge next
                    whole = [row for row in _drawn(app, log) if row]
                    assert len(whole) >= rows and "#29 try 1" in whole[-1], whole
                    await pilot.press(key)
                    await pilot.pause()
                    assert screen.maximized is None
                    assert len([row for row in _drawn(app, log) if row]) == len(small)

    run(body)


LONG = (
    "upstream refused the request: 503 Service Unavailable from https://api.example.com/v1/documents/00017"
    " after 3 redirects; retry-after 30s; the body said: the service is overloaded, try again later"
)


@pytest.mark.parametrize("size", [(80, 24), (40, 20)])
def test_the_maximized_log_wraps_a_long_line_to_the_screen(tmp_path: Path, size: tuple[int, int]) -> None:
    """QA: ``l`` showed a long line cut at the screen's right edge (the rest only scrolled
    sideways). Maximized, every line is wrapped to the width, its next rows indented past the
    time; through a resize too; back in the panel, a row a line again."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    base = read_model(batch / "live_progress.json", LiveProgress)
    long_error = _error(99).model_copy(update={"message": LONG})

    def chars(rows: list[str]) -> str:  # a long word (the URL) is folded, so spaces are left out
        return "".join("".join(rows).split())

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=size) as pilot:
                screen, log = await _dashboard(app, pilot)
                screen.post_message(LiveUpdated(batch, base.model_copy(update={"recent_errors": [long_error]})))
                await until(pilot, lambda: "#99 try 1" in log.lines[-1], "the long error in the log")
                line = log.lines[-1]
                assert len(line) > 2 * size[0]
                await pilot.press("l")
                await until(pilot, lambda: screen.maximized is log, "the log maximized")
                for width in (size[0], size[0] - 8):
                    await pilot.resize_terminal(width, size[1])
                    await until(pilot, lambda w=width: app.size.width == w, "the new width")
                    await pilot.pause()
                    drawn = [row for row in _drawn(app, log) if row]
                    start = next(i for i, row in enumerate(drawn) if "#99 try 1" in row)
                    assert chars(drawn[start:]) == chars([line]), drawn
                    assert all(row.startswith(" " * 9) for row in drawn[start + 1 :]), drawn  # under the text
                    assert log.lines[-1] == line  # the line as written, whole
                await pilot.press("l")
                await until(pilot, lambda: screen.maximized is None, "the log back in its panel")
                await pilot.pause()
                assert log.line_count == len(log.lines)  # a row a line again
                assert log.lines[-1] == line

    run(body)


def test_a_long_line_takes_no_row_for_a_scrollbar_and_still_scrolls_sideways(tmp_path: Path) -> None:
    """QA over SSH: in a tall dashboard (200x60) a line longer than the panel gave the log a
    horizontal scrollbar: one of its four rows, drawn again a cell at a time at each new line
    (half of the bytes the dashboard sent on a busy run). Its four rows are lines now; the long
    one still scrolls sideways (``l`` wraps it)."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    base = read_model(batch / "live_progress.json", LiveProgress)
    window = [_error(seq) for seq in range(10)]
    window[-1] = window[-1].model_copy(update={"message": LONG + " " + LONG})

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(200, 60)) as pilot:
                screen, log = await _dashboard(app, pilot)
                screen.post_message(LiveUpdated(batch, base.model_copy(update={"recent_errors": window})))
                await until(pilot, lambda: "#9 try 1" in log.lines[-1], "the long error in the log")
                await pilot.pause()
                assert len(log.lines[-1]) > log.size.width
                drawn = _drawn(app, log)
                assert len(drawn) == 4, drawn
                assert [row[:10] for row in drawn] == [line[:10] for line in log.lines[-4:]], drawn
                assert "#9 try 1 item exit 1: upstream refused" in drawn[-1]
                assert log.max_scroll_x > 0
                log.scroll_to(x=log.max_scroll_x, animate=False)
                await pilot.pause()
                shown = _drawn(app, log)[-1]
                assert "#9 try 1" not in shown and log.lines[-1].endswith(shown[-40:]), shown

    run(body)


def test_the_whole_screen_log_leaves_the_tables_keys_alone(tmp_path: Path) -> None:
    """With the log on the whole screen, `/` opened a filter field no one could see (it took
    the keys typed next), enter opened an item and `s` asked to skip one, all of the hidden items
    table. Those keys do nothing there now, and the tables' keys are back with the tables."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(80, 24)) as pilot:
                screen, log = await _dashboard(app, pilot)
                await pilot.press("l")
                await pilot.pause()
                assert screen.maximized is log
                await pilot.press("slash", "z", "enter", "s", "plus", "a", "o", "3")
                await pilot.pause()
                assert app.screen is screen and screen.maximized is log  # no dialog, no detail
                assert not screen.query_one("#filter", Input).display
                assert screen.query_one(ItemsTable).marked_count == 0
                await pilot.press("l")
                await pilot.pause()
                assert screen.maximized is None and screen.query_one(ItemsTable).has_focus
                await pilot.press("3", "s")
                await pilot.pause()
                assert isinstance(app.screen, ConfirmScreen)  # the skip of the failed item under the cursor

    run(body)


def test_an_engine_that_dies_is_said_in_the_log(tmp_path: Path) -> None:
    """A kill -9 of the engine: the status line said INTERRUPTED, the log nothing. An engine
    that lets the batch go once it has finished it says nothing there."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    alive = EngineStatus(Liveness.ALIVE, 0.2, LockInfo(pid=4242, host="worker-1", started_at=T1))

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            _screen, log = await _dashboard(app, pilot)
            log.engine = alive
            log.engine = GONE
            assert log.lines[-1].endswith("engine gone (pid 4242) while the batch was running: nothing runs it now")
            assert log.live is not None
            log.live = log.live.model_copy(update={"state": BatchState.FINISHED})
            lines = len(log.lines)
            log.engine = alive
            log.engine = GONE
            assert len(log.lines) == lines  # nothing said

    run(body)
