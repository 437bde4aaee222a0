"""Marks and bulk actions on the dashboard: space, shift+up/down, a, esc, and r / s / + asking
first (y confirms, n cancels), against a real items.db: offline on a finished batch, and with a
real engine running the batch in the app."""

from __future__ import annotations

import sqlite3
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.models import BatchState
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.store import ItemStore
from batchtui.engine.store.queries import ItemFilter
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.dashboard import DashboardScreen
from batchtui.tui.screens.modals import ConfirmScreen
from batchtui.tui.widgets.items_table import MARK, ItemsTable
from batchtui.tui.widgets.status import ProgressLine

from .conftest import run
from .fixtures import FROZEN, make_batch

SIZE = (140, 48)


def _app(out: Path, batch: Path | None = None, **kw: Any) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out,
        batch=batch,
        watch_files=False,
        clock=lambda: FROZEN,
        handle_hangup=False,
        strict_display=True,
        **kw,
    )


async def _until(pilot: Any, pred: Callable[[], object], what: str = "condition", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s")
        await pilot.pause(0.05)


async def _retried(pilot: Any, app: BatchtuiApp, batch: Path, seq: int) -> dict[int, str]:
    """``y`` on a retry's dialog, offline: the statuses once item ``seq`` is pending again."""
    await pilot.press("y")
    await _until(pilot, lambda: _statuses(batch)[seq] == "pending", "the retry applied offline")
    await app.workers.wait_for_complete()
    return _statuses(batch)


def _statuses(batch: Path) -> dict[int, str]:
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT seq, status FROM items"))
    finally:
        db.close()


def _marked_rows(table: ItemsTable) -> list[int]:
    """The seqs of the rows drawn with the mark (line 0 is the header)."""
    out = []
    for y in range(1, table.size.height):
        text = table.render_line(y).text
        cells = text.split()
        if cells and cells[0] == MARK:
            out.append(int(cells[1]))
    return out


def test_space_marks_and_moves_down_shift_extends_esc_clears_marks_then_filter(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            table = screen.query_one(ItemsTable)
            await pilot.press("space", "space")
            assert table.cursor_row == 2  # space goes down, as in mc and k9s
            await pilot.press("shift+down", "shift+down")
            await pilot.pause()
            assert _marked_rows(table) == [0, 1, 2, 3, 4]
            assert table.selection.ranges == ((0, 4),)  # one range, not five seqs
            line = screen.query_one(ProgressLine)
            assert line.marked == 5
            assert "● 5 marked" in str(line.query_one("#progress-text").render())
            await pilot.press("up", "space")  # unmark 3: the cursor was on 4
            await pilot.pause()
            assert _marked_rows(table) == [0, 1, 2, 4]
            # Marks survive a refresh of the live data (a new live_progress.json).
            screen.live = screen.live
            await pilot.pause()
            assert _marked_rows(table) == [0, 1, 2, 4]
            # Marks are seqs: they stay across tabs and filters; esc clears the marks first.
            await pilot.press("3", "slash", *"0000", "enter")
            await pilot.pause()
            assert (table.status, table.text) == ("failed", "0000")
            assert table.marked_count == 4
            await pilot.press("escape")
            await pilot.pause()
            assert table.selection.is_empty and line.marked == 0 and _marked_rows(table) == []
            assert table.text == "0000"  # the filter is still on
            await pilot.press("escape")
            await pilot.pause()
            assert table.text is None

    run(body)


def test_a_marks_every_item_of_the_view_by_query(tmp_path: Path, monkeypatch: Any) -> None:
    """Past the pin limit, ``a`` adds the view itself: one filter, no row loaded."""
    from batchtui.tui.widgets import items_marks

    monkeypatch.setattr(items_marks, "PIN_LIMIT", 5)
    batch = make_batch(tmp_path, state=BatchState.FINISHED)
    failed = sorted(seq for seq, st in _statuses(batch).items() if st == "failed")

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(ItemsTable)
            await pilot.press("3", "a")
            await pilot.pause()
            assert table.selection.views == (ItemFilter(status="failed"),)
            assert table.selection.ranges == ()
            assert table.marked_count == len(failed) == 18
            assert _marked_rows(table) == failed[: len(_marked_rows(table))] and _marked_rows(table)
            await pilot.press("space")  # unmarks the first failed item of the view
            await pilot.pause()
            assert table.marked_count == 17
            assert _marked_rows(table)[0] == failed[1]
            await pilot.press("r")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen) and dialog.question == "Retry 17 items?"
            assert "17 failed of 17 marked items go back to pending." in dialog.detail
            assert "join" not in dialog.detail  # the dialog pins what it counted (see below)

    run(body)


def _fail(batch: Path, seq: int) -> None:
    """Item ``seq`` fails, as an engine would record it (another terminal's run, say)."""
    db = sqlite3.connect(batch / "items.db")
    try:
        db.execute(
            "UPDATE items SET status='failed', error_type='CommandFailed', error_category='permanent',"
            " error_message='exit 1' WHERE seq=?",
            (seq,),
        )
        db.commit()
    finally:
        db.close()


def _late_failure(batch: Path) -> tuple[dict[int, str], list[int], int]:
    """The statuses before, the failed items, and a pending item the tests fail later."""
    before = _statuses(batch)
    failed = sorted(seq for seq, st in before.items() if st == "failed")
    return before, failed, min(seq for seq, st in before.items() if st == "pending")


def test_a_marks_the_items_the_view_holds_and_a_retry_retries_those(tmp_path: Path) -> None:
    """``a`` on the failed tab marks the 18 failed items: one failing after that is not marked,
    and "Retry 18 items?" retries the 18 (an operator's marks do not grow behind their back)."""
    batch = make_batch(tmp_path, state=BatchState.STOPPED)
    before, failed, late = _late_failure(batch)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(ItemsTable)
            await pilot.press("3", "a")
            await pilot.pause()
            assert table.selection.views == () and table.marked_count == len(failed) > 5
            assert [s for lo, hi in table.selection.ranges for s in range(lo, hi + 1)] == failed
            _fail(batch, late)  # joins the failed view, not the marks
            await pilot.press("r")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen) and dialog.question == f"Retry {len(failed)} items?"
            after = await _retried(pilot, app, batch, failed[0])
            assert {s for s in after if after[s] != before[s]} == {*failed, late}
            assert all(after[s] == "pending" for s in failed)
            assert after[late] == "failed"  # not marked, not retried

    run(body)


