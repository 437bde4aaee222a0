"""The dashboard at the sizes terminals have: one status line (state, progress, done/total,
rate, ETA, counts, marks) always on screen, the panels collapsing by size, and a footer whose
first keys are ``?`` and ``q`` and whose keys are never cut. Checked on what is drawn on the
screen, not on the widgets' content (a line cut at the screen's edge still holds its text)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.content import Content

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser_columns import progress_bar
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.widgets.footer import KeyFooter
from batchtui.tui.widgets.items_table import ItemsTable
from batchtui.tui.widgets.labels import FigureTab
from batchtui.tui.widgets.status import StatusPart, fit_parts, render_parts

from .conftest import run
from .fixtures import frozen_app, hold_lock, make_batch, until


def screen_lines(app: BatchtuiApp) -> list[str]:
    """The terminal's rows as drawn now."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def _parts(*texts: tuple[str, int]) -> list[StatusPart]:
    return [StatusPart(Text(text), rank) for text, rank in texts]


def test_parts_drop_out_whole_by_rank() -> None:
    parts = _parts(("RUNNING", 0), ("1/2", 1), ("3.0/s", 3), ("ETA 1s", 2), ("pending 9", 5))
    full = "RUNNING · 1/2 · 3.0/s · ETA 1s · pending 9"
    assert render_parts(parts, len(full), 50, (Style(), Style())).plain == full
    # One cell short: the part ranked last goes, whole; then the next.
    assert [p.text.plain for p in fit_parts(parts, len(full) - 1)] == ["RUNNING", "1/2", "3.0/s", "ETA 1s"]
    assert [p.text.plain for p in fit_parts(parts, 22)] == ["RUNNING", "1/2", "ETA 1s"]
    assert [p.text.plain for p in fit_parts(parts, 3)] == ["RUNNING"]  # the first always stays


def test_the_bar_takes_the_room_left() -> None:
    parts = [StatusPart(Text("RUNNING"), 0), StatusPart(Text(""), 8, sep=" ", bar=True), StatusPart(Text("1/2"), 1)]
    styles = (Style(), Style())
    assert render_parts(parts, 30, 50, styles).plain == "RUNNING " + "━" * 16 + " · 1/2"
    assert render_parts(parts, 200, 50, styles).cell_len == len("RUNNING  · 1/2") + 40
    assert render_parts(parts, 20, 50, styles).plain == "RUNNING · 1/2"


def test_the_bar_is_full_only_when_every_item_is_finished() -> None:
    """One item of 2,500 left: the bar keeps an undone cell at any width (a rounded bar, and a
    rounded "100%", said it was done)."""
    parts = [StatusPart(Text("RUNNING"), 0), StatusPart(Text(""), 8, sep=" ", bar=True)]
    styles = (Style(), Style())
    almost = 100.0 * 2499 / 2500
    for width in (18, 30, 48):
        plain = render_parts(parts, width, almost, styles, ("#", "-")).plain
        assert plain.endswith("-") and "#" in plain, plain
    assert render_parts(parts, 48, 100.0, styles, ("#", "-")).plain.endswith("#")
    assert progress_bar(almost, 3) == "██░" and progress_bar(100.0, 3) == "███"
    assert progress_bar(29 / 100 * 100, 100).count("█") == 29


def test_the_status_line_is_on_screen_at_80x24_with_marks(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: "180/300" in "\n".join(screen_lines(app)), "the status line")
                await pilot.press("space", "space", "space")
                await until(pilot, lambda: app.screen.query_one(ItemsTable).marked_count == 3, "three marks")
                await pilot.pause()
                lines = screen_lines(app)
                assert "20261118_090000_aaaa0001" in lines[0] and "RUNNING" in lines[0]
                status = lines[1]
                for figure in ("RUNNING", "180/300", "12.5/s", "ETA 10s", "● 3 marked"):
                    assert figure in status, status
                assert status.rstrip().endswith("● 3 marked")  # nothing after it is cut
                # The screen does not scroll: the title and the status line are the first rows,
                # the items table gets the rest (10 rows and its header).
                table = app.screen.query_one(ItemsTable)
                assert table.region.height >= 11, table.region
                footer = lines[-1]
                assert footer.startswith("? Help q Quit p Pause/Resume x Stop"), footer

    run(body)


