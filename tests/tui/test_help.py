"""The help dialog: every key of the screen it was opened from (generated from the bindings, so a
key added to a screen cannot be missing from it), what the panels and figures mean, and a
dialog that fits the terminal's width and scrolls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.screens.modals import HELP, HelpScreen, keys_table

from .conftest import run
from .fixtures import FROZEN, make_batch


def _app(out: Path, batch: Path | None = None) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


def _bindings(cls: type[Any]) -> list[Binding]:
    return [b for b in cls.BINDINGS if isinstance(b, Binding)]


def _rows(help_screen: HelpScreen) -> list[str]:
    console = Console(width=88, record=True, color_system=None)
    console.print(keys_table(help_screen.entries))
    return console.export_text().splitlines()


def _check_every_binding(app: BatchtuiApp, screen_cls: type[Screen[Any]], help_screen: HelpScreen) -> None:
    rows = _rows(help_screen)
    for binding in _bindings(screen_cls) + _bindings(BatchtuiApp):
        for key in binding.key.split(","):
            shown = binding.key_display or app.get_key_display(Binding(key.strip(), binding.action))
            # The key and what it does start the same row (a long explanation wraps below).
            assert any(shown in row.split("  ")[0] and binding.description in row for row in rows), (
                f"{screen_cls.__name__}: {shown} {binding.description!r} not in the help:\n" + "\n".join(rows)
            )


async def _open_help(app: BatchtuiApp, pilot: Any) -> HelpScreen:
    await pilot.press("question_mark")
    await pilot.pause()
    assert isinstance(app.screen, HelpScreen)
    return app.screen


@pytest.mark.parametrize("where", ["dashboard", "detail", "browser"])
def test_the_help_lists_every_key_of_the_screen_it_was_opened_from(tmp_path: Path, where: str) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, None if where == "browser" else batch)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            expected: type[Screen[Any]] = BrowserScreen if where == "browser" else DashboardScreen
            if where == "detail":
                await app.push_screen(ItemDetailScreen(batch, 0))
                await pilot.pause()
                expected = ItemDetailScreen
            assert isinstance(app.screen, expected)
            help_screen = await _open_help(app, pilot)
            _check_every_binding(app, expected, help_screen)
            assert help_screen.where in ("the dashboard", "the item detail", "the batch browser")

    run(body)


def test_the_help_explains_the_panels_the_eta_memory_and_the_error_categories() -> None:
    for words in ("Charts", "ETA", "Memory", "peak", "children", "In flight", "Errors"):
        assert words in HELP, words
    for category in ("transient", "item", "fatal", "timeout"):
        assert f"\n  {category} " in HELP, category


def test_the_help_fits_80_columns_and_scrolls(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            help_screen = await _open_help(app, pilot)
            scroll = help_screen.query_one("#help-scroll", VerticalScroll)
            assert scroll.region.width <= 80 and scroll.region.x >= 0
            assert scroll.region.bottom <= 24
            assert scroll.max_scroll_y > 0  # more than one screen: it scrolls
            await pilot.press("end")
            await pilot.pause()
            assert scroll.scroll_y == scroll.max_scroll_y
        async with _app(tmp_path, batch).run_test(size=(140, 40)) as pilot:
            await pilot.pause()
            help_screen = await _open_help(pilot.app, pilot)  # type: ignore[arg-type]
            assert help_screen.query_one("#help-scroll", VerticalScroll).region.width == 92

    run(body)


class _MoreKeys(DashboardScreen):
    BINDINGS = [Binding("ctrl+g", "app.bell", "Ring the bell", tooltip="A key nobody wrote into the help")]  # noqa: RUF012


def test_a_key_added_to_a_screen_shows_in_its_help(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=(120, 40)) as pilot:
            await app.switch_screen(_MoreKeys(batch))
            await pilot.pause()
            help_screen = await _open_help(app, pilot)
            _check_every_binding(app, _MoreKeys, help_screen)
            _check_every_binding(app, DashboardScreen, help_screen)  # and the inherited ones

    run(body)