def test_a_retry_of_marks_retries_the_failed_items_it_counted(tmp_path: Path) -> None:
    """Every item marked (tab 1, ``a``): "Retry N items?" counts the N failed among them, and
    retries those N; a marked item that fails while the dialog is open stays failed (it was
    retried too, and the engine's answer said a bigger number than the dialog)."""
    batch = make_batch(tmp_path, state=BatchState.STOPPED)
    before, _failed, late = _late_failure(batch)
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:  # what a retry changes: failed and skipped items, but invalid source records
        sql = "SELECT seq FROM items WHERE status IN ('failed', 'skipped') AND error_type IS NOT 'InvalidRecord'"
        failed = sorted(seq for (seq,) in db.execute(sql))
    finally:
        db.close()

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(ItemsTable)
            await pilot.press("1", "a")
            await pilot.pause()
            assert table.marked_count == len(before)  # late is marked, pending
            await pilot.press("r")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen) and dialog.question == f"Retry {len(failed)} items?"
            _fail(batch, late)
            after = await _retried(pilot, app, batch, failed[0])
            assert all(after[s] == "pending" for s in failed)
            assert after[late] == "failed"  # marked, but not among the items the dialog counted

    run(body)


def test_a_view_is_pinned_to_the_items_the_dialog_counted(tmp_path: Path, monkeypatch: Any) -> None:
    """A view marked as a view (past the marks' limit) is pinned by the dialog: an item that
    fails while the dialog is open joins the view, and stays failed."""
    from batchtui.tui.widgets import items_marks

    monkeypatch.setattr(items_marks, "PIN_LIMIT", 5)  # `a` marks the view; the dialog's limit stays
    batch = make_batch(tmp_path, state=BatchState.STOPPED)
    before, failed, late = _late_failure(batch)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(ItemsTable)
            await pilot.press("3", "a", "r")
            await pilot.pause()
            assert table.selection.views == (ItemFilter(status="failed"),)
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen) and dialog.question == f"Retry {len(failed)} items?"
            _fail(batch, late)  # joins the view after the count
            after = await _retried(pilot, app, batch, failed[0])
            assert {s for s in after if after[s] != before[s]} == {*failed, late}
            assert all(after[s] == "pending" for s in failed)
            assert after[late] == "failed"  # not counted, not retried

    run(body)


