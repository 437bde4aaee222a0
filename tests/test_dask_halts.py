"""A halt overshoots by at most the items already running on the dask executor too (DESIGN
section 6), for a fatal error and for the failure rate.

Each dask worker thread has up to two more tasks waiting on its worker, and the engine's cancel
is a broadcast to every worker: a worker that ended an item with a fatal error started its next
queued task at once, while the outcome went to the engine and the cancel came back. With one
worker a fatal error let 3 or 4 items run, with two 8; the failure rate's 10th failure let 12 to
17 run (10 allowed). Now an outcome that may halt the batch holds its worker's items of the run
(engine/dask_worker.py ``await_verdict``) until the engine has judged it: it goes on when the
outcome halts nothing, or its items are cancelled by the halt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import dask_client, only_batch
from .test_dask import needs_dask
from .test_halt_overshoot import crossing_run, halting_run, store_count

pytestmark = pytest.mark.xdist_group("test_dask_halts")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A scheduler and two single-threaded worker processes (as ``--scheduler`` gives)."""
    with dask_client(1) as client:
        yield client


def _on_dask(
    invoke_cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cluster: Any,
    *policy: str,
    out_dir: Path | None = None,
) -> tuple[list[int], int, str]:
    """halting_run on dask (crossing_run, given ``out_dir``): on ``cluster`` (two threads) when
    given, else on the engine's own LocalCluster of one worker; the seqs that started, the
    cluster's threads, and the run's stderr (where its own cluster's workers say that a
    verdict did not come in time: shown when an assertion fails)."""
    if cluster is not None:
        monkeypatch.setenv("BATCHTUI_SCHEDULER", cluster.scheduler.address)
    threads = 2 if cluster is not None else 1
    output: list[str] = []
    if out_dir is not None:
        return crossing_run(invoke_cli, tmp_path, out_dir, "dask", 1, output), threads, output[0]
    return halting_run(invoke_cli, tmp_path, "dask", 1, *policy, output=output), threads, output[0]


@needs_dask
@pytest.mark.parametrize("on_cluster", [False, True])
def test_fatal_halt_on_dask_starts_nothing_after_the_fatal_outcome(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    cluster: Any,
    on_cluster: bool,
) -> None:
    """The engine's own LocalCluster of one worker, and an existing cluster of two threads."""
    ran, threads, err = _on_dask(
        invoke_cli, tmp_path, monkeypatch, cluster if on_cluster else None, "--fatal-exit-codes", "3"
    )
    assert 1 <= len(ran) <= threads, (ran, err)
    assert len(set(ran)) == len(ran)
    batch = only_batch(out_dir)
    assert store_count(batch, "failed") == 0  # a fatal item goes back to pending
    assert store_count(batch, "pending") == 300


@needs_dask
@pytest.mark.parametrize("on_cluster", [False, True])
def test_failure_rate_halt_on_dask_starts_nothing_after_the_crossing_outcome(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    cluster: Any,
    on_cluster: bool,
) -> None:
    policy = ("--max-failure-rate", "0.5", "--min-items", "10")
    ran, threads, err = _on_dask(invoke_cli, tmp_path, monkeypatch, cluster if on_cluster else None, *policy)
    assert 10 <= len(ran) <= 9 + threads, (ran, err)
    assert len(set(ran)) == len(ran)
    assert store_count(only_batch(out_dir), "failed") == len(ran)


@needs_dask
@pytest.mark.parametrize("on_cluster", [False, True])
def test_a_failure_rate_crossed_by_a_success_on_dask_starts_nothing_after_it(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    cluster: Any,
    on_cluster: bool,
) -> None:
    """Items 0-7 fail, the rest succeed: the 10th outcome crosses 50% (see
    test_halt_overshoot), with one thread a success. A success held nothing before: it waited
    in its worker's outbox while the worker ran on."""
    ran, threads, err = _on_dask(invoke_cli, tmp_path, monkeypatch, cluster if on_cluster else None, out_dir=out_dir)
    assert 10 <= len(ran) <= 9 + threads, (ran, err)
    assert len(set(ran)) == len(ran)


# -- the worker's hold, on its own ------------------------------------------------------------


def _held_gate() -> tuple[Any, Any]:
    from batchtui.engine.dask_worker import WorkerGates

    gates = WorkerGates()
    entry = gates.arrive("run-1-0", 2)
    gates.hold("run", [(0, 1)])
    return gates, entry


def _wait(gates: Any, entry: Any, limit: float, released: Any = lambda: False) -> float:
    started = time.monotonic()
    gates.await_verdict("run", entry, 1, released, limit=limit)
    return time.monotonic() - started


