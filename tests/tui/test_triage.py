"""Getting around the dashboard for triage: error groups (enter filters to one), e / i focus,
tabs with counts and the active group, sorting (o and a click on the header), R per group."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from textual.widgets import DataTable, Tabs

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.control import write_views
from batchtui.engine.files import write_model
from batchtui.engine.grouping import normalize_message
from batchtui.engine.models import BatchState, LiveProgress
from batchtui.engine.store import ItemStore
from batchtui.engine.store.queries import ItemQueries
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.modals import ConfirmScreen
from batchtui.tui.widgets.errors_panel import ErrorsPanel
from batchtui.tui.widgets.items_table import ItemsTable

from .conftest import run
from .fixtures import FROZEN, make_batch
from .test_snapshots import settle

SIZE = (140, 48)
DISK = "disk full writing /data/out/17.json"


def _app(out: Path, batch: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False, strict_display=True
    )


def two_message_batch(root: Path) -> tuple[Path, list[int], list[int]]:
    """The finished fixture batch where TimeoutError has two messages: its failed items with an
    even seq say "disk full"; live_progress.json's groups are read back from the store.
    Returns the batch and the seqs of the two TimeoutError groups (timed out, disk full)."""
    batch = make_batch(root, state=BatchState.FINISHED)
    db = sqlite3.connect(batch / "items.db")
    with db:
        db.execute(
            "UPDATE items SET error_message=?, error_group=? WHERE status='failed' AND error_type='TimeoutError'"
            " AND seq % 2 = 0",
            (DISK, normalize_message(DISK)),
        )
        rows = db.execute(
            "SELECT seq, error_message FROM items WHERE error_type='TimeoutError' ORDER BY seq"
        ).fetchall()
    db.close()
    with ItemQueries(batch / "items.db") as store:
        groups = store.error_groups(10)
    live = LiveProgress.model_validate_json((batch / "live_progress.json").read_bytes())
    write_model(batch / "live_progress.json", live.model_copy(update={"error_groups": groups}))
    timed_out = [seq for seq, msg in rows if msg != DISK]
    disk = [seq for seq, msg in rows if msg == DISK]
    return batch, timed_out, disk


def _shown(table: ItemsTable) -> list[int]:
    out = []
    for y in range(1, table.size.height):
        cells = table.render_line(y).text.split()
        if cells and cells[0].isdigit():
            out.append(int(cells[0]))
    return out


def test_errors_table_lists_groups_and_enter_filters_the_items_to_one(tmp_path: Path) -> None:
    batch, timed_out, disk = two_message_batch(tmp_path)
    assert timed_out and disk

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            panel = screen.query_one(ErrorsPanel)
            errors = panel.query_one("#errors", DataTable)
            types = [str(errors.get_row_at(i)[0]) for i in range(errors.row_count)]
            assert sorted(types) == ["TimeoutError", "TimeoutError", "ValueError", "exit 4"]  # one type, two rows
            # The title counts them: a short terminal shows three rows, the rest scrolled.
            assert str(panel.query_one("#errors-title").render()).startswith("Errors  4 groups")
            await pilot.press("e")
            assert errors.has_focus
            messages = [str(errors.get_row_at(i)[3]) for i in range(errors.row_count)]
            errors.move_cursor(row=next(i for i, m in enumerate(messages) if m.startswith("disk full")))
            await pilot.press("enter")
            await pilot.pause()
            table = screen.query_one(ItemsTable)
            assert table.has_focus  # the items of the group are what comes next
            assert table.status == "failed" and table.error_group is not None
            assert _shown(table) == disk
            tabs = screen.query_one("#tabs", Tabs)
            assert tabs.active == "tab-failed"
            label = tabs.active_tab.label_text if tabs.active_tab is not None else ""
            # The rows the group leaves of the tab's 18 (the tab's count alone read as the group's).
            assert label.startswith(f"3 Failed {len(disk)}/18 · TimeoutError: disk full"), label
            assert screen.query_one("#tab-all").label_text == "1 All 300"  # type: ignore[attr-defined]
            # R retries that group (asks first), not the whole TimeoutError type.
            await pilot.press("R")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen)
            assert dialog.question == f"Retry {len(disk)} items?"
            gid = table.error_group
            said = f"{len(disk)} failed (group {gid}, TimeoutError: disk full writing <path>) go back to pending."
            assert dialog.detail.startswith(said), dialog.detail  # one pair of brackets
            assert [seq for seq, _ in dialog.samples] == disk[:5]
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await pilot.pause()
            db = sqlite3.connect(batch / "items.db")
            try:
                status = dict(db.execute("SELECT seq, status FROM items WHERE error_type IS NOT NULL OR seq IN (0)"))
            finally:
                db.close()
            assert all(status.get(seq, "pending") == "pending" for seq in disk)
            assert all(status[seq] == "failed" for seq in timed_out)

    run(body)


def test_keys_typed_ahead_go_where_the_focus_keys_sent_them(tmp_path: Path) -> None:
    """`e`, down, enter typed in one burst (an operator who knows the keys, a slow SSH link)
    pick the second error group: the down and the enter must not reach the items table, as
    they did when `e` moved the focus only a turn later."""
    from textual import events

    batch, _, _ = two_message_batch(tmp_path)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            errors = screen.query_one(ErrorsPanel).query_one("#errors", DataTable)
            table = screen.query_one(ItemsTable)
            assert table.has_focus and errors.cursor_row == 0
            for key in ("e", "down", "enter"):  # queued together, as a burst arrives
                app.post_message(events.Key(key, None))
            await pilot.pause()
            await pilot.pause()
            assert app.screen is screen  # enter did not open the items table's row
            assert table.has_focus and table.error_group is not None
            second = str(errors.get_row_at(1)[3])
            group = screen.query_one(ErrorsPanel).group(table.error_group)
            assert group is not None and normalize_message(second.rstrip("…"))[:20] == group.message[:20]

    run(body)


def test_e_and_i_move_the_focus_and_the_border_shows_it(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(ItemsTable)
            panel = screen.query_one(ErrorsPanel)
            assert table.has_focus
            focused_border = table.styles.border_left
            unfocused_border = panel.styles.border_left
            assert focused_border[1] != unfocused_border[1]  # the accent colour vs the panel's
            await pilot.press("e")
            await pilot.pause()
            assert panel.query_one("#errors").has_focus
            assert panel.styles.border_left == focused_border and table.styles.border_left == unfocused_border
            await pilot.press("i")
            await pilot.pause()
            assert table.has_focus and table.styles.border_left == focused_border

    run(body)


def _durations(batch: Path) -> dict[int, float | None]:
    db = sqlite3.connect(batch / "items.db")
    try:
        return dict(db.execute("SELECT seq, duration_s FROM items"))
    finally:
        db.close()


def test_o_and_a_click_on_the_header_sort_the_items(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.STOPPED)
    durations = _durations(batch)
    slowest = sorted(durations, key=lambda s: (-(durations[s] or -1), s))
    db = sqlite3.connect(batch / "items.db")
    tries = dict(db.execute("SELECT seq, attempts FROM items"))
    db.close()
    most_tries = sorted(tries, key=lambda s: (-tries[s], s))

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(ItemsTable)
            rows = table.size.height - 1
            assert _shown(table) == list(range(rows))
            await pilot.press("o")
            await pilot.pause()
            assert table.order == "duration"
            assert _shown(table) == slowest[:rows]
            assert "duration↓" in table.render_line(0).text
            await pilot.press("o")
            await pilot.pause()
            assert table.order == "tries"
            assert _shown(table) == most_tries[:rows]  # the transient failures (3 tries) first
            assert most_tries[0] == 3
            await pilot.press("o")
            assert table.order == "seq"
            # A click on the duration header sorts by it; on seq, back.
            header = table.render_line(0).text
            await pilot.click(ItemsTable, offset=(header.index("duration") + 1, 0))
            await pilot.pause()
            assert table.order == "duration" and _shown(table) == slowest[:rows]
            await pilot.click(ItemsTable, offset=(header.index("seq") + 1, 0))
            await pilot.pause()
            assert table.order == "seq"

    run(body)


def test_the_failed_tab_gives_the_error_column_the_width(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=(100, 40)) as pilot:
            table = app.screen.query_one(ItemsTable)

            def widths() -> tuple[int, int]:
                header = table.render_line(0).text
                key, error = header.index("key"), header.index("error")
                return error - key, len(header) - error

            key_all, error_all = widths()
            await pilot.press("3")
            await pilot.pause()
            key_failed, error_failed = widths()
            assert key_failed < key_all and error_failed > error_all
            assert error_failed > key_failed
            line = table.render_line(1).text
            assert "…" in line and "ents/00003" in line  # the key cut in the middle: its end shows

    run(body)


def test_every_new_key_is_in_the_palette(tmp_path: Path) -> None:
    # The help is generated from the same bindings: tests/tui/test_help.py.
    from batchtui.tui.commands import palette_entries

    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            titles = {entry.title for entry in palette_entries(app, app.screen)}
            wanted = {"Mark", "Mark down", "Mark up", "Mark all", "Run first", "Retry group", "Sort", "Errors", "Items"}
            assert wanted <= titles, wanted - titles

    run(body)


WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
]


def many_group_batch(root: Path) -> tuple[Path, dict[str, list[int]]]:
    """The finished fixture batch with its failed items in 15 error groups (``err alpha``...),
    more than live_progress.json carries; its live file as the engine writes it
    (engine/control.py ``write_views``). Returns the batch and the failed seqs by message."""
    batch = make_batch(root, state=BatchState.FINISHED)
    db = sqlite3.connect(batch / "items.db")
    with db:
        failed = [r[0] for r in db.execute("SELECT seq FROM items WHERE status='failed' ORDER BY seq")]
        by_message: dict[str, list[int]] = {}
        for i, seq in enumerate(failed):
            message = f"err {WORDS[i % len(WORDS)]}"
            by_message.setdefault(message, []).append(seq)
            db.execute(
                "UPDATE items SET error_type='exit 1', error_message=?, error_group=? WHERE seq=?",
                (message, normalize_message(message), seq),
            )
    db.close()
    bdir = BatchDir(batch)
    store = ItemStore.open(bdir.items_db)
    try:
        write_views(bdir, bdir.read_manifest(), store)
    finally:
        store.close()
    return batch, by_message


def test_every_error_group_has_a_row_past_those_the_live_file_holds(tmp_path: Path) -> None:
    # live_progress.json holds the 10 biggest groups: the panel said "10 groups" and the other
    # five could not be reached, filtered to, nor retried with R.
    batch, by_message = many_group_batch(tmp_path)
    live = LiveProgress.model_validate_json((batch / "live_progress.json").read_bytes())
    assert len(live.error_groups) == 10 and live.error_groups_total == 15

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            panel = screen.query_one(ErrorsPanel)
            errors = panel.query_one("#errors", DataTable)
            assert str(panel.query_one("#errors-title").render()).startswith("Errors  15 groups")
            messages = [str(errors.get_row_at(i)[3]) for i in range(errors.row_count)]
            assert sorted(messages) == sorted(by_message)
            await pilot.press("e", "end")  # End: the last group (a DataTable's own End scrolled sideways)
            assert errors.cursor_row == 14
            await pilot.press("home")
            assert errors.cursor_row == 0
            await pilot.press(*["down"] * 14)  # scrolled to the last row
            assert errors.cursor_row == 14
            last = messages[14]
            assert last not in {g.message for g in live.error_groups}
            await pilot.press("enter")
            await pilot.pause()
            table = screen.query_one(ItemsTable)
            assert _shown(table) == by_message[last]
            await pilot.press("e", "R")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen)
            assert [seq for seq, _ in dialog.samples] == by_message[last][:5]

    run(body)
