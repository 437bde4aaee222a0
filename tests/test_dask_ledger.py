"""The dask executor's ledger without a cluster: each item handed out gets one outcome or is
reported cancelled, never both (engine/dask_ledger.py).

The runner also ignores an outcome for an item it no longer has in flight, so a ledger that let a
second copy through would go unseen by the tests on a cluster: these hold the ledger to it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from batchtui.engine import dask_ledger
from batchtui.engine.attempts import Outcome
from batchtui.engine.dask_ledger import Ledger, Task
from batchtui.engine.handoff import Handoff
from batchtui.engine.processors import Item


@dataclass
class _Future:
    """What the ledger reads of a dask future."""

    key: str
    finished: bool = False

    def done(self) -> bool:
        return self.finished


_keys = itertools.count()


def _key(first: Item) -> str:
    return f"k-{first.seq}-{next(_keys)}"


def _items(seqs: range, attempt: int = 1) -> list[Item]:
    return [Item(seq=s, key=str(s), data=str(s), attempt=attempt, batch_dir="/tmp") for s in seqs]


def _sent(ledger: Ledger, items: list[Item]) -> Task:
    """``items`` handed out as one chunk, taken by the dispatcher and submitted as one task."""
    ledger.handoff.put(items)
    chunk = ledger.handoff.take()
    assert chunk is not None
    task = ledger.dispatch(chunk, _key)
    assert task is not None
    assert ledger.sent(task, _Future(task.key))
    ledger.sending_done()
    return task


def _ok(item: Item) -> Outcome:
    return Outcome(item.seq, item.attempt, 0.0, 0.01, result=item.seq)


def test_an_outcome_streamed_and_repeated_in_the_result_reaches_the_runner_once() -> None:
    ledger = Ledger(Handoff())
    items = _items(range(3))
    task = _sent(ledger, items)
    assert ledger.counts() == (3, 0)
    assert [o.seq for o in ledger.take(task.key, [_ok(items[0])])] == [0]  # streamed
    assert ledger.take(task.key, [_ok(items[0])]) == []  # the same outcome again
    done = ledger.finished(task.future, [_ok(it) for it in items])  # the result repeats it
    assert done is not None
    _, _, out, missing = done
    assert [o.seq for o in out] == [1, 2] and missing == []
    assert ledger.counts() == (0, 0)
    assert ledger.finished(task.future, [_ok(it) for it in items]) is None  # no longer followed


def test_a_cancel_finds_each_item_in_the_hand_off_or_in_its_task() -> None:
    ledger = Ledger(Handoff())
    task = _sent(ledger, _items(range(3)))
    ledger.handoff.put(_items(range(3, 5)))  # waiting in the engine
    cancelled, remote = ledger.cancel_here([1, 2, 3, 4])
    assert sorted(cancelled) == [3, 4]
    assert {key: owed for key, (_, owed) in remote.items()} == {task.key: {1: 1, 2: 2}}
    # The gates answer: the task arrived on a worker, its item 1 had begun there, 2 had not.
    gone, idle = ledger.cancelled(remote, {task.key}, {task.key: {1}}, True)
    assert gone == [2] and idle == []
    assert [o.seq for o in ledger.take(task.key, [_ok(it) for it in task.items])] == [0, 1]  # not 2


def test_an_item_dispatched_again_is_owed_by_its_latest_task_only() -> None:
    """The runner gave up on a timed-out call and handed the item out again: the late outcome
    of the first dispatch is not the item's."""
    ledger = Ledger(Handoff())
    first = _sent(ledger, _items(range(1)))
    again = _sent(ledger, _items(range(1), attempt=2))
    late = Outcome(0, 1, 0.0, 9.0, result="late")
    assert ledger.take(first.key, [late]) == []
    assert [o.attempt for o in ledger.take(again.key, [_ok(again.items[0])])] == [2]


def test_a_task_that_never_said_it_began_gives_its_items_back_once() -> None:
    ledger = Ledger(Handoff())
    task = _sent(ledger, _items(range(2)))
    done = ledger.finished(task.future, None)  # its worker died
    assert done is not None and done[1] is False  # it never said it began
    returned, lost = ledger.lost(task, False, set(), True, False, False)
    assert [o.seq for o in returned] == [0, 1] and all(o.returned for o in returned) and lost == []
    again = _sent(ledger, _items(range(2)))
    ledger.finished(again.future, None)
    returned, lost = ledger.lost(again, False, set(), True, False, False)
    assert returned == [] and [it.seq for it in lost] == [0, 1]  # unproven twice: counted now