def test_footer_keys_fit_whole(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            footer = app.screen.query_one(KeyFooter)
            await until(pilot, lambda: len(footer.children) > 3, "the footer's keys")
            # No engine: resume comes before the (greyed) pause and stop. (Waited for: on a
            # loaded machine the keys are mounted a frame or two before they are laid out.)
            want = "? Help q Quit u Resume batch"
            await until(pilot, lambda: screen_lines(app)[-1].startswith(want), f"a footer starting {want!r}")
            palette = next(k for k in footer.children if k.has_class("-command-palette"))

            def overlapping() -> list[Any]:
                return [k for k in footer.children if k is not palette and k.region.right > palette.region.x]

            await until(pilot, lambda: palette.region.width and not overlapping(), "the keys laid out")
            assert not overlapping(), [(k, k.region, palette.region) for k in overlapping()]

    run(body)


def test_resizing_down_and_back_keeps_the_dashboard_whole(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(200, 60)) as pilot:
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                await until(pilot, lambda: "180/300" in screen_lines(app)[2], "the status line")
                await pilot.press("space", "down", "space")
                await until(pilot, lambda: screen.query_one(ItemsTable).marked_count == 2, "two marks")
                await pilot.pause()
                big = screen_lines(app)
                shown = {w: screen.query_one(w).display for w in ("#charts", "#counts", "#flight-box")}
                assert shown == {"#charts": True, "#counts": True, "#flight-box": True}
                assert "elapsed 5m00s" in big[2] and "cost 0.42 / 5" in big[2] and "● 2 marked" in big[2]

                await pilot.resize_terminal(80, 24)
                await until(pilot, lambda: screen.has_class("short", "narrow"), "the small layout")
                await pilot.pause()
                small = screen_lines(app)
                assert len(small) == 24
                assert not screen.query_one("#charts").display and not screen.query_one("#flight-box").display
                for figure in ("180/300", "12.5/s", "ETA 10s", "● 2 marked"):
                    assert figure in small[1], small[1]
                assert small[-1].startswith("? Help q Quit")

                await pilot.resize_terminal(200, 60)
                await until(pilot, lambda: not screen.has_class("short"), "the full layout")
                await pilot.pause()
                assert not screen.has_class("low") and not screen.has_class("narrow")
                assert screen_lines(app) == big  # the same screen as before, marks and all

    run(body)


def test_item_detail_at_80x24_keeps_help_quit_and_back_in_the_footer(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "300/300" in screen_lines(app)[1], "the dashboard")
            await pilot.press("3", "enter")
            await until(pilot, lambda: "[FAILED]" in screen_lines(app)[1], "the item detail")
            assert screen_lines(app)[0].lstrip().startswith("FINISHED")  # the batch's status line, kept
            footer = app.screen.query_one(KeyFooter)
            await until(pilot, lambda: len(footer.children) > 3, "the footer's keys")
            await pilot.pause()
            assert screen_lines(app)[-1].startswith("? Help q Quit esc Back r Retry s Skip"), screen_lines(app)[-1]
            palette = next(k for k in footer.children if k.has_class("-command-palette"))
            assert all(k.region.right <= palette.region.x for k in footer.children if k is not palette)

    run(body)


def test_a_halted_dashboard_at_80x24_says_why_on_its_first_line(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.HALTED, halt_reason="failure rate 35% over 20%")

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "HALTED" in screen_lines(app)[1], "the status line")
            title = screen_lines(app)[0]
            assert "[HALTED]  failure rate 35% over 20%" in title, title  # before the name and command
            assert screen_lines(app)[1].lstrip().startswith("HALTED")

    run(body)


