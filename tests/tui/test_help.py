"""The help dialog: every key of the screen it was opened from (generated from the bindings, so a
key added to a screen cannot be missing from it), what the panels and figures mean, and a
dialog that fits the terminal's width and scrolls."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.screens.help_text import HELP_SECTIONS
from batchtui.tui.screens.modals import HelpScreen, key_description, keys_table, listed_keys

from .conftest import run
from .fixtures import FROZEN, make_batch
from .test_sizes import screen_lines


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
    terms = {term: text for _heading, entries in HELP_SECTIONS for term, text in entries}
    for term in ("Status line", "Charts", "Errors", "In flight", "Items", "Events", "Rate", "ETA", "Memory"):
        assert terms.get(term), term
    assert "peak" in terms["Memory"] and "children" in terms["Memory"]
    for category in ("transient", "item", "fatal", "timeout"):
        assert terms.get(category), category


async def _drawn_rows(app: BatchtuiApp, pilot: Any, scroll: VerticalScroll) -> list[str]:
    """Every row of the help's content as the terminal draws it, top to bottom: the dialog is
    scrolled through a page at a time (its scrollbar and border left out)."""
    region = scroll.scrollable_content_region
    rows: dict[int, str] = {}
    while True:
        await pilot.pause()
        drawn = screen_lines(app)
        top = round(scroll.scroll_y)
        for i in range(region.height):
            rows[top + i] = drawn[region.y + i][region.x : region.right].rstrip()
        if top >= scroll.max_scroll_y:
            return [rows[i] for i in range(len(rows))]
        scroll.scroll_to(y=top + region.height, animate=False, immediate=True)


def _paragraph_problem(rows: list[str], term: str, text: str, width: int) -> str | None:
    """Why ``term`` and ``text`` do not read whole in ``rows`` (None when they do): the term
    starts a row and the text's words follow it in order; each row ends at a word boundary
    where the next word would not have fit ``width`` (not mid-sentence, not mid-word), and
    the rows after the first start where the text did (a hanging indent)."""
    words = [*term.split(), *text.split()]
    for start, row in enumerate(rows):
        if not row.split() or row.split() != words[: len(row.split())]:
            continue
        indent = row.index(text.split(maxsplit=1)[0], len(row) - len(row.lstrip()) + len(term))
        end, taken = start, len(row.split())
        while taken < len(words) and end + 1 < len(rows):
            following = rows[end + 1].split()
            if not following or following != words[taken : taken + len(following)]:
                break
            end, taken = end + 1, taken + len(following)
        if taken < len(words):
            continue
        block = rows[start : end + 1]
        for line, below in itertools.pairwise(block):
            if cell_len(line) + 1 + cell_len(below.split()[0]) <= width:
                return f"{term!r}: broken early, {below.split()[0]!r} fit on {line!r}:\n" + "\n".join(block)
            if len(below) - len(below.lstrip()) != indent:
                return f"{term!r}: {below!r} does not start under the text ({indent}):\n" + "\n".join(block)
        return None
    return f"{term!r} {text[:40]!r}... is not drawn whole, in order:\n" + "\n".join(rows)


@pytest.mark.parametrize("size", [(80, 24), (200, 60), (100, 30)])
def test_every_key_and_paragraph_of_the_help_reads_whole(tmp_path: Path, size: tuple[int, int]) -> None:
    """What the terminal shows of the help, scrolled through: each key with what it does, and
    each paragraph under its term, wrapped to the dialog's width at word boundaries (a text
    broken by hand for one width broke again mid-sentence at 80 columns, and at 200)."""
    batch = make_batch(tmp_path, state=BatchState.RUNNING)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            help_screen = await _open_help(app, pilot)
            scroll = help_screen.query_one("#help-scroll", VerticalScroll)
            rows = await _drawn_rows(app, pilot, scroll)
            width = scroll.scrollable_content_region.width
            entries = [(e.key_text, key_description(e).plain) for e in listed_keys(help_screen.entries)]
            texts = [(term, text) for _heading, section in HELP_SECTIONS for term, text in section]
            problems = [_paragraph_problem(rows, term, text, width) for term, text in [*entries, *texts]]
            assert [p for p in problems if p] == [], "\n\n".join(p for p in problems if p)
            assert all(cell_len(row) <= width for row in rows)

    run(body)


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
