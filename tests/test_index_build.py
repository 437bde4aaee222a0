"""The ``index`` command: the slowest-first index is built beside the run, not in its way.

A view sorted slowest first asks the engine for the index that order is read from. The build
scans the whole table under the write lock (1-2 s for 1M items): it goes to the committer with
a group commit, so the runner thread goes on handing out work and taking in outcomes while it
runs. Stepped with the fake executor of test_runner_steps; a test holds the write lock from
its own connection, so "the build takes long" is a state the test controls, not a timing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.client import NoEngine, send
from batchtui.engine.committer import MAX_QUEUED
from batchtui.engine.control import append_command, new_command
from batchtui.engine.models import LiveProgress
from batchtui.engine.store.queries import ItemFilter, ItemQueries
from batchtui.engine.store.slowest import walks_index

from .test_runner_steps import make_runner, statuses  # noqa: F401  (the fixture)


def _answer(runner: Any, cmd_id: str) -> str:
    live = LiveProgress.model_validate_json((runner.batch.path / "live_progress.json").read_bytes())
    return live.control_results[cmd_id]


def test_an_index_command_builds_the_slowest_first_index_once_and_the_run_goes_on(make_runner: Any) -> None:  # noqa: F811
    """A view shows the items slowest first: the engine builds the index that order is read from
    (a store has none until then), once, and each completion after it is in it."""
    runner, ex = make_runner(20, workers=2)
    t = time.monotonic()
    runner.step(t)
    for seq in ex.begin(2):
        ex.end(seq)
    runner.step(t)
    with ItemQueries(runner.batch.items_db) as q:
        assert not q.has_slowest_index()
    answers = []
    for value in ("duration", "duration", "tries"):
        cmd = new_command("index", value=value)
        runner.command(cmd)
        runner.step(t)
        answers.append(_answer(runner, cmd.id))
    runner._commit()  # the build is done
    cmd = new_command("index", value="duration")
    runner.command(cmd)
    runner.step(t)
    answers.append(_answer(runner, cmd.id))
    assert answers == [
        "indexing the items slowest first; the run goes on meanwhile",
        "the items are being indexed slowest first already",
        "failed: no index for the order 'tries' (only duration)",
        "the items are indexed slowest first already",
    ]
    for _ in range(3):
        for seq in ex.begin(2):
            ex.end(seq)
        runner.step(t)
    runner._commit()
    with ItemQueries(runner.batch.items_db) as q:
        assert q.has_slowest_index() and walks_index(q._conn, ItemFilter())
        rows = q.page(ItemFilter(), 0, 100, "duration")
    assert [row.status for row in rows[:8]] == ["complete"] * 8 and len(rows) == 20


def test_the_runner_goes_on_while_the_index_is_built(make_runner: Any) -> None:  # noqa: F811
    """While the build holds the write lock (here: for as long as the test keeps the lock, the
    build waiting behind it), the runner hands out work, takes in outcomes and queues its group
    commits; none of its turns waits for the build. Once the lock is let go, the index and every
    change are committed, in order, and the committer's queue limit is back to normal."""
    runner, ex = make_runner(400, workers=2)
    t = time.monotonic()
    runner.step(t)
    for seq in ex.begin(4):
        ex.end(seq)
    runner.step(t)
    runner._commit()  # nothing queued at the committer: the build is the next job

    holder = sqlite3.connect(runner.batch.items_db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock: every commit (the build first) waits
    released = threading.Event()
    failsafe_fired = threading.Event()

    def release(failsafe: bool = False) -> None:
        if not released.is_set():
            released.set()
            if failsafe:
                failsafe_fired.set()
            holder.execute("ROLLBACK")

    # Below the committer's busy timeout (5 s): a runner that waits for the build gets to go on
    # (and this test fails on failsafe_fired) instead of hanging or failing its commits.
    failsafe = threading.Timer(3.0, release, kwargs={"failsafe": True})
    failsafe.start()
    try:
        cmd = new_command("index", value="duration")
        append_command(runner.batch, cmd)  # as a view sends it: how far the file is read is stored too
        ended = 0
        for turn in range(1, 13):
            runner.step(t + turn * 0.1)  # each turn past the commit interval: a group commit
            for seq in ex.begin(4):
                ex.end(seq)
                ended += 1
        runner.step(t + 2.0)
        queued = len(runner.committer._queue)
        answer = _answer(runner, cmd.id)
    finally:
        release()
        failsafe.cancel()
    assert not failsafe_fired.is_set(), "a runner turn waited for the index build"
    assert answer == "indexing the items slowest first; the run goes on meanwhile"
    assert ended == 48 and queued > MAX_QUEUED  # work went on; its commits queued behind the build
    runner._commit()
    holder.close()
    assert runner.committer._limit == MAX_QUEUED
    assert not runner.indexing and runner.counts.complete == 52
    with ItemQueries(runner.batch.items_db) as q:
        assert q._conn.execute("SELECT v FROM meta WHERE k = 'control_offset'").fetchone()[0] > 0
    assert sorted(seq for seq, (st, _) in statuses(runner).items() if st == "complete") == list(range(52))
    with ItemQueries(runner.batch.items_db) as q:
        assert q.has_slowest_index() and walks_index(q._conn, ItemFilter())
        assert [row.seq for row in q.page(ItemFilter(status="complete"), 0, 200, "duration")] == list(range(52))


def test_an_index_command_needs_an_engine(make_runner: Any) -> None:  # noqa: F811
    runner, _ex = make_runner(3, workers=1)
    runner.close()
    with pytest.raises(NoEngine):
        send(BatchDir(runner.batch.path), "index", value="duration")