def test_a_small_pane_keeps_the_status_line_and_the_footer(tmp_path: Path) -> None:
    """A tmux pane of a few rows: the errors and the events give way (they pushed the title and
    the status line off the top: the screen scrolled to the items table, the first focus), the
    items table keeps what is left; `e` says why the errors are not shown instead of sending
    the keys to a table out of sight, and a focus that was on them comes back to the items
    when the pane shrinks."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(30, 8), notifications=True) as pilot:
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                await until(pilot, lambda: "180/300" in screen_lines(app)[1], "the status line")
                for width, height in ((30, 8), (60, 12), (80, 17)):
                    await pilot.resize_terminal(width, height)
                    await pilot.pause()
                    assert screen.has_class("tiny")
                    lines = screen_lines(app)
                    assert len(lines) == height
                    assert lines[0].lstrip().startswith(batch.name), lines
                    assert lines[1].lstrip().startswith("RUNNING") and "180/300" in lines[1], lines
                    assert lines[-1].startswith("? Help q Quit"), lines
                await pilot.press("e")
                await pilot.pause()
                assert screen.focused is screen.query_one(ItemsTable)
                said = [n.message for n in app._notifications]
                assert "the errors need 18 rows, the terminal has 17: tab 3 lists the failed items" in said
                await pilot.resize_terminal(80, 24)
                await until(pilot, lambda: not screen.has_class("tiny"), "the errors back")
                await pilot.press("e")
                assert screen.focused is not None and screen.focused.id == "errors"
                await pilot.resize_terminal(60, 12)
                await until(pilot, lambda: screen.has_class("tiny"), "the small pane again")
                assert screen.focused is screen.query_one(ItemsTable)  # not the hidden errors

    run(body)


def test_a_sorted_columns_header_shows_its_arrow_at_every_size(tmp_path: Path) -> None:
    """``o`` sorts by duration, then by tries: the header drawn on the screen says so with the
    arrow, whole, from a narrow pane to a wide terminal (``tries↓`` did not fit its column and
    was cut to ``trie…`` at every width). 38 columns is the narrowest that holds every fixed
    column; in a narrower pane the last ones (duration first) are cut off whole, values too."""
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = frozen_app(tmp_path, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one(ItemsTable)
            await until(pilot, lambda: "300/300" in screen_lines(app)[1], "the dashboard")
            for order, shown in (("duration", "duration↓"), ("tries", "tries↓")):
                await pilot.press("o")
                await until(pilot, lambda order=order: table.order == order, f"the {order} order")
                for width, height in ((80, 24), (200, 60), (120, 40), (60, 20), (40, 12), (38, 10)):
                    await pilot.resize_terminal(width, height)
                    await pilot.pause()
                    header = screen_lines(app)[table.region.y]
                    assert f" {shown} " in header, (width, height, header)

    run(body)


def test_a_filtered_tab_keeps_every_tab_whole_at_80_columns(tmp_path: Path) -> None:
    """The active tab says what a filter leaves ("All 12/300"); the filter's text gets only the
    room the tabs leave: with it at six cells at least, the last tab lost its count."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: "180/300" in "\n".join(screen_lines(app)), "the status line")
                # A tab keeps the width of the widest figure it showed (In flight 1,234 a moment ago).
                app.screen.query_one("#tab-processing", FigureTab).update(Content("2 In flight 1,234"))
                await pilot.press("slash", *"documents/0001", "enter")
                table = app.screen.query_one(ItemsTable)
                await until(pilot, lambda: table.text == "documents/0001" and table.row_count < 300, "the filter")
                await pilot.pause()
                row = next(line for line in screen_lines(app) if "1 All" in line)
                assert f"1 All {table.row_count}/300" in row, row
                assert re.search(r"  5 Skipped \d+$", row.rstrip()), row  # the last tab whole, its count too

    run(body)