def test_a_held_worker_waits_for_the_verdict_up_to_its_limit(caplog: pytest.LogCaptureFixture) -> None:
    gates, entry = _held_gate()
    with caplog.at_level("WARNING", logger="batchtui.engine.dask_gates"):
        assert _wait(gates, entry, 0.3) >= 0.3  # no verdict came: it waited it out, then goes on
    # Said, not silent: a halt decided meanwhile may have let the item start.
    assert "no verdict from the engine" in caplog.text and "may overshoot" in caplog.text
    assert gates.begin(entry, 1)
    assert _wait(gates, gates.arrive("run-2-0", 1), 5.0) < 1.0  # the lapsed hold is gone


def test_the_engines_lift_lets_a_held_worker_go_on_at_once() -> None:
    gates, entry = _held_gate()
    gates.hold("other-run", [(7, 1)])  # another engine's hold is not this run's
    threading.Timer(0.2, gates.lift, args=("run", [(0, 1)])).start()
    assert _wait(gates, entry, 10.0) < 5.0
    assert gates.begin(entry, 1)


def test_a_cancel_ends_the_wait_and_the_item_never_begins() -> None:
    gates, entry = _held_gate()
    threading.Timer(0.2, gates.cancel, args=({"run-1-0": (2, [1])},)).start()
    assert _wait(gates, entry, 10.0) < 5.0
    assert not gates.begin(entry, 1)


def test_a_released_task_stops_waiting_and_starts_nothing() -> None:
    gates, entry = _held_gate()
    gone = threading.Event()
    threading.Timer(0.2, gone.set).start()
    assert _wait(gates, entry, 10.0, gone.is_set) < 5.0


def test_a_task_holds_its_worker_after_an_outcome_that_may_halt(tmp_path: Path) -> None:
    """run_chunk: a fatal error holds the run; a failure for good only under a failure rate
    near its limit (the engine sends such tasks ``strict``)."""
    from batchtui.engine import dask_gates, dask_worker
    from batchtui.engine.attempts import Classifier
    from batchtui.engine.dask_worker import TaskSpec
    from batchtui.engine.processors import Item, python_spec

    (tmp_path / "f.py").write_text(
        "from batchtui.engine.errors import Fatal\n\n\ndef f(item):\n"
        "    if item.seq == 0:\n        raise Fatal('stop everything')\n    raise ValueError('bad')\n"
    )
    spec = python_spec(f"{tmp_path / 'f.py'}:f").model_dump_json()
    chunk = [Item(seq=i, key=str(i), data=str(i), attempt=3, batch_dir=str(tmp_path)) for i in range(2)]
    # Near the failure rate's limit (strict), a failure for good holds too; far from it, never.
    near = (1, dask_gates.FAILURES)
    cases = (("e-fatal", 0, (0, 0), set()), ("e-far", 3, (0, 0), set()), ("e-near", 3, near, {(1, 3)}))
    for engine, judged, strict, left in cases:
        task = TaskSpec(spec, None, 1 << 20, False, Classifier(), engine=engine, judged_below=judged)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(dask_gates, "VERDICT_WAIT_S", 0.3)
            started = time.monotonic()
            outcomes = dask_worker.run_chunk(task, chunk, f"{engine}-0-0", strict)
            # The second item waited for a verdict on the first one's fatal error (none came
            # here: it waited the limit out, and the hold lapsed).
            assert time.monotonic() - started >= 0.3
        assert [o.error.category if o.error else None for o in outcomes] == ["fatal", "item"]
        assert dask_worker._gates._held.get(engine, set()) == left  # a failure for good: only under a rate
        dask_worker._gates.lift(engine, None)
        dask_worker._gates.strict.pop(engine, None)


def test_a_success_holds_its_worker_only_while_the_engine_says_successes_are_judged(tmp_path: Path) -> None:
    """Before --min-items outcomes are in, the engine sends its tasks SUCCESSES: a success then
    holds the run's next item until its verdict, as a failure does; with FAILURES it does not."""
    from batchtui.engine import dask_gates, dask_worker
    from batchtui.engine.attempts import Classifier
    from batchtui.engine.dask_worker import TaskSpec
    from batchtui.engine.processors import Item, python_spec

    (tmp_path / "g.py").write_text("def g(item):\n    return item.seq\n")
    spec = python_spec(f"{tmp_path / 'g.py'}:g").model_dump_json()
    chunk = [Item(seq=i, key=str(i), data=str(i), attempt=1, batch_dir=str(tmp_path)) for i in range(2)]
    for engine, level, left in (
        ("s-judged", dask_gates.SUCCESSES, {(1, 1)}),
        ("s-free", dask_gates.FAILURES, set()),
    ):
        task = TaskSpec(spec, None, 1 << 20, False, Classifier(), engine=engine, judged_below=3)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(dask_gates, "VERDICT_WAIT_S", 0.3)
            started = time.monotonic()
            outcomes = dask_worker.run_chunk(task, chunk, f"{engine}-0-0", (1, level))
            waited = time.monotonic() - started
        assert [o.error for o in outcomes] == [None, None]
        assert dask_worker._gates._held.get(engine, set()) == left
        # Item 1 waited out the verdict on item 0's success (none came: the hold lapsed), and
        # its own success holds the next.
        assert (waited >= 0.3) == bool(left)
        dask_worker._gates.lift(engine, None)
        dask_worker._gates.strict.pop(engine, None)


