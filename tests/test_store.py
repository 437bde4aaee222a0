"""The item store: its bulk statements (every hand-written JSON form gives exactly what
executemany gives), its trigger and indexes, its health check and the modes of its files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.store import Bulk, ItemStore
from batchtui.engine.store import bulk as bulk_mod

HOSTILE = [
    "plain",
    "",
    "quote ' and \" and \\",
    "newline\nin it",
    "emoji \U0001f600",
    "tab\tand \\u0041",
    "$(rm -rf ~)",
]


def _rows(n: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        text = HOSTILE[i % len(HOSTILE)] + f" #{i}"
        rows.append((text, f'{{"line": {i}}}', "line"))
    return rows


def _dump(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        items = conn.execute("SELECT * FROM items ORDER BY seq").fetchall()
        attempts = conn.execute("SELECT * FROM attempts ORDER BY seq, attempt").fetchall()
    return [*items, ("--",), *attempts]


def _fill(path: Path, *, json_bulk: bool, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    monkeypatch.setattr(bulk_mod, "JSON_BULK", json_bulk)
    store = ItemStore.create(path, durable=False)
    try:
        rows = _rows(50)
        rows.insert(7, rows[3])  # a duplicate key: dropped, no gap in seq
        invalid = ("bad record", '{"_raw": "x"}', "record", "failed", "InvalidRecord", "invalid", "m", "d", "g", "t")
        store.enqueue(
            [
                *(r + ("pending",) + (None,) * 6 for r in rows[:20]),
                invalid,
                *(r + ("pending",) + (None,) * 6 for r in rows[20:]),
            ]
        )
        with store.transaction() as conn:
            bulk_mod.COMPLETE.run(
                conn,
                [
                    (
                        1,
                        "2026-11-23T10:00:00.000+00:00",
                        0.25,
                        None,
                        '{"ok": true}',
                        "2026-11-23T09:59:59.000+00:00",
                        0,
                    ),
                    (2, "2026-11-23T10:00:01.000+00:00", 1.5e-7, 0.003, "null", None, 1),
                    # the same seq twice in one group: the last one wins, as with executemany (the
                    # same attempt: the store's trigger logs one attempt row either way)
                    (1, "x", 0.1, None, '"first"', None, 2),
                    (1, "y", 0.2, 12, '"second"', None, 2),
                ],
            )
            bulk_mod.FAILED.run(conn, [(3, "exit 1", "permanent", "boom ' \"", "tail\n", "g", "t", 2.0, None, 4)])
            bulk_mod.ATTEMPT.run(
                conn,
                [
                    (0, 1, "complete", "a", "b", 0.25, None, None, None, None),
                    (4, 3, "failed", "a", "b", 2.0, "exit 1", "permanent", "boom", "tail"),
                    (4, 3, "failed", "a", "b", 2.5, "exit 1", "permanent", "replaced", "tail"),
                ],
            )
            bulk_mod.REQUEUE.run(conn, [(5,), (6,)])
        # NUL bytes: SQLite's JSON functions would cut the string there, so these rows are bound
        # one by one (two keys that differ only after a NUL stay two items).
        store.enqueue(
            [("nul \x00 a", "1", "line", "pending", *(None,) * 6), ("nul \x00 b", "2", "line", "pending", *(None,) * 6)]
        )
        assert store.counts().total == 53
    finally:
        store.close()
    return _dump(path)


def test_json_bulk_matches_executemany(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not bulk_mod.json_bulk_supported():
        pytest.skip("this SQLite has no ->> operator: executemany is used")
    with_json = _fill(tmp_path / "json.db", json_bulk=True, monkeypatch=monkeypatch)
    with_many = _fill(tmp_path / "many.db", json_bulk=False, monkeypatch=monkeypatch)
    assert with_json == with_many
    seq2 = next(r for r in with_json if r[0] == 2)
    assert seq2[-1] == '"second"' and seq2[13] == 0.2  # result, duration of the last row for seq 2
    assert [r[0] for r in with_json[:53]] == list(range(53))  # dense seq, input order
    assert [r[1] for r in with_json[51:53]] == ["nul \x00 a", "nul \x00 b"]


def test_a_bulk_binds_its_forms_to_parameters_and_to_a_trigger_row() -> None:
    bulk = Bulk(
        "UPDATE items SET status='complete', attempts=?, finished_at=?, result=? WHERE seq=?",
        "UPDATE items SET status='complete', attempts=j.value ->> 0, finished_at=j.value ->> 1,"
        " result=j.value ->> 2 FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 3",
        "UPDATE items SET status='complete', attempts={p1}, finished_at={p2}, result=j.value ->> 1"
        " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 0",
        shared=(0, 1),
    )
    assert bulk.grouped_sql == (
        "UPDATE items SET status='complete', attempts=?2, finished_at=?3, result=j.value ->> 1"
        " FROM json_each(?1) AS j WHERE items.seq = j.value ->> 0"
    )
    assert bulk.json_sql is not None and "json_each(?1)" in bulk.json_sql
    assert bulk.trigger_body(grouped=True) == (
        "UPDATE items SET status='complete', attempts=NEW.p1, finished_at=NEW.p2, result=j.value ->> 1"
        " FROM json_each(NEW.blob) AS j WHERE items.seq = j.value ->> 0"
    )
    assert Bulk("DELETE FROM items WHERE seq=?").json_sql is None
    with pytest.raises(ValueError, match="go together"):
        Bulk("UPDATE items SET a=? WHERE seq=?", "UPDATE ... {blob}", shared=(0,))
    with pytest.raises(ValueError, match="UPDATE"):
        Bulk("INSERT INTO items(key) VALUES (?)", "INSERT ... {blob}", "INSERT ... {blob} {p1}", shared=(0,))


def _complete_rows(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, json_bulk: bool) -> list[Any]:
    monkeypatch.setattr(bulk_mod, "JSON_BULK", json_bulk)
    store = ItemStore.create(tmp_path / name, durable=False)
    try:
        store.enqueue([(f"k{i}", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(300)])
        bulk = bulk_mod.COMPLETE
        rows: list[tuple[Any, ...]] = []
        for seq in range(200):  # 12 groups of (attempt, finished_at, started_at): grouped
            att, fin, start = 1 + seq % 2, f"2026-11-23T10:00:0{seq % 3}+00:00", f"s{seq % 2 + seq // 100}"
            rows.append((att, fin, seq / 1000, None, f'{{"n": {seq}, "s": "a\\"b"}}', start, seq))
        # seq 17 again (its attempt, so the trigger logs one row either way), another group: it wins
        rows.append((2, "late", 0.5, None, '"again"', "s9", 17))
        rows.append((1, "2026-11-23T10:00:00+00:00", 0.1, None, '"nul \x00 in it"', "s0", 18))  # NUL
        with store.transaction() as conn:
            bulk.run(conn, rows)
            # few rows, each its own group: one statement with every field in the JSON
            bulk.run(conn, [(3, f"f{seq}", 0.3, 1.5, "null", f"st{seq}", seq) for seq in range(200, 210)])
    finally:
        store.close()
    return _dump(tmp_path / name)


def test_grouped_bulk_matches_executemany(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not bulk_mod.json_bulk_supported():
        pytest.skip("this SQLite has no ->> operator: executemany is used")
    grouped = _complete_rows(tmp_path, "g.db", monkeypatch, True)
    many = _complete_rows(tmp_path, "m.db", monkeypatch, False)
    assert grouped == many
    by_seq = {r[0]: r for r in grouped[:300]}
    assert by_seq[17][12] == "late" and by_seq[17][-1] == '"again"'  # finished_at, result of the last row
    assert by_seq[18][-1] == '"nul \x00 in it"'
    assert sum(1 for r in grouped[:300] if r[4] == "complete") == 210


_SHAPES = [
    Bulk(  # nothing left but the seq
        "UPDATE items SET status='skipped', error_message=? WHERE seq=?",
        "UPDATE items SET status='skipped', error_message=j.value ->> 0"
        " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 1",
        "UPDATE items SET status='skipped', error_message={p1} FROM json_each({blob}) AS j"
        " WHERE items.seq = j.value ->> 0",
        shared=(0,),
    ),
    Bulk(  # one shared of two
        "UPDATE items SET status='failed', error_message=?, attempts=? WHERE seq=?",
        "UPDATE items SET status='failed', error_message=j.value ->> 0, attempts=j.value ->> 1"
        " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 2",
        "UPDATE items SET status='failed', error_message=j.value ->> 1, attempts={p1}"
        " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 0",
        shared=(1,),
    ),
    Bulk(  # two shared of three
        "UPDATE items SET status='failed', error_message=?, attempts=?, duration_s=? WHERE seq=?",
        "UPDATE items SET status='failed', error_message=j.value ->> 0, attempts=j.value ->> 1,"
        " duration_s=j.value ->> 2 FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 3",
        "UPDATE items SET status='failed', error_message={p1}, attempts=j.value ->> 1, duration_s={p2}"
        " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 0",
        shared=(0, 2),
    ),
]


@pytest.mark.parametrize("bulk", _SHAPES, ids=["seq-only", "one-of-two", "two-of-three"])
def test_grouped_bulk_of_every_shape_matches_executemany(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bulk: Bulk
) -> None:
    if not bulk_mod.json_bulk_supported():
        pytest.skip("this SQLite has no ->> operator: executemany is used")
    n = bulk.sql.count("?") - 1
    rows: list[tuple[Any, ...]] = []
    for seq in range(120):  # runs of 10 rows that share their values; every run value twice
        vals: list[Any] = [f"v{(seq // 10) % 6}", seq // 60 + 1, 0.5][:n]
        rows.append((*vals, seq))
    rows.append((*[b"not json", 7, 0.5][:n], 40))  # bytes: that group is bound row by row
    rows.append((*["again", 9, 0.25][:n], 3))  # seq 3 twice: the last row wins

    def fill(name: str, json_bulk: bool) -> list[Any]:
        monkeypatch.setattr(bulk_mod, "JSON_BULK", json_bulk)
        store = ItemStore.create(tmp_path / name, durable=False)
        try:
            store.enqueue([(f"k{i}", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(130)])
            with store.transaction() as conn:
                bulk.run(conn, rows)
        finally:
            store.close()
        return _dump(tmp_path / name)

    grouped, many = fill("g.db", True), fill("m.db", False)
    assert grouped == many
    items = {r[0]: r for r in grouped[: grouped.index(("--",))]}
    assert items[40][8] == b"not json"  # error_message
    assert items[3][8] == "again" and items[3][4] in ("skipped", "failed")
    assert sum(1 for r in items.values() if r[4] != "pending") == 120


def test_values_json_cannot_hold_fall_back_to_executemany(tmp_path: Path) -> None:
    store = ItemStore.create(tmp_path / "items.db", durable=False)
    try:
        with store.transaction() as conn:
            bulk_mod.INSERT_PENDING.run(conn, [("k", b"bytes", "line")])
        assert store.conn.execute("SELECT data FROM items").fetchone() == (b"bytes",)
    finally:
        store.close()


def test_a_bounded_health_check_stops_in_time_and_still_finds_a_damaged_header(tmp_path: Path) -> None:
    import time

    from batchtui.engine.store.health import store_is_healthy

    path = tmp_path / "items.db"
    store = ItemStore.create(path, durable=False)
    try:
        rows = [(f"key-{i:07d}-" + "x" * 200, '{"line": 1}', "line", "pending", *(None,) * 6) for i in range(60_000)]
        store.enqueue(rows)
    finally:
        store.close()
    t0 = time.monotonic()
    assert store_is_healthy(path, budget_s=0.0)  # stopped at once: nothing wrong in what it read
    assert time.monotonic() - t0 < 1.0
    assert store_is_healthy(path)  # the whole file
    with path.open("r+b") as fh:
        fh.write(b"not an sqlite file at all" * 4)
    assert not store_is_healthy(path, budget_s=1.0)


def test_a_busy_answer_to_the_health_check_is_busy_not_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite answers busy to the check itself, after the open (a WAL being recovered by the
    engine that just took the batch): the check says busy, never False, which would send
    `recover` to rebuild a healthy store. (An exclusive lock cannot come between: in WAL mode
    the open reader's shared lock keeps it out, so SQLite's own error is planted here.)"""
    from batchtui.engine.store import health
    from batchtui.engine.store.connection import StoreBusy

    path = tmp_path / "items.db"
    ItemStore.create(path, durable=False).close()
    opened = ItemStore.open_readonly

    class BusyCheck:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("PRAGMA quick_check"):
                exc = sqlite3.OperationalError("database is locked")
                exc.sqlite_errorcode = 261  # SQLITE_BUSY_RECOVERY  # type: ignore[attr-defined]
                raise exc
            return self.conn.execute(sql, *args)

    def open_busy(where: Path) -> ItemStore:
        store = opened(where)
        store.conn = BusyCheck(store.conn)  # type: ignore[assignment]
        return store

    monkeypatch.setattr(health.ItemStore, "open_readonly", staticmethod(open_busy))
    with pytest.raises(StoreBusy, match="locked by another process"):
        health.store_is_healthy(path)
    monkeypatch.undo()
    assert health.store_is_healthy(path)


