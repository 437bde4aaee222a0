"""ItemsTable: the virtual items table over a real items.db, driven headless through Pilot.

pytest-asyncio is not a dependency: each test is a plain function running its async body with
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from batchtui.engine.store import ItemStore
from batchtui.engine.store.queries import ItemFilter, Selection
from batchtui.tui.widgets import items_counts
from batchtui.tui.widgets.items_counts import ViewCounts
from batchtui.tui.widgets.items_messages import CountReady
from batchtui.tui.widgets.items_table import MAX_PAGES, PAGE_SIZE, ItemsTable

SIZE = (100, 30)
BODY = SIZE[1] - 1  # one header line

Row = tuple[str, str, str | None, str | None]  # key, status, error_type, error_message


def status_of(seq: int) -> str:
    return ("pending", "complete", "failed", "skipped", "processing")[seq % 5]


def make_rows(n: int) -> list[Row]:
    rows: list[Row] = []
    for seq in range(n):
        status = status_of(seq)
        if status == "failed":
            etype = "TimeoutError" if seq % 2 else "HTTPError"
            rows.append((f"item-{seq}", status, etype, f"boom {seq}\nTraceback line"))
        else:
            rows.append((f"item-{seq}", status, None, None))
    return rows


def build_store(path: Path, rows: Iterable[Row]) -> Path:
    store = ItemStore.create(path, durable=False)
    try:
        store.enqueue(
            (key, "{}", "lines", status, etype, "item" if etype else None, msg, None, None, None)
            for key, status, etype, msg in rows
        )
        with store.transaction() as conn:
            conn.execute("UPDATE items SET attempts = 1, duration_s = 1.5 WHERE status IN ('complete', 'failed')")
    finally:
        store.close()
    return path


class TableApp(App[None]):
    """One ItemsTable filling the screen; records the messages it posts."""

    def __init__(self, db_path: Path) -> None:
        super().__init__()
        self.db_path = db_path
        self.selected: list[int] = []
        self.highlighted: list[int | None] = []

    def compose(self) -> ComposeResult:
        yield ItemsTable(self.db_path, id="items")

    def on_items_table_selected(self, message: ItemsTable.Selected) -> None:
        self.selected.append(message.seq)

    def on_items_table_highlighted(self, message: ItemsTable.Highlighted) -> None:
        self.highlighted.append(message.seq)


def run(db_path: Path, body: Callable[[TableApp, Pilot[None], ItemsTable], Awaitable[None]]) -> None:
    async def main() -> None:
        app = TableApp(db_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await body(app, pilot, app.query_one(ItemsTable))

    asyncio.run(main())


def lines(table: ItemsTable) -> list[str]:
    return [table.render_line(y).text for y in range(SIZE[1])]


def shown_seqs(table: ItemsTable) -> list[int]:
    """The seq column of every row line on screen (blank lines skipped)."""
    return [int(text.split()[0]) for text in lines(table)[1:] if text.strip()]


@pytest.fixture
def db100(tmp_path: Path) -> Path:
    return build_store(tmp_path / "items.db", make_rows(100))


def test_first_screen_shows_rows_in_seq_order(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        assert table.row_count == 100
        assert table.virtual_size.height == 101  # rows + the fixed header
        header, *rest = lines(table)
        assert header.split() == ["seq", "status", "tries", "duration", "key", "error"]
        assert shown_seqs(table) == list(range(BODY))
        assert rest[2].split()[:3] == ["2", "failed", "1"]
        assert "item-2" in rest[2]
        assert "HTTPError: boom 2" in rest[2]
        assert "Traceback" not in rest[2]  # first line of the message only
        assert rest[0].split()[:2] == ["0", "pending"]
        assert table.page_misses == 1
        assert table.selected_seq == 0

    run(db100, body)


def test_header_stays_fixed_while_scrolling(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        table.scroll_to(y=40, animate=False)
        await pilot.pause()
        assert lines(table)[0].split()[0] == "seq"
        assert shown_seqs(table)[0] == 40
        table.scroll_end(animate=False)
        await pilot.pause()
        assert shown_seqs(table)[-1] == 99

    run(db100, body)


def test_filters_change_rows_and_count(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        table.set_filter(status="failed")
        await pilot.pause()
        assert table.row_count == 20
        assert shown_seqs(table) == list(range(2, 100, 5))
        assert all(" failed " in text for text in lines(table)[1:21])

        table.set_filter(error_type="TimeoutError")  # status kept
        await pilot.pause()
        assert table.row_count == 10
        assert shown_seqs(table) == [s for s in range(2, 100, 5) if s % 2]

        table.set_filter(status=None, error_type=None, text="item-1")
        await pilot.pause()
        expected = [s for s in range(100) if f"item-{s}".startswith("item-1")]
        assert table.row_count == len(expected)
        assert shown_seqs(table) == expected

        table.set_filter(text="boom 97")  # matches the error message too
        await pilot.pause()
        assert shown_seqs(table) == [97]

        table.set_filter(text="no such thing")
        await pilot.pause()
        assert table.row_count == 0
        assert table.selected_seq is None
        assert "no items match" in lines(table)[1]

        table.set_filter(text=None)
        table.status = "skipped"  # the reactive works as well as set_filter
        await pilot.pause()
        assert table.row_count == 20
        assert shown_seqs(table) == list(range(3, 100, 5))

    run(db100, body)


def test_filter_resets_cursor_and_scroll(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        await pilot.press("pagedown", "pagedown")
        assert table.scroll_y > 0
        table.set_filter(status="complete")
        await pilot.pause()
        assert table.cursor_row == 0
        assert table.scroll_y == 0
        assert table.selected_seq == 1
        assert app.highlighted[-1] == 1

    run(db100, body)


def test_keys_move_the_cursor(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        assert table.has_focus
        await pilot.press("down", "down", "down")
        assert table.cursor_row == 3
        await pilot.press("up")
        assert table.cursor_row == 2
        await pilot.press("pagedown")
        assert table.cursor_row == 2 + BODY
        assert table.scroll_y == BODY  # the cursor keeps its place on screen
        assert shown_seqs(table)[2] == table.selected_seq == 2 + BODY
        await pilot.press("pageup")
        assert (table.cursor_row, table.scroll_y) == (2, 0)
        await pilot.press("end")
        assert table.cursor_row == 99
        assert shown_seqs(table)[-1] == 99  # scrolled to keep the cursor visible
        await pilot.press("home")
        assert (table.cursor_row, table.scroll_y) == (0, 0)
        await pilot.press("up")
        assert table.cursor_row == 0
        await pilot.pause()
        assert app.highlighted[-1] == 0

    run(db100, body)


def test_cursor_row_is_highlighted(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        await pilot.press("down")
        cursor = table.get_component_rich_style("items-table--cursor", partial=True)
        strip = table.render_line(2)  # row 1
        assert all(seg.style is not None and seg.style.bgcolor == cursor.bgcolor for seg in strip)
        assert all(seg.style is None or seg.style.bgcolor != cursor.bgcolor for seg in table.render_line(3))

    run(db100, body)


def test_status_colours_come_from_component_classes(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        await pilot.press("end")  # keep the cursor off the rows we look at
        await pilot.press("home")
        await pilot.press("down")
        failed = table.get_component_rich_style("items-table--failed", partial=True)
        complete = table.get_component_rich_style("items-table--complete", partial=True)
        assert failed.color is not None and complete.color is not None and failed.color != complete.color
        segments = list(table.render_line(3))  # seq 2, failed
        status_segment = next(seg for seg in segments if seg.text.strip() == "failed")
        assert status_segment.style is not None and status_segment.style.color == failed.color
        error_segment = next(seg for seg in segments if "boom 2" in seg.text)
        assert error_segment.style is not None and error_segment.style.color == failed.color

    run(db100, body)


def test_enter_and_click_post_selected(db100: Path) -> None:
    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert app.selected == [2]
        assert app.highlighted[-1] == 2

        await pilot.click(ItemsTable, offset=(5, 6))  # screen line 6 = row 5
        await pilot.pause()
        assert table.cursor_row == 5
        assert app.highlighted[-1] == 5
        assert app.selected == [2]
        await pilot.click(ItemsTable, offset=(5, 6))  # a click on the highlighted row chooses it
        await pilot.pause()
        assert app.selected == [2, 5]
        await pilot.click(ItemsTable, offset=(5, 0))  # the header does nothing
        await pilot.pause()
        assert table.cursor_row == 5

    run(db100, body)


UNTRUSTED = [
    "[bold]x[/]",
    "\x1b[31mred",
    "tab\there",
    "new\nline",
    "bidi\u202eevil",
    "bell\x07\x9b",
    "[link=https://evil.example]click[/link]",
    "宽字符-key",
]


def test_untrusted_text_is_drawn_literally(tmp_path: Path) -> None:
    rows: list[Row] = [(key, "failed", "E[b]", "[blink]E[/] \x1b]0;t\x07") for key in UNTRUSTED]
    db = build_store(tmp_path / "items.db", rows)

    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        await pilot.press("end")  # the cursor (bold in some themes) off row 0
        texts = lines(table)[1 : 1 + len(UNTRUSTED)]
        assert "[bold]x[/]" in texts[0]
        assert "\\x1b[31mred" in texts[1]
        assert "tab\\x09here" in texts[2]
        assert "new\\x0aline" in texts[3]
        assert "bidi\\u202eevil" in texts[4]
        assert "bell\\x07\\x9b" in texts[5]
        assert "[link=https://e" in texts[6] and "click[/link]" in texts[6]  # cut in the middle
        assert "宽字符-key" in texts[7]
        assert "E[b]: [blink]E[/] \\x1b]0;t\\x07" in texts[0]
        for y in range(1, 1 + len(UNTRUSTED)):
            strip = table.render_line(y)
            assert strip.cell_length == table.size.width == SIZE[0] - 1  # the focus border takes one
            for seg in strip:
                assert seg.text.isprintable()
                if "[/]" in seg.text and y != table.cursor_row + 1:  # nothing in the text became style
                    assert seg.style is not None and not seg.style.bold and not seg.style.blink
                    assert seg.style.link is None
        # What reaches the terminal: the screen holds the brackets and the escaped ESC.
        screen = app.export_screenshot()
        assert "[bold]x[/]" in screen.replace("&#160;", " ")
        assert "\x1b" not in screen

    run(db, body)


def test_long_key_is_truncated_with_an_ellipsis(tmp_path: Path) -> None:
    db = build_store(tmp_path / "items.db", [("k" * 500, "pending", None, None)])

    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        text = lines(table)[1]
        assert "k…" in text
        assert len(text) == SIZE[0] - 1  # the focus border takes one column

    run(db, body)


def test_50k_rows_scroll_to_the_end_with_bounded_cache(tmp_path: Path) -> None:
    db = build_store(tmp_path / "items.db", make_rows(50_000))

    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        assert table.row_count == 50_000
        await pilot.press("end")
        assert table.cursor_row == 49_999
        assert table.selected_seq == 49_999
        assert shown_seqs(table)[-1] == 49_999
        assert len(shown_seqs(table)) == BODY
        misses = table.page_misses
        await pilot.press(*["pageup"] * 20)
        await pilot.press("down")  # crossing pages costs one query per page, never one per line
        assert table.page_misses - misses <= 20 * BODY // PAGE_SIZE + 2
        assert table.cursor_row == 49_999 - 20 * BODY + 1
        table.scroll_to(y=25_000, animate=False)
        await pilot.pause()
        assert shown_seqs(table)[0] == 25_000
        for _ in range(MAX_PAGES + 5):
            table.scroll_to(y=table.scroll_y + PAGE_SIZE, animate=False)
            await pilot.pause()
        assert table.cached_pages <= MAX_PAGES

    run(db, body)


def test_refresh_data_picks_up_changes(tmp_path: Path) -> None:
    db = build_store(tmp_path / "items.db", [(f"item-{i}", "pending", None, None) for i in range(100)])

    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        table.set_filter(status="pending")
        await pilot.pause()
        assert table.row_count == 100
        with sqlite3.connect(db) as conn:  # another process: the engine
            conn.execute("UPDATE items SET status='failed', error_type='ValueError', error_message='bad' WHERE seq < 5")
        table.refresh_data()
        await pilot.pause()
        assert table.row_count == 95
        assert shown_seqs(table)[0] == 5

        table.set_filter(status=None)
        await pilot.pause()
        assert lines(table)[1].split()[1] == "failed"
        assert "ValueError: bad" in lines(table)[1]
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE items SET status='complete' WHERE seq = 0")
            conn.execute("INSERT INTO items(seq, key, data) VALUES (100, 'late', '{}')")
        table.refresh_data()
        await pilot.pause()
        assert lines(table)[1].split()[1] == "complete"
        assert table.row_count == 101

    run(db, body)


def test_slow_filtered_recount_runs_off_the_ui_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(items_counts, "COUNT_BUDGET_S", -1.0)  # every filtered recount is "slow"
    db = build_store(tmp_path / "items.db", [(f"item-{i}", "pending", None, None) for i in range(100)])

    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        table.set_filter(status="pending")
        await pilot.pause()
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE items SET status='complete' WHERE seq < 10")
        table.refresh_data()
        assert table.row_count == 100  # not yet: the count runs in a worker thread
        await app.workers.wait_for_complete()
        for _ in range(20):
            await pilot.pause()
            if table.row_count == 90:
                break
        assert table.row_count == 90
        assert shown_seqs(table)[0] == 10

    run(db, body)


def test_a_background_count_of_an_older_filter_is_dropped_and_one_asked_meanwhile_runs_after(tmp_path: Path) -> None:
    """ViewCounts on its own: one background count at a time, its figures kept only when no
    filter change came meanwhile, and a count asked for while one ran is run when it ends."""
    db = build_store(
        tmp_path / "items.db", [(f"item-{i}", "failed" if i % 4 else "pending", None, None) for i in range(40)]
    )
    posted: list[CountReady] = []
    counts = ViewCounts(db, lambda text: None, Selection, posted.append)
    work = counts.background(ItemFilter(status="pending"), Selection())
    assert work is not None
    assert counts.background(ItemFilter(status="failed"), Selection()) is None  # one at a time
    work()
    assert [(m.count, m.total, m.marked) for m in posted] == [(10, 40, 0)]
    assert counts.end(posted[0]) == (10, True)  # current; and the one asked meanwhile runs now
    assert counts.total == 40
    again = counts.background(ItemFilter(status="failed"), Selection())
    assert again is not None
    counts.generation += 1  # the filter changed while it ran
    again()
    assert posted[1].count == 30
    assert counts.end(posted[1]) == (None, False)  # dropped: stale
    assert counts.background(ItemFilter(), Selection()) is not None  # not left "running"


def test_missing_store_shows_a_message_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "items.db"

    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        assert table.row_count == 0
        assert "items.db unavailable" in lines(table)[1]
        await pilot.press("down", "enter")
        assert app.selected == []
        build_store(db, make_rows(3))
        table.refresh_data()
        await pilot.pause()
        assert shown_seqs(table) == [0, 1, 2]

    run(db, body)


def test_the_cursor_stays_on_its_item_when_rows_above_it_leave_the_view(tmp_path: Path) -> None:
    """In flight, items end and leave the view while the operator moves to one: the cursor
    stays on that item (a key then acts on it), and when that item leaves too, the cursor
    keeps its place, on the next one."""
    db = build_store(tmp_path / "items.db", [(f"item-{i}", "processing", None, None) for i in range(40)])

    async def body(app: TableApp, pilot: Pilot[None], table: ItemsTable) -> None:
        table.set_filter(status="processing")
        await pilot.pause()
        for _ in range(10):
            await pilot.press("down")
        assert (table.cursor_row, table.selected_seq) == (10, 10)
        with sqlite3.connect(db) as conn:  # the engine: items 2, 5 and 7 end
            conn.execute("UPDATE items SET status='complete' WHERE seq IN (2, 5, 7)")
        table.refresh_data()
        await pilot.pause()
        assert (table.cursor_row, table.selected_seq) == (7, 10)
        assert lines(table)[1 + 7].split()[0] == "10"
        with sqlite3.connect(db) as conn:  # and an item ahead of it comes back (a retry)
            conn.execute("UPDATE items SET status='processing' WHERE seq = 5")
        table.refresh_data()
        await pilot.pause()
        assert (table.cursor_row, table.selected_seq) == (8, 10)
        with sqlite3.connect(db) as conn:  # the item itself ends
            conn.execute("UPDATE items SET status='complete' WHERE seq = 10")
        table.refresh_data()
        await pilot.pause()
        assert (table.cursor_row, table.selected_seq) == (8, 11)
        await pilot.press("enter")
        assert app.selected == [11]

    run(db, body)