# -- the engine's verdicts ---------------------------------------------------------------------


class _Broadcasts:
    """Stands in for the executor's cluster: what it asked of every worker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def ask_all(self, function: Any, *args: Any) -> tuple[list[Any], bool]:
        self.sent.append((function.__name__, args))
        return [], True

    def later(self, function: Any) -> None:
        function()


def _executor(tmp_path: Path) -> tuple[Any, Any, _Broadcasts]:
    import queue

    from batchtui.engine.config import load_config
    from batchtui.engine.dask_executor import DaskExecutor
    from batchtui.engine.earlyhalt import EarlyHalt
    from batchtui.engine.processors import shell_spec

    config = load_config({"output_dir": str(tmp_path), "executor": "dask"}, environ={})
    ex = DaskExecutor(shell_spec("true"), config, queue.SimpleQueue())
    early = EarlyHalt(lambda complete, failed: None, 0, 0, config.max_attempts)
    ex.early_halt = early
    ex.verdicts.dask = sent = _Broadcasts()
    return ex, early, sent


def _fatal(seq: int) -> Any:
    from batchtui.engine.attempts import Outcome
    from batchtui.engine.errors import Fatal, classify

    return Outcome(seq, 1, 0.0, 0.1, error=classify(Fatal("no")))


def test_the_engine_lets_a_held_worker_go_on_when_its_outcome_halts_nothing(tmp_path: Path) -> None:
    """An item being skipped (or stopped) ended with a fatal error: not the batch's verdict, so
    its worker goes on (it would wait out VERDICT_WAIT_S for each such item otherwise)."""
    ex, early, sent = _executor(tmp_path)
    early.ignore(5)
    ex.verdicts.report([_fatal(5)], [(5, 1)])
    assert sent.sent == [("lift_on_worker", (ex._key_prefix, [(5, 1)]))]
    assert not early.tripped


def test_a_halt_keeps_the_workers_held_until_the_runner_dismisses_it(tmp_path: Path) -> None:
    ex, early, sent = _executor(tmp_path)
    ex.verdicts.report([_fatal(6)], [(6, 1)])
    assert early.tripped and sent.sent == []  # held: the halt's cancel reaches their gates
    early.dismiss(0, 0)  # the runner took it in and did not halt after all
    assert sent.sent == [("lift_on_worker", (ex._key_prefix, None))]


def test_lifts_decided_while_one_is_sent_go_in_one_broadcast(tmp_path: Path) -> None:
    """Many failures under --max-failure-rate: one broadcast at a time carries every lift
    decided meanwhile (one a failure queued behind each other, and a run stalled 10 s at once)."""
    ex, early, sent = _executor(tmp_path)
    queued: list[Any] = []
    sent.later = queued.append  # type: ignore[method-assign]  # the broadcast thread is busy
    for seq in (1, 2, 3):
        early.ignore(seq)
        ex.verdicts.report([_fatal(seq)], [(seq, 1)])
    assert len(queued) == 1 and sent.sent == []
    queued[0]()
    assert sent.sent == [("lift_on_worker", (ex._key_prefix, [(1, 1), (2, 1), (3, 1)]))]
    early.ignore(4)
    ex.verdicts.report([_fatal(4)], [(4, 1)])  # the broadcast ended: the next lift starts one again
    assert len(queued) == 2


def test_headroom_is_the_failures_that_cannot_trip_the_rate_whatever_else_comes() -> None:
    """--max-failure-rate 0.5 --min-items 20: with nothing done, 10 failures and 10 successes
    do not trip it, 11 failures may (with 9 successes); 20 complete give room for 20 more."""
    from batchtui.engine.config import load_config
    from batchtui.engine.earlyhalt import EarlyHalt
    from batchtui.engine.policy import HaltCheck

    config = load_config({"max_failure_rate": 0.5, "min_items": 20}, environ={})
    check = HaltCheck(config).failure_rate
    assert EarlyHalt(check, 0, 0, 3, 20).headroom(1000) == 10
    assert EarlyHalt(check, 20, 0, 3, 20).headroom(1000) == 20
    assert EarlyHalt(check, 20, 0, 3, 20).headroom(5) == 5  # at most the cap
    assert EarlyHalt(check, 5, 15, 3, 20).headroom(1000) == 0  # the next failure may trip it
    never = load_config({"max_failure_rate": 1.0}, environ={})
    assert EarlyHalt(HaltCheck(never).failure_rate, 0, 50, 3, 20).headroom(1000) == 1000


def test_a_task_sent_before_the_engine_changed_its_word_does_not_undo_it() -> None:
    """The engine is near the limit (its failures hold), then far from it again: a task it sent
    while near and that starts only now must not make the worker hold each failure again."""
    from batchtui.engine.dask_worker import WorkerGates

    gates = WorkerGates()
    gates.set_strict("e", (1, True))
    gates.set_strict("e", (2, False))  # the broadcast: far again
    gates.set_strict("e", (1, True))  # a task sent at change 1 starts
    assert "e" not in gates.strict
    gates.set_strict("e", (3, True))
    assert "e" in gates.strict


def test_successes_are_judged_only_while_the_one_making_min_items_may_cross() -> None:
    """EarlyHalt.judges_successes: with a failure rate watched, before --min-items outcomes,
    while the failures by the --min-items-th outcome (those in, and at worst every outcome
    before it) may be over the limit; never once tripped, nor in a batch of fewer items."""
    from batchtui.engine.attempts import Outcome
    from batchtui.engine.config import load_config
    from batchtui.engine.earlyhalt import EarlyHalt
    from batchtui.engine.policy import HaltCheck

    check = HaltCheck(load_config({"max_failure_rate": 0.5, "min_items": 3}, environ={})).failure_rate
    assert not EarlyHalt(check, 0, 1, 3, 3).judges_successes()  # rate not said to be watched
    early = EarlyHalt(check, 0, 1, 3, 3, rate_watched=True)
    assert early.judges_successes()  # 1 failure in: the next may fail too, then a success: 2 of 3
    assert early([Outcome(1, 1, 0.0, 0.1)], list) is None
    assert not early.judges_successes()  # 1 failure of 2: the 3rd outcome makes at most 2 of 3...
    assert EarlyHalt(check, 0, 2, 3, 3, rate_watched=True).judges_successes()  # ...or, with 2 in, 2 of 3
    assert not EarlyHalt(check, 3, 0, 3, 3, rate_watched=True).judges_successes()  # a resume past it
    assert not EarlyHalt(check, 0, 1, 3, 3, rate_watched=True, items=2).judges_successes()  # never judged
    tripped = EarlyHalt(check, 0, 2, 3, 3, rate_watched=True)
    assert tripped([Outcome(2, 1, 0.0, 0.1, error=_fatal(2).error)], list) == []
    assert tripped.tripped and not tripped.judges_successes()


def test_the_engine_tells_its_workers_when_successes_hold_and_when_they_no_longer_do(tmp_path: Path) -> None:
    """Near the limit before --min-items outcomes, the word is SUCCESSES (a success may cross
    it); once they are in, FAILURES; each change told to every worker, numbered."""
    from batchtui.engine.config import load_config
    from batchtui.engine.dask_gates import FAILURES, SUCCESSES
    from batchtui.engine.earlyhalt import EarlyHalt
    from batchtui.engine.policy import HaltCheck

    ex, _early, sent = _executor(tmp_path)
    check = HaltCheck(load_config({"max_failure_rate": 0.5, "min_items": 10}, environ={})).failure_rate
    early = EarlyHalt(check, 0, 6, 3, 10, rate_watched=True)  # 6 failures of 10: any outcome crosses
    ex.early_halt = early
    ex.verdicts._judged_below = 3
    ex.verdicts.ledger.owed = lambda: 2  # type: ignore[method-assign]  # two items on the cluster
    assert ex.verdicts.strict_from() == (1, SUCCESSES)
    assert ex.verdicts.strict_from() == (1, SUCCESSES)  # unchanged: not told again
    early.dismiss(10, 9)  # past --min-items, and two failures from the limit (11 of 21)
    assert ex.verdicts.strict_from() == (2, FAILURES)
    early.dismiss(40, 9)  # far from it: nothing holds but a fatal error
    assert ex.verdicts.strict_from() == (3, 0)
    assert [args for name, args in sent.sent if name == "strict_on_worker"] == [
        (ex._key_prefix, (1, SUCCESSES)),
        (ex._key_prefix, (2, FAILURES)),
        (ex._key_prefix, (3, 0)),
    ]