def test_completing_an_item_logs_its_attempt(tmp_path: Path) -> None:
    """The store's trigger writes the attempt row of a completion from the items row itself."""
    path = tmp_path / "items.db"
    store = ItemStore.create(path, durable=False)
    try:
        store.enqueue([(f"k{i}", "null", "line", "pending", *(None,) * 6) for i in range(3)])
        with store.transaction() as conn:
            bulk_mod.COMPLETE.run(
                conn,
                [(2, "2026-11-23T10:00:01+00:00", 0.5, None, "null", "2026-11-23T10:00:00+00:00", 1)],
            )
        a = store.attempts(1)[0]
        assert (a.seq, a.attempt, a.status, a.started_at, a.finished_at, a.duration_s, a.error) == (
            1, 2, "complete", "2026-11-23T10:00:00+00:00", "2026-11-23T10:00:01+00:00", 0.5, None,
        )  # fmt: skip
        assert store.attempts(0) == [] and store.attempts(2) == []
    finally:
        store.close()


def test_a_store_made_without_the_trigger_gets_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "items.db"
    ItemStore.create(path, durable=False).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER attempt_of_complete")  # as made by an earlier batchtui
    store = ItemStore.open(path, durable=False)
    try:
        store.enqueue([("k", "null", "line", "pending", *(None,) * 6)])
        with store.transaction() as conn:
            conn.execute(bulk_mod.COMPLETE.sql, (1, "t1", 0.1, None, "null", "t0", 0))
        assert [(a.seq, a.attempt, a.status) for a in store.attempts(0)] == [(0, 1, "complete")]
    finally:
        store.close()