def test_a_view_past_the_pin_limit_is_sent_as_the_view_and_says_so(tmp_path: Path, monkeypatch: Any) -> None:
    from batchtui.tui.screens import triage
    from batchtui.tui.widgets import items_marks

    monkeypatch.setattr(items_marks, "PIN_LIMIT", 5)
    monkeypatch.setattr(triage, "PIN_LIMIT", 5)
    batch = make_batch(tmp_path, state=BatchState.STOPPED)
    _before, failed, late = _late_failure(batch)
    assert len(failed) > 5

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3", "a", "r")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen) and dialog.question == f"Retry {len(failed)} items?"
            assert "Over 5 items: the view is applied as it stands then" in dialog.detail
            _fail(batch, late)
            after = await _retried(pilot, app, batch, late)
            assert all(after[s] == "pending" for s in failed)  # the view as it stood: late included

    run(body)


def test_retry_asks_with_the_count_and_samples_y_changes_the_store_offline(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)
    before = _statuses(batch)
    assert [before[s] for s in (2, 3, 4, 20)] == ["complete", "failed", "complete", "failed"]

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(ItemsTable)
            await pilot.press("down", "down", "shift+down", "shift+down")  # 2, 3, 4 marked
            table.set_selection(table.selection.mark(20))
            await pilot.press("r")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen)
            assert dialog.question == "Retry 2 items?"
            assert "2 failed of 4 marked items go back to pending" in dialog.detail
            assert "The other 2 stay as they are" in dialog.detail
            assert "join the view" not in dialog.detail  # marked one by one: these items only
            assert dialog.samples == [
                (3, "https://api.example.com/v1/documents/00003"),
                (20, "https://api.example.com/v1/documents/00020"),
            ]
            await pilot.press("n")  # cancel: nothing changes, the marks stay
            await pilot.pause()
            assert app.screen is screen and _statuses(batch) == before and table.marked_count == 4
            await pilot.press("r")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            after = await _retried(pilot, app, batch, 3)
            assert {s for s in after if after[s] != before[s]} == {3, 20}
            assert after[3] == after[20] == "pending"
            assert table.selection.is_empty  # cleared after a confirmed action

    run(body)


def test_skip_and_run_first_without_marks_act_on_the_cursor_item(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.STOPPED)
    before = _statuses(batch)
    pending = sorted(s for s, st in before.items() if st == "pending")
    assert len(pending) > 5

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(ItemsTable)
            await pilot.press("1")
            table.cursor_row = pending[0]
            await pilot.press("s")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen) and dialog.question == "Skip 1 item?"
            assert dialog.detail == f"1 pending (#{pending[0]}) is skipped (killed if it runs)."
            await pilot.press("y")
            await _until(pilot, lambda: _statuses(batch)[pending[0]] == "skipped", "the skip applied")
            table.cursor_row = pending[-1]
            await pilot.press("plus")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen) and app.screen.question == "Run first 1 item?"
            await pilot.press("y")
            await app.workers.wait_for_complete()
            db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
            try:
                assert [r[0] for r in db.execute("SELECT seq FROM run_first")] == [pending[-1]]
            finally:
                db.close()
            after = _statuses(batch)
            assert {s for s in after if after[s] != before[s]} == {pending[0]}

    run(body)


def test_nothing_to_change_says_so_and_asks_nothing(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, state=BatchState.FINISHED)

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await pilot.press("r")  # the cursor's item 0 is complete: nothing to retry
            await pilot.pause()
            assert app.screen is screen
            assert any("nothing to change" in str(n.message) for n in app._notifications)

    run(body)


