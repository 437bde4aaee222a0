"""The committer's group commits: one statement per job, and the same rows as statement by statement."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine import staging
from batchtui.engine import store as store_mod
from batchtui.engine.committer import CommitJob, Committer, OneStatement
from batchtui.engine.files import ResultsLog
from batchtui.engine.store import Bulk, ItemStore, connection
from batchtui.engine.store.bulk import SKIP

FIN = "2026-11-23T10:00:00.000+00:00"


def _job(commit_seq: int, offset: int) -> CommitJob:
    """Every kind of change, with seqs that meet in more than one kind and rows JSON cannot hold."""
    complete = [(1, FIN, i / 1000, None, f'{{"n": {i}}}', f"start-{i // 25}", i) for i in range(100)]
    complete.append((2, "later", 0.5, 1.25, '"with a cost"', "start-x", 7))  # seq 7 again: this row wins
    rows: dict[str, list[tuple[Any, ...]]] = {
        "processing": [(FIN, 100), (FIN, 101)],
        "retrying": [(2, "Timeout", "transient", "slow", None, "g1", FIN, 1.0, FIN, 102)],
        "pending_with_error": [(1, "Timeout", "transient", "slow", None, "g1", FIN, 1.0, FIN, 103)],
        "requeue": [(104,)],
        "skip": [("skipped by operator", FIN, 105), ("again", FIN, 100)],  # 100: processing, then skipped
        "failed": [(3, "ValueError", "permanent", "bad", "Traceback ...", "g2", FIN, 0.1, FIN, 106)],
        "complete": complete,
        "attempt": [(106, 3, "failed", FIN, FIN, 0.1, "ValueError", "permanent", "bad", None)],
    }
    return CommitJob(rows=rows, offset=offset, commit_seq=commit_seq)


def _commit(tmp_path: Path, name: str, jobs: list[CommitJob], *, one_statement: bool) -> tuple[list[Any], list[str]]:
    """Commit ``jobs`` into a fresh store of 120 pending items: (its rows, the statements SQLite ran)."""
    path = tmp_path / name / "items.db"
    path.parent.mkdir()
    store = ItemStore.create(path, durable=False)
    store.enqueue([(f"k{i}", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(120)])
    results = ResultsLog(path.parent / "results.jsonl")
    done = threading.Event()
    committer = Committer(
        store.second_writer(durable=False),
        results,
        order=staging.ORDER,
        statements=staging.STATEMENTS,
        durable=False,
        synced_offset=0,
        wake=done.set,
        one_statement=one_statement,
    )
    traced: list[str] = []
    committer._store.conn.set_trace_callback(traced.append)
    try:
        for job in jobs:
            committer.submit(job)
        committer.drain()
        assert committer.failure is None
    finally:
        committer.close()
        results.close()
        store.close()
    with sqlite3.connect(path) as conn:
        dump = [
            *conn.execute("SELECT * FROM items ORDER BY seq"),
            ("--",),
            *conn.execute("SELECT * FROM attempts ORDER BY seq, attempt"),
            ("--",),
            *conn.execute("SELECT * FROM meta WHERE k IN ('results_offset', 'commit_seq') ORDER BY k"),
            ("--",),
            *conn.execute("SELECT type, name FROM sqlite_master WHERE name LIKE 'batchtui%'"),
        ]
    return dump, traced


def _top_level(traced: list[str]) -> list[str]:
    """The statements the committer issued. SQLite traces a statement again at each trigger it
    fires (with the same text, bound values expanded): one entry per run of equal entries."""
    out: list[str] = []
    for s in traced:
        if not s.startswith("CREATE TEMP") and (not out or out[-1] != s):
            out.append(s)
    return out


def test_one_statement_commits_match_statement_by_statement(tmp_path: Path) -> None:
    if not store_mod.JSON_BULK:
        pytest.skip("this SQLite has no JSON bulk forms: jobs go statement by statement")
    jobs = [_job(1, 10), _job(2, 20)]
    one, one_trace = _commit(tmp_path, "one", jobs, one_statement=True)
    many, many_trace = _commit(tmp_path, "many", jobs, one_statement=False)
    assert one == many
    items = {row[0]: row for row in one[: one.index(("--",))]}
    assert items[7][4] == "complete" and items[7][5] == 2 and items[7][-2] == 1.25  # the last row of seq 7
    assert items[100][4] == "skipped" and items[106][4] == "failed" and items[102][4] == "processing"
    assert [s for s in one if s[0] in ("commit_seq", "results_offset")] == [("commit_seq", 2), ("results_offset", 20)]
    assert one[-1] == ("--",)  # the view and triggers are TEMP: nothing of them in items.db
    # One INSERT per job, no BEGIN or COMMIT; the other way, a transaction of many statements.
    statements = _top_level(one_trace)
    assert len(statements) == 2 and all(s.startswith("INSERT INTO temp.batchtui_commit") for s in statements)
    assert sum(s == "BEGIN IMMEDIATE" for s in _top_level(many_trace)) == 2


def test_a_job_json_cannot_hold_goes_statement_by_statement(tmp_path: Path) -> None:
    if not store_mod.JSON_BULK:
        pytest.skip("this SQLite has no JSON bulk forms: jobs go statement by statement")
    job = _job(1, 10)
    job.rows["complete"].append((1, FIN, 0.1, None, '"nul \x00 in it"', "start-0", 110))  # NUL: not as JSON
    one, trace = _commit(tmp_path, "one", [job, _job(2, 20)], one_statement=True)
    many, _ = _commit(tmp_path, "many", [job, _job(2, 20)], one_statement=False)
    assert one == many
    assert {row[0]: row for row in one[: one.index(("--",))]}[110][-1] == '"nul \x00 in it"'
    statements = _top_level(trace)
    assert statements.count("BEGIN IMMEDIATE") == 1  # the first job
    assert statements[-1].startswith("INSERT INTO temp.batchtui_commit")  # the second, as one statement


def test_a_busy_one_statement_commit_waits_its_turn_the_other_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not store_mod.JSON_BULK:
        pytest.skip("this SQLite has no JSON bulk forms: jobs go statement by statement")
    real = connection._Cursor.execute
    busy = {"left": 1}

    def execute(self: Any, sql: str, parameters: Any = (), /) -> Any:
        if sql.startswith("INSERT INTO temp.batchtui_commit") and busy["left"]:
            busy["left"] -= 1
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = 517  # type: ignore[attr-defined]  # SQLITE_BUSY_SNAPSHOT
            raise exc
        return real(self, sql, parameters)

    monkeypatch.setattr(connection._Cursor, "execute", execute)
    one, trace = _commit(tmp_path, "one", [_job(1, 10)], one_statement=True)
    monkeypatch.setattr(connection._Cursor, "execute", real)
    many, _ = _commit(tmp_path, "many", [_job(1, 10)], one_statement=False)
    assert one == many and busy["left"] == 0
    assert "BEGIN IMMEDIATE" in _top_level(trace)


def test_a_connection_used_again_gets_the_new_statement_forms(tmp_path: Path) -> None:
    if not store_mod.JSON_BULK:
        pytest.skip("this SQLite has no JSON bulk forms: jobs go statement by statement")
    store = ItemStore.create(tmp_path / "items.db", durable=False)
    try:
        store.enqueue([(f"k{i}", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(3)])
        conn = store.conn
        OneStatement(conn, {"skip": SKIP}, ["skip"])
        failed = Bulk(
            "UPDATE items SET status='failed', error_message=? WHERE seq=?",
            "UPDATE items SET status='failed', error_message=j.value ->> 0"
            " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 1",
        )
        again = OneStatement(conn, {"skip": failed}, ["skip"])
        statement = again.statement(CommitJob(rows={"skip": [("why", 1)]}, offset=5, commit_seq=9))
        assert statement is not None
        conn.execute(*statement)
        assert conn.execute("SELECT status, error_message FROM items WHERE seq=1").fetchone() == ("failed", "why")
        assert store.get_meta("commit_seq") == 9 and store.get_meta("results_offset") == 5
    finally:
        store.close()


@pytest.mark.parametrize("one_statement", [True, False])
def test_results_are_synced_before_the_commit_that_records_their_offset(tmp_path: Path, one_statement: bool) -> None:
    """ "Nothing finished is lost": the lines a commit's results_offset covers are fsynced before
    that commit runs. Each event (a sync with the file's size then, a statement the committer's
    connection runs) goes into one list, in the order it happened."""
    path = tmp_path / "items.db"
    store = ItemStore.create(path, durable=False)
    store.enqueue([(f"k{i}", f'"{i}"', "line", "pending", *(None,) * 6) for i in range(120)])
    results = ResultsLog(tmp_path / "results.jsonl")
    events: list[tuple[str, Any]] = []
    real_sync = results.datasync

    def datasync() -> None:
        events.append(("sync", os.fstat(results.fileno()).st_size))
        real_sync()

    results.datasync = datasync  # type: ignore[method-assign]
    committer = Committer(
        store.second_writer(durable=False),
        results,
        order=staging.ORDER,
        statements=staging.STATEMENTS,
        durable=True,
        synced_offset=0,
        wake=lambda: None,
        one_statement=one_statement,
    )
    committer._store.conn.set_trace_callback(
        lambda sql: None if sql.startswith(("CREATE TEMP", "DROP VIEW")) else events.append(("sql", sql))
    )
    try:
        for n in range(1, 4):
            for i in range(5):
                results.append(b'{"seq": %d}\n' % (n * 10 + i))
            events.append(("job", results.offset))
            committer.submit(_job(n, results.offset))
            committer.drain()
            assert committer.failure is None
    finally:
        committer.close()
        results.close()
        store.close()
    synced, offset, commits, first = 0, 0, 0, False
    for kind, value in events:
        if kind == "job":
            offset, first = value, True
        elif kind == "sync":
            synced = max(synced, value)
        elif first:  # the job's first statement: its transaction starts here
            first = False
            commits += 1
            assert synced >= offset, f"a commit recording offset {offset} ran with the file synced to {synced}"
    assert commits == 3 and synced == offset