def test_cost_totals_from_the_cost_index_also_on_a_store_made_before_it(tmp_path: Path) -> None:
    path = tmp_path / "items.db"
    store = ItemStore.create(path, durable=False)
    try:
        store.enqueue([(f"k{i}", "null", "line", "pending", *(None,) * 6) for i in range(6)])
        assert store.cost_totals() == (0.0, 0.0)
        with store.transaction() as conn:
            for seq, cost in ((0, 0.25), (2, 1.5), (3, None), (5, 0.0)):
                conn.execute(bulk_mod.COMPLETE.sql, (1, "t1", 0.1, cost, "null", "t0", seq))
        assert store.cost_totals() == (1.75, 1.5)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX items_cost")  # as made by an earlier batchtui
    store = ItemStore.open(path, durable=False)
    try:
        plan = store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(cost), 0), COALESCE(MAX(cost), 0) FROM items WHERE cost IS NOT NULL"
        ).fetchall()
        assert any("items_cost" in str(row) for row in plan), plan
        assert store.cost_totals() == (1.75, 1.5)
    finally:
        store.close()


# -- every hand-written form of every statement, against its executemany form ---------------------

_TEXT = ["plain", "", "quote ' and \" and \\", "newline\nin it", "emoji \U0001f600", "tab\tand \\u0041", "123", "null"]
_NUM = [0, 1, -7, 2**62, 0.1, 2.5, 1.5e-7, -0.0]


