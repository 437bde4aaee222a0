"""The stop, quit and confirm dialogs below 80x24: every line of their text can be read (on
screen at 40x12, by scrolling with the arrow keys when even that is too small) and every button
is whole on screen. Checked on what is drawn, not on the widgets' content."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Button

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.modals import ConfirmScreen, DialogText, QuitScreen

from .conftest import run
from .fixtures import frozen_app, hold_lock, make_batch, until
from .test_sizes import screen_lines

STOP_TEXT = "Stop this batch? In-flight items get the grace period, then go back to pending. Resume it any time."
QUIT_TEXT = (
    "The engine is running in this app. Stop it (in-flight items go back to pending; resume later), or keep it"
    " running in a background engine (watch it again with `batchtui watch`): nothing more starts here, the running"
    " items finish here first (the terminal waits for them; Ctrl-C there stops them, and they run again), then the"
    " background engine runs the rest."
)


def _drawn_text(app: BatchtuiApp) -> dict[int, str]:
    """The dialog text's rows as drawn now, by their line in the text (scroll offset + row)."""
    text = app.screen.query_one(DialogText)
    region = text.scrollable_content_region
    lines = screen_lines(app)
    rows: dict[int, str] = {}
    for y in range(region.height):
        row = lines[region.y + y] if region.y + y < len(lines) else ""
        rows[round(text.scroll_y) + y] = row[region.x : region.x + region.width]
    return rows


async def _read_it_all(app: BatchtuiApp, pilot: object) -> str:
    """Every line of the dialog's text, scrolling down with the arrow key as an operator does."""
    text = app.screen.query_one(DialogText)
    seen = _drawn_text(app)
    while text.scroll_y < text.max_scroll_y:
        # Scrolled, and drawn so: the offset moves before the next paint, and the rows of the
        # last one read at the new offset were taken for other lines (a CI run read the first
        # line twice).
        y, rows = text.scroll_y, list(_drawn_text(app).values())
        scrolled = lambda: text.scroll_y != y and list(_drawn_text(app).values()) != rows  # noqa: B023, E731
        await pilot.press("down")  # type: ignore[attr-defined]
        await until(pilot, scrolled, "the text scrolled and was drawn")
        seen.update(_drawn_text(app))
    return " ".join(" ".join(seen[y] for y in sorted(seen)).split())


def _buttons_whole(app: BatchtuiApp) -> None:
    lines = screen_lines(app)
    for button in app.screen.query(Button):
        label = str(button.label)
        assert any(label in line for line in lines), f"button {label!r} not whole on screen:\n" + "\n".join(lines)


async def _open(app: BatchtuiApp, pilot: object, dialog: str) -> None:
    await until(pilot, lambda: "180/300" in "\n".join(screen_lines(app)), "the dashboard")
    if dialog == "stop":
        await pilot.press("x")  # type: ignore[attr-defined]
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the stop dialog")
    else:
        app.push_screen(QuitScreen())
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit dialog")
    await pilot.pause()  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [(40, 12), (80, 24), (56, 16)])
def test_the_stop_dialog_shows_every_line_at_once(tmp_path: Path, size: tuple[int, int]) -> None:
    """The QA report: at 40x12 the stop dialog lost its middle line (it stayed 76 wide: its text
    was wrapped for 70 cells and cut at the screen's edge) and its buttons."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=size) as pilot:
                await _open(app, pilot, "stop")
                text = app.screen.query_one(DialogText)
                assert text.max_scroll_y == 0, "the stop dialog's text should fit without scrolling"
                shown = " ".join(" ".join(_drawn_text(app)[y] for y in sorted(_drawn_text(app))).split())
                assert shown == STOP_TEXT
                _buttons_whole(app)

    run(body)


@pytest.mark.parametrize(("dialog", "size"), [("stop", (40, 7)), ("quit", (40, 12)), ("quit", (30, 10))])
def test_a_dialog_too_tall_scrolls_its_text_and_keeps_its_buttons(
    tmp_path: Path, dialog: str, size: tuple[int, int]
) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=size) as pilot:
                await _open(app, pilot, dialog)
                assert app.screen.query_one(DialogText).max_scroll_y > 0, "this size should need scrolling"
                _buttons_whole(app)
                assert await _read_it_all(app, pilot) == (STOP_TEXT if dialog == "stop" else QUIT_TEXT)
                _buttons_whole(app)

    run(body)


def test_the_samples_of_a_confirm_are_cut_to_the_width_there_is(tmp_path: Path) -> None:
    """At 40 columns each sample key is one line, cut in the middle (both ends kept)."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)
    keys = [(seq, f"https://api.example.com/v1/documents/{seq:05d}") for seq in range(3)]

    async def body() -> None:
        with hold_lock(batch):
            app = frozen_app(tmp_path, batch)
            async with app.run_test(size=(40, 12)) as pilot:
                await until(pilot, lambda: "180/300" in "\n".join(screen_lines(app)), "the dashboard")
                app.push_screen(ConfirmScreen("Retry 7 items?", "Back to pending.", samples=keys, total=7))
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog")
                await pilot.pause()
                rows = _drawn_text(app)
                drawn = [rows[y].rstrip() for y in sorted(rows)]
                for seq, _key in keys:
                    line = next(row for row in drawn if row.startswith(f"  #{seq} "))
                    assert line.startswith(f"  #{seq} https://") and line.endswith(f"documents/{seq:05d}"), drawn
                    assert "…" in line
                assert "  … and 4 more" in drawn
                _buttons_whole(app)

    run(body)