def test_bulk_actions_with_a_live_engine_are_acknowledged(tmp_path: Path) -> None:
    """A real engine runs the batch in the app: a skip of marked pending items and a run-first
    are applied by the engine (acknowledged), and the prioritized items run before the rest."""
    gate = tmp_path / "gate"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(40)))
    cmd = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 1, "window": 2, "grace": 2}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec(cmd))
    runner = BatchRunner(batch, config=config)

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, runner=runner, handle_hangup=False, strict_display=True)
        async with app.run_test(size=SIZE) as pilot:
            try:
                screen = app.screen
                assert isinstance(screen, DashboardScreen)
                await _until(pilot, lambda: screen.engine_live, "the engine running")
                table = screen.query_one(ItemsTable)
                table.focus()
                table.cursor_row = 20
                await pilot.press("shift+down", "shift+down")  # 20, 21, 22
                await pilot.press("s")
                await pilot.pause()
                assert isinstance(app.screen, ConfirmScreen) and app.screen.question == "Skip 3 items?"
                await pilot.press("y")
                await _until(
                    pilot,
                    lambda: all(_statuses(batch.path)[s] == "skipped" for s in (20, 21, 22)),
                    "the engine skipping 20-22",
                )
                table.cursor_row = 35
                await pilot.press("space", "space")  # 35, 36
                await pilot.press("plus")
                await pilot.pause()
                assert isinstance(app.screen, ConfirmScreen) and app.screen.question == "Run first 2 items?"
                await pilot.press("y")
                await _until(pilot, lambda: _acked(batch.path, "prioritize"), "the engine acknowledging")
                gate.touch()
                await _until(pilot, lambda: not app.engine_running, "the run's end", timeout=60)
                started = _started(batch.path)
                assert started[35] < started[10] and started[36] < started[10]
                final = _statuses(batch.path)
                assert [s for s, st in final.items() if st == "skipped"] == [20, 21, 22]
            finally:
                gate.touch()

    run(body)


def _acked(batch: Path, op: str) -> bool:
    import orjson

    lines = (batch / "control.jsonl").read_bytes().splitlines() if (batch / "control.jsonl").exists() else []
    ids = [cmd["id"] for cmd in map(orjson.loads, lines) if cmd.get("op") == op]
    live = orjson.loads((batch / "live_progress.json").read_bytes())
    return bool(ids) and all(i in live.get("control_results", {}) for i in ids)


def _started(batch: Path) -> dict[int, str]:
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT seq, started_at FROM attempts WHERE attempt = 1"))
    finally:
        db.close()


class _TableApp(App[None]):
    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db

    def compose(self) -> ComposeResult:
        yield ItemsTable(self.db)


def test_a_marks_100k_items_without_loading_them(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    store = ItemStore.create(db, durable=False)
    store.enqueue(
        (f"https://x.example/{i:06d}", "{}", "lines", "pending", None, None, None, None, None, None)
        for i in range(100_000)
    )
    with store.transaction() as conn:
        conn.execute("UPDATE items SET status='failed', error_type='exit 1', error_message='boom' WHERE seq < 100000")
    store.close()

    async def body() -> None:
        app = _TableApp(db)
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.query_one(ItemsTable)
            table.set_filter(status="failed")
            await pilot.pause()
            misses = table.page_misses
            tracemalloc.start()
            started = time.perf_counter()
            table.mark_view()
            await pilot.pause()
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert table.marked_count == 100_000
            assert table.selection.views == (ItemFilter(status="failed"),) and table.selection.ranges == ()
            assert table.page_misses - misses <= 1  # at most the page on screen, redrawn
            # ~0.25 MB; a list of the 100k seqs alone would take ~3.8 MB, a set ~8.4 MB
            assert peak < 2_000_000, peak
            assert elapsed < 5.0, elapsed
            assert len(_marked_rows(table)) == table.size.height - 1  # every row on screen marked

    run(body)


def test_a_key_right_after_a_tab_key_acts_on_the_new_tab(tmp_path: Path) -> None:
    """``3`` then ``a`` typed together (in tmux: "300 marked", every item): the second key came
    before the tab's TabActivated, so it marked the old tab's items. Both keys in one turn here."""
    batch = make_batch(tmp_path, state=BatchState.STOPPED)
    failed = sorted(seq for seq, st in _statuses(batch).items() if st == "failed")

    async def body() -> None:
        app = _app(tmp_path, batch)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            table = screen.query_one(ItemsTable)
            await pilot.pause()
            assert isinstance(screen, DashboardScreen) and table.status is None
            screen.action_tab("tab-failed")
            screen.action_mark_all()
            assert table.status == "failed"
            assert [s for lo, hi in table.selection.ranges for s in range(lo, hi + 1)] == failed
            await pilot.pause()  # the TabActivated comes: the same tab, the marks kept
            assert table.status == "failed" and table.marked_count == len(failed)

    run(body)