def _value(kind: str, i: int) -> Any:
    """A value of one column kind for row ``i``: text, num, opt (text, num or None), seq."""
    if kind == "text":
        return f"{_TEXT[i % len(_TEXT)]} {i}"
    if kind == "num":
        return _NUM[i % len(_NUM)]
    if kind == "opt":
        return [None, _TEXT[i % len(_TEXT)], _NUM[i % len(_NUM)]][i % 3]
    raise AssertionError(kind)


_ERROR_ROW = ("num", "opt", "opt", "opt", "opt", "opt", "opt", "opt", "opt", "seq")
#: The parameters of each statement, by kind of value.
_ROW_KINDS: dict[str, tuple[str, ...]] = {
    "processing": ("opt", "seq"),
    "complete": ("num", "opt", "opt", "opt", "opt", "opt", "seq"),
    "failed": _ERROR_ROW,
    "retrying": _ERROR_ROW,
    "pending_with_error": _ERROR_ROW,
    "requeue": ("seq",),
    "skip": ("opt", "opt", "seq"),
    "attempt": ("seq", "num", "text", "opt", "opt", "opt", "opt", "opt", "opt", "opt"),
    "insert_pending": ("text", "text", "text"),
    "insert_invalid": ("text", "text", "text", "text", "opt", "opt", "opt", "opt", "opt", "opt"),
}