def test_nothing_goes_out_while_a_worker_restarts() -> None:
    ledger = Ledger(Handoff())
    ledger.hold()
    ledger.handoff.put(_items(range(2)))
    chunk = ledger.handoff.take()
    assert chunk is not None
    assert ledger.dispatch(chunk, _key) is None  # back to the front of the hand-off
    assert not ledger.wait_for_room(6, 0.0)
    ledger.unhold()
    again = ledger.handoff.take()
    assert again is chunk
    assert ledger.wait_for_room(6, 0.0)
    task = ledger.dispatch(again, _key)
    assert task is not None and [it.seq for it in task.items] == [0, 1]


def test_a_task_that_began_runs_one_of_its_items_and_a_thread_one_task() -> None:
    """QA: every item a begun task owed counted as running: 50 running on two worker threads,
    and a pause answered "7 items already running finish". A task runs its items one at a time
    (a chunked callable's all at once), and a worker thread runs one task."""
    ledger = Ledger(Handoff())
    first = _sent(ledger, _items(range(5)))
    second = _sent(ledger, _items(range(5, 8)))
    third = _sent(ledger, _items(range(8, 10)))
    assert ledger.counts() == (10, 0)  # none began: all wait on the cluster
    ledger.began(first.key)
    ledger.began(second.key)
    assert ledger.counts() == (8, 2)
    assert ledger.counts(together=True) == (2, 8)
    # A third began while the end of one is not heard of yet: never more than the threads run.
    ledger.began(third.key)
    assert ledger.counts() == (7, 3)
    assert ledger.counts(threads=2) == (7, 2)
    assert ledger.counts(together=True, threads=2) == (0, 10)  # a chunk's items run together
    assert [o.seq for o in ledger.take(first.key, [_ok(it) for it in first.items])] == list(range(5))
    assert ledger.counts(threads=2) == (3, 2)


class _Clock:
    """The ledger's ``time``, stepped by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def test_each_item_of_a_task_runs_on_its_own_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task runs its items one after another: the one it runs now began when its worker said the
    one before had ended, and those behind it have not begun. Every item a begun task owed had the
    task's start: the --timeout watchdog judged its 4th item by the time of the 3 before it, and
    the in-flight list showed its waiting items running."""
    clock = _Clock()
    monkeypatch.setattr(dask_ledger, "time", clock)
    ledger = Ledger(Handoff())
    task = _sent(ledger, _items(range(6)))
    assert [ledger.since(s) for s in range(6)] == [None] * 6  # waiting on the cluster
    ledger.began(task.key)
    assert [ledger.since(s) for s in range(6)] == [100.0] + [None] * 5
    clock.now = 101.0
    ledger.take(task.key, [_ok(task.items[0])], 1)
    assert [ledger.since(s) for s in range(1, 6)] == [101.0] + [None] * 4
    # Outcomes too large to stream: the worker still says that 1 ended (they come with the result).
    clock.now = 103.0
    assert ledger.take(task.key, [], 2) == []
    assert [ledger.since(s) for s in range(1, 6)] == [None, 103.0, None, None, None]
    # 3 is cancelled before it began (it never will): 4 begins when 2 ends.
    cancelled, remote = ledger.cancel_here([3])
    assert cancelled == [] and ledger.cancelled(remote, {task.key}, {}, True)[0] == [3]
    clock.now = 104.0
    ledger.take(task.key, [_ok(task.items[2])], 3)
    assert [ledger.since(s) for s in (4, 5)] == [104.0, None]
    # Without the index (an older worker): read from the outcomes it owed.
    clock.now = 105.0
    ledger.take(task.key, [_ok(task.items[4])])
    assert ledger.since(5) == 105.0


def test_an_item_given_up_on_keeps_its_task_busy_until_its_worker_says_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner failed a hung call (a timeout on a cluster it cannot kill on) and handed it out
    again: its first task still runs it, so the item behind it there has not begun."""
    clock = _Clock()
    monkeypatch.setattr(dask_ledger, "time", clock)
    ledger = Ledger(Handoff())
    first = _sent(ledger, _items(range(3)))
    ledger.began(first.key)
    again = _sent(ledger, _items(range(1), attempt=2))
    assert ledger.since(1) is None and ledger.since(0) is None  # 0: owed by the new task, not begun
    clock.now = 160.0
    assert ledger.take(first.key, [Outcome(0, 1, 100.0, 60.0, result="late")], 1) == []
    assert ledger.since(1) == 160.0
    assert ledger.since(0) is None and again.since is None


def test_a_chunked_callables_items_run_together() -> None:
    ledger = Ledger(Handoff())
    task = _sent(ledger, _items(range(3)))
    ledger.began(task.key)
    assert task.since is not None
    assert [ledger.since(s, together=True) for s in range(3)] == [task.since] * 3