def _statement_rows(bulk: Bulk, kinds: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """60 rows in runs of 10 that share the statement's shared values (so its grouped form is
    chosen); the last row of each run repeats the seq before it with other values."""
    rows: list[tuple[Any, ...]] = []
    for i in range(60):
        seq = i - 1 if i % 10 == 9 else i
        rows.append(
            tuple(
                # each column its own value: a form that swaps two columns cannot match
                seq if kind == "seq" else _value(kind, (i // 10 if n in bulk.shared else i) + 5 * n)
                for n, kind in enumerate(kinds)
            )
        )
    return rows


def _seeded(path: Path) -> ItemStore:
    store = ItemStore.create(path, durable=False)
    rows = [(f"k{i}", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(60)]
    rows += [(f"bad{i}", "null", "record", "failed", "E", "permanent", "m", "d", "g", "t") for i in range(5)]
    store.enqueue(rows)
    with store.transaction() as conn:  # some items running (a requeue's rows), some not
        conn.execute("UPDATE items SET status='processing' WHERE seq % 2 = 0")
    return store


@pytest.mark.parametrize("name", sorted(bulk_mod.STATEMENTS))
def test_every_hand_written_form_leaves_the_store_executemany_leaves(tmp_path: Path, name: str) -> None:
    """Each statement's JSON form (and grouped form) is written by hand: run on the same rows,
    each must leave exactly the items and attempts its executemany form leaves."""
    if not bulk_mod.json_bulk_supported():
        pytest.skip("this SQLite has no ->> operator: executemany is used")
    bulk = bulk_mod.STATEMENTS[name]
    assert bulk.json_sql is not None
    rows = _statement_rows(bulk, _ROW_KINDS[name])
    assert len(rows[0]) == bulk.sql.count("?")
    if bulk.sql.startswith("UPDATE"):  # the last row of a seq wins, as in executemany
        rows_once = list(dict(zip((r[-1] for r in rows), rows, strict=True)).values())
    else:
        rows_once = rows

    def after(form: str, run: Any) -> list[tuple[Any, ...]]:
        path = tmp_path / form / "items.db"
        path.parent.mkdir()
        store = _seeded(path)
        try:
            with store.transaction() as conn:
                run(conn)
        finally:
            store.close()
        return _dump(path)

    many = after("many", lambda conn: conn.executemany(bulk.sql, rows))
    blob = bulk_mod.json_array(rows_once)
    assert blob is not None
    assert after("json", lambda conn: conn.execute(bulk.json_sql, (blob,))) == many
    if bulk.grouped_sql is not None:
        steps = bulk.plan(rows)
        assert len(steps) == 6 and all(step.grouped for step in steps)

        def grouped(conn: sqlite3.Connection) -> None:
            for step in steps:
                conn.execute(bulk.grouped_sql, (step.blob, *step.values))

        assert after("grouped", grouped) == many
    # The statement changed something (a form that does nothing cannot match by accident).
    assert many != after("none", lambda conn: None)


def test_a_whole_run_never_changes_the_umask_and_the_store_files_are_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The umask is the process's: the engine runs beside the caller's threads (the TUI's), so
    it must never change it. Under umask 0, with os.umask refusing to be called, a whole run
    (the store made, enqueued, committed on a second connection, read by a view meanwhile)
    leaves items.db and its -wal and -shm files 0600."""
    from batchtui.engine.config import BatchConfig
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import python_spec
    from batchtui.engine.runner import BatchRunner
    from batchtui.engine.sources import build_spec
    from batchtui.engine.store import ItemQueries

    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{i}\n" for i in range(20)))
    procs = Path(__file__).with_name("procs.py")
    modes: dict[str, int] = {}
    seen: list[int] = []
    old = os.umask(0)

    def refuse(mask: int) -> int:
        raise AssertionError(f"os.umask({mask:o}) called by the engine")

    try:
        monkeypatch.setattr(os, "umask", refuse)
        config = BatchConfig(output_dir=str(tmp_path / "out"), executor="thread", workers=2)
        batch = create_batch(config, build_spec([str(items)]), python_spec(f"{procs}:noop"))
        runner = BatchRunner(batch)

        def on_progress(live: Any) -> None:
            with ItemQueries(batch.items_db) as view:  # a view reads while the engine writes
                seen.append(view.count())
                for path in batch.path.glob("items.db*"):
                    modes[path.name] = stat.S_IMODE(path.stat().st_mode)

        runner.on_progress = on_progress
        result = runner.run()
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert result.exit_code == 0, result
    assert seen and seen[-1] == 20
    assert modes.keys() >= {"items.db", "items.db-wal", "items.db-shm"}
    assert set(modes.values()) == {0o600}, modes


def test_item_queries_count_page_and_stream_the_same_filtered_items(tmp_path: Path) -> None:
    """The views' one store API: for each filter, the count, the pages and the stream agree,
    and each keeps exactly the items the filter names."""
    from batchtui.engine.grouping import group_id
    from batchtui.engine.store import ItemFilter, ItemQueries, StoreError

    path = tmp_path / "items.db"
    store = ItemStore.create(path, durable=False)
    try:
        store.enqueue([(f"key_{i}%", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(30)])
        with store.transaction() as conn:
            for seq in range(0, 30, 3):  # 10 failed, two types, two groups
                etype = "exit 1" if seq % 2 else "Timeout"
                conn.execute(
                    bulk_mod.FAILED.sql, (1, etype, "permanent", f"boom {seq}", "", f"g-{etype}", "t", 0.1, "t", seq)
                )
                conn.execute(bulk_mod.ATTEMPT.sql, (seq, 1, "failed", "a", "b", 0.1, etype, "permanent", "boom", ""))
    finally:
        store.close()
    failed = list(range(0, 30, 3))
    cases = {
        ItemFilter(): list(range(30)),
        ItemFilter(status="failed"): failed,
        ItemFilter(status="failed", error_type="Timeout"): [s for s in failed if s % 2 == 0],
        ItemFilter(error_group=group_id("exit 1", "g-exit 1")): [s for s in failed if s % 2],
        ItemFilter(text="KEY_1"): [1, *range(10, 20)],  # case-insensitive
        ItemFilter(text="_2%"): [2],  # % and _ are plain characters
        ItemFilter(text="boom 2"): [21, 24, 27],
        ItemFilter(seqs=frozenset({5, 6, 29, 99})): [5, 6, 29],
        ItemFilter(status="pending", seqs=frozenset({5, 6})): [5],
        ItemFilter(seqs=frozenset()): [],
    }
    with ItemQueries(path) as view:
        assert view.size() == 30 and view.counts().failed == 10
        for f, expected in cases.items():
            assert view.count(f) == len(expected), f
            assert [r.seq for r in view.rows(f)] == expected, f
            pages = [r.seq for offset in range(0, 30, 4) for r in view.page(f, offset, 4)]
            assert pages == expected, f
        detail = view.item(3)
        assert detail is not None and detail.row.error_type == "exit 1" and detail.row.data == "3"
        assert [(a.attempt, a.status, a.error.error_type if a.error else None) for a in detail.attempts] == [
            (1, "failed", "exit 1")
        ]
        assert view.item(30) is None and view.row(30) is None
        # Numbers no item can have (SQLite's integers are 64-bit): none, not an OverflowError.
        assert view.item(1 << 63) is None and view.row(1 << 63) is None and view.row(-1) is None
        assert [(g.error_type, g.count) for g in view.error_groups()] == [("Timeout", 5), ("exit 1", 5)]
    assert ItemFilter(status="", text="") == ItemFilter()
    with pytest.raises(ValueError, match="unknown status"):
        ItemFilter(status="running")
    (tmp_path / "none").mkdir()
    with pytest.raises(StoreError, match="does not exist"):
        ItemQueries(tmp_path / "none" / "items.db")
    with pytest.raises(StoreError, match="is gone"):  # its folder too (tests/tui/test_folder_gone.py)
        ItemQueries(tmp_path / "gone" / "items.db")
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError):
        ItemQueries(path)
