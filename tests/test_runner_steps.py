"""The runner's policies, stepped: a fake executor, a fake clock, no threads, no sleeps.

``BatchRunner.step(now)`` runs one turn of the engine's loop at the time given. The fake
executor keeps the real hand-off gate (what the runner can take back) but starts and ends
items only when the test says so, so each test states exactly what was running when a
decision was made, and what the decision did to work handed out and not started.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine import dispatch
from batchtui.engine.attempts import Outcome
from batchtui.engine.config import BatchConfig
from batchtui.engine.control import append_command, new_command
from batchtui.engine.enqueue import create_batch
from batchtui.engine.errors import ErrorInfo
from batchtui.engine.executors import CompletionQueue, _HandoffExecutor
from batchtui.engine.handoff import QUEUED, RUNNING
from batchtui.engine.models import BatchState, LiveProgress, Memory
from batchtui.engine.processors import ProcessorSpec, python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

PROCS = Path(__file__).with_name("procs.py")
FAIL = ErrorInfo("ValueError", "item", "bad", "")
TRANSIENT = ErrorInfo("ConnectionError", "transient", "reset", "")


class FakeExecutor(_HandoffExecutor):
    """The real hand-off, with workers the test moves by hand."""

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        super().__init__(spec, config, completions)
        self.running: dict[int, tuple[Any, int, Any]] = {}  # seq -> (chunk, index, item)
        self.killed: list[int] = []
        self.taken: list[Any] = []

    def start(self) -> None:
        self.workers = self.config.workers

    def set_workers(self, n: int) -> None:
        self.workers = n

    def begin(self, n: int = 1) -> list[int]:
        """Workers begin the next ``n`` items handed out (in order); their seqs."""
        begun = []
        while len(begun) < n:
            if not self.taken:
                try:
                    chunk = self.handoff.take(timeout=0)
                except TimeoutError:
                    break
                if chunk is None:
                    break
                self.taken.append([chunk, 0])
            entry = self.taken[0]
            chunk, index = entry
            if index >= len(chunk.items):
                self.taken.pop(0)
                continue
            entry[1] += 1
            if chunk.gate.begin(index):
                item = chunk.items[index]
                self.running[item.seq] = (chunk, index, item)
                begun.append(item.seq)
        return begun

    def end(self, seq: int, error: ErrorInfo | None = None, cost: float | None = None) -> None:
        chunk, index, item = self.running.pop(seq)
        chunk.gate.end(index)
        self._report([Outcome(seq, item.attempt, time.time(), 0.01, {"seq": seq}, cost, error)])

    def queued(self) -> int:
        return self.handoff.counts()[0]

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        if seq not in self.running:
            return False
        self.killed.append(seq)
        return True

    def shutdown(self, wait: float = 5.0) -> None:
        pass


@pytest.fixture
def make_runner(tmp_path: Path) -> Iterator[Any]:
    runners: list[BatchRunner] = []

    def make(n: int | list[str] = 40, **config: Any) -> tuple[BatchRunner, FakeExecutor]:
        """A runner over ``n`` items (``item-0``...) or these lines, its executor a fake."""
        lines = n if isinstance(n, list) else [f"item-{i}" for i in range(n)]
        items = tmp_path / "items.txt"
        items.write_text("".join(f"{line}\n" for line in lines))
        cfg = BatchConfig(output_dir=str(tmp_path / "out"), fsync=False, **config)
        batch = create_batch(cfg, build_spec([str(items)]), python_spec(f"{PROCS}:noop"))
        box: list[FakeExecutor] = []

        def factory(spec: ProcessorSpec, conf: BatchConfig, completions: CompletionQueue) -> FakeExecutor:
            box.append(FakeExecutor(spec, conf, completions))
            return box[0]

        runner = BatchRunner(batch, executor_factory=factory)
        runner.open()
        runners.append(runner)
        return runner, box[0]

    yield make
    for runner in runners:
        runner.close()


def statuses(runner: BatchRunner) -> dict[int, tuple[str, int]]:
    db = sqlite3.connect(f"file:{runner.batch.items_db}?mode=ro", uri=True)
    try:
        return {s: (st, a) for s, st, a in db.execute("SELECT seq, status, attempts FROM items")}
    finally:
        db.close()


def test_failure_rate_halt_takes_back_queued_work_at_the_crossing(make_runner: Any) -> None:
    runner, ex = make_runner(40, workers=2, max_failure_rate=0.5, min_items=4, max_attempts=1)
    t = time.monotonic()
    assert runner.step(t)
    assert ex.queued() == 8  # 2 workers x 4 x a chunk of 1
    for _ in range(3):
        for seq in ex.begin(2):
            ex.end(seq, FAIL)
        runner.step(t)
        if runner.halt_reason:
            break
    # The 4th failure crossed the limit: the two queued behind it never start.
    assert runner.halt_reason and "after 4 items" in runner.halt_reason
    assert ex.queued() == 0 and ex.begin(5) == []
    while runner.step(t):
        pass
    result = runner.finish()
    assert result.state == BatchState.HALTED
    st = statuses(runner)
    assert sum(1 for s, _a in st.values() if s == "failed") == 4
    assert all(a == 0 for s, a in st.values() if s == "pending")


def test_pause_returns_queued_items_and_hands_out_nothing_while_paused(make_runner: Any) -> None:
    runner, ex = make_runner(40, workers=2)
    t = time.monotonic()
    runner.step(t)
    running = ex.begin(2)
    runner.command(new_command("pause"))
    runner.step(t)
    assert runner.state == BatchState.PAUSED
    assert ex.queued() == 0 and set(runner._inflight) == set(running)
    for seq in running:
        ex.end(seq)
    for k in range(1, 20):  # an hour of turns: nothing goes out
        runner.step(t + k * 200)
        assert ex.queued() == 0 and not runner._inflight
    runner.command(new_command("resume"))
    runner.step(t + 5000)
    assert ex.queued() == 8
    # The items given back run next, once each, with their first attempt.
    assert sorted(s for s in ex.begin(8)) == list(range(2, 10))


def test_the_pause_answer_counts_the_items_running_not_those_ended_and_not_yet_taken_in(make_runner: Any) -> None:
    """QA: a pause sent to an engine that was SIGSTOPped said "4 running items finish" with 2
    workers. Its items had ended meanwhile (their outcomes waiting for the runner), the workers
    had begun the next two, and the answer counted every item handed out and not yet taken in.
    It counts what the executor runs now, and says what it counts."""
    runner, ex = make_runner(40, workers=2)
    t = time.monotonic()
    runner.step(t)
    for seq in ex.begin(2):
        ex.end(seq)  # ended, the outcome not yet taken in (the engine was stopped)
    running = ex.begin(2)
    assert len(running) == 2 and len(runner._inflight) >= 4
    cmd = new_command("pause")
    runner.command(cmd)
    runner.step(t)
    assert runner.state == BatchState.PAUSED
    live = LiveProgress.model_validate_json((runner.batch.path / "live_progress.json").read_bytes())
    answer = live.control_results[cmd.id]
    assert answer == "paused; 4 queued items back to pending, 2 items already running finish", answer


def test_stop_kills_running_items_only_after_the_grace(make_runner: Any) -> None:
    runner, ex = make_runner(10, workers=1, grace=30.0)
    t = time.monotonic()
    runner.step(t)
    (seq,) = ex.begin(1)
    runner.request_stop("test")
    runner.step(t)
    assert runner.state == BatchState.STOPPING and ex.queued() == 0
    runner.step(t + 29.9)
    assert ex.killed == []
    runner.step(t + 30.1)
    assert ex.killed == [seq]
    ex.end(seq, ErrorInfo("signal 9", "item", "killed", ""))
    runner.step(t + 30.2)  # takes the outcome in
    assert not runner.step(t + 30.3)
    result = runner.finish()
    assert result.state == BatchState.STOPPED
    st = statuses(runner)
    assert st[seq] == ("pending", 0) and all(v == ("pending", 0) for v in st.values())


@pytest.mark.parametrize("op", ["stop", "pause"])
def test_a_command_is_acknowledged_only_once_nothing_handed_out_can_start(make_runner: Any, op: str) -> None:
    """The acknowledgement says "nothing more starts": it reaches live_progress.json only after
    the work handed out and not started was taken back. (A stop used to be acknowledged in the
    turn's first write, before the stop took the work back: on dask, with the workers' gates a
    round trip away, two items began after a `stop` had returned.)"""
    runner, ex = make_runner(10, workers=1)
    t = time.monotonic()
    runner.step(t)
    assert ex.queued() > 0
    cmd = new_command(op)  # type: ignore[arg-type]
    acked_when_taken_back: list[bool] = []
    take_back = ex.cancel_all

    def cancel_all() -> list[int]:
        live = LiveProgress.model_validate_json((runner.batch.path / "live_progress.json").read_bytes())
        acked_when_taken_back.append(cmd.id in live.acked)
        return take_back()

    ex.cancel_all = cancel_all  # type: ignore[method-assign]
    # A live write is due (the last one was a while ago). The command's answer must not go out
    # in the write that follows the commit of how far control.jsonl is read, before the stop has
    # taken the work back: that commit is waited for within the command's handling, and it
    # wrote the live files when due (the dask stop test caught 2 items begun after a `stop`
    # returned, about one CI run in twenty).
    runner.publisher._live_stamp = float("-inf")
    append_command(runner.batch, cmd)  # through control.jsonl, as the CLI sends it
    runner.step(t)
    assert acked_when_taken_back == [False]
    assert ex.queued() == 0
    live = LiveProgress.model_validate_json((runner.batch.path / "live_progress.json").read_bytes())
    assert cmd.id in live.acked


def test_retry_waits_out_its_backoff_on_the_clock_given(make_runner: Any) -> None:
    runner, ex = make_runner(1, workers=1, backoff=10.0, backoff_max=10.0, max_attempts=3)
    t = time.monotonic()
    runner.step(t)
    (seq,) = ex.begin(1)
    ex.end(seq, TRANSIENT)
    runner.step(t)
    (retry,) = runner.dispatcher.retries
    assert retry.item.attempt == 2 and retry.ready > t
    runner.step(retry.ready - 0.01)
    assert ex.queued() == 0
    due = retry.ready + retry.late  # it may start a little late, with others due by then
    assert retry.late == dispatch.RETRY_GATHER_S
    runner.step(due - 0.001)
    assert ex.queued() == 0
    runner.step(due)
    assert ex.queued() == 1 and ex.begin(1) == [seq]
    ex.end(seq)
    runner.step(due)
    assert not runner.step(due)  # nothing left
    assert runner.finish().state == BatchState.FINISHED
    assert statuses(runner)[seq] == ("complete", 2)


def test_rate_limit_hands_out_on_the_clock_given(make_runner: Any) -> None:
    runner, ex = make_runner(20, workers=4, rate=2.0)
    t = time.monotonic()
    runner.step(t)
    first = ex.queued()
    assert first == 1
    runner.step(t + 0.1)
    assert ex.queued() == first
    runner.step(t + 0.6)
    assert ex.queued() == first + 1


def test_skip_of_queued_and_running_items(make_runner: Any) -> None:
    runner, ex = make_runner(10, workers=1)
    t = time.monotonic()
    runner.step(t)
    (running,) = ex.begin(1)
    assert ex.handoff.state(1) == QUEUED and ex.handoff.state(running) == RUNNING
    runner.command(new_command("skip", seqs=[running, 1, 2, 9]))
    runner.step(t)
    assert ex.killed == [running]
    assert 1 not in runner._inflight and 2 not in runner._inflight
    ex.end(running, ErrorInfo("signal 9", "item", "killed", ""))
    runner.step(t)
    runner.step(t + 1)  # and commits
    assert ex.begin(10) == [3, 4, 5, 6]  # the window of 4, refilled in order past the skipped
    runner.finish()  # commits what is staged
    st = statuses(runner)
    assert st[1] == st[2] == st[9] == ("skipped", 0)
    assert st[running][0] == "skipped"


def test_budget_holds_items_to_the_cap(make_runner: Any) -> None:
    runner, ex = make_runner(20, workers=4, max_cost=3.0)
    t = time.monotonic()
    runner.step(t)
    assert ex.queued() == 1  # no cost known yet: one probe
    (seq,) = ex.begin(1)
    ex.end(seq, cost=1.0)
    runner.step(t)  # takes the outcome in
    runner.step(t)
    # 1.0 spent, at most 1.0 an item: one more item fits... and then another.
    assert ex.queued() == 2
    for s in ex.begin(2):
        ex.end(s, cost=1.0)
    runner.step(t)
    while runner.step(t):
        pass
    result = runner.finish()
    assert result.state == BatchState.HALTED and "max-cost" in (result.halt_reason or "")
    assert runner.cost_spent <= 3.0


class FakeMemory:
    """A memory monitor whose reading the test sets."""

    def __init__(self) -> None:
        self.mb = 10.0
        self.peak_mb = 10.0

    def sample(self, force: bool = False) -> Memory:
        return Memory(rss_mb=self.mb, peak_rss_mb=self.peak_mb, children_rss_mb=0.0)


def test_memory_hold_takes_back_queued_work_and_goes_on_when_under(make_runner: Any) -> None:
    runner, ex = make_runner(40, workers=2, memory_limit_mb=200)
    memory = runner.memory = FakeMemory()  # type: ignore[assignment]
    t = time.monotonic()
    runner.step(t)
    running = ex.begin(2)
    assert ex.queued() == 6
    memory.mb = 300.0  # over the limit (its floor is 128)
    runner.step(t + 1)
    assert ex.queued() == 0 and set(runner._inflight) == set(running)
    assert any("over --memory-limit-mb" in w for w in runner.warnings)
    for seq in running:
        ex.end(seq)
    for k in range(2, 10):
        runner.step(t + k)
        assert ex.queued() == 0 and ex.begin(1) == []
    memory.mb = 50.0
    runner.step(t + 20)
    assert ex.queued() == 8
    assert ex.begin(8) == list(range(2, 10))  # the items held back run next, in order


def test_a_late_outcome_of_an_earlier_attempt_is_not_the_next_attempts(make_runner: Any) -> None:
    """A thread item timed out (failed by the watchdog, retried) and later ended on its own:
    its outcome must not settle the retry that is out now."""
    runner, ex = make_runner(1, workers=1, backoff=0.0, max_attempts=3)
    t = time.monotonic()
    runner.step(t)
    (seq,) = ex.begin(1)
    chunk, index, _item = ex.running.pop(seq)  # attempt 1 runs on, out of the executor's hands
    chunk.gate.end(index)
    ex.completions.put([Outcome(seq, 1, time.time(), 5.0, error=TRANSIENT)])  # the watchdog's verdict
    runner.step(t)
    runner.step(t)
    assert ex.begin(1) == [seq] and ex.running[seq][2].attempt == 2
    ex.completions.put([Outcome(seq, 1, time.time(), 9.0, {"late": True})])  # attempt 1 ends after all
    runner.step(t)
    assert seq in runner._inflight  # attempt 2 is still out
    ex.end(seq)
    runner.step(t)
    assert not runner.step(t)
    runner.finish()
    assert statuses(runner)[seq] == ("complete", 2)


def _agrees(live: LiveProgress) -> None:
    """One snapshot's failed count and its error breakdown describe the same commits."""
    failed = live.counts.failed
    assert sum(live.errors_by_type.values()) == failed, (failed, live.errors_by_type)
    assert live.error_groups_total is not None and live.error_groups_total >= len(live.error_groups)
    if live.error_groups_total == len(live.error_groups):
        assert sum(g.count for g in live.error_groups) == failed, (failed, live.error_groups)


def test_every_snapshot_counts_each_failure_in_its_error_breakdown(make_runner: Any) -> None:
    # The breakdown was read from the store at most once a second: a snapshot said failed 456
    # beside {'exit 1': 435}. Each turn below ends within that second of the one before.
    words = ["disk full", "denied", "gone", "refused", "torn", "late", "lost", "busy", "bent", "odd", "void", "sour"]
    runner, ex = make_runner(60, workers=3, max_attempts=1)
    t = time.monotonic()
    runner.step(t)
    for turn in range(1, 9):
        for seq in ex.begin(4):
            ex.end(seq, ErrorInfo("exit 1" if seq % 2 else "exit 2", "item", f"no: {words[seq % 12]}", ""))
        runner.step(t + turn)
        runner._commit()  # every failure so far committed and settled
        live = runner.live()
        assert live.counts.failed == 4 * turn
        _agrees(live)
    # The groups and their figures are what the store has (ids, examples, first and last seen).
    assert runner.store is not None
    assert live.error_groups_total == 12 and live.error_groups == runner.store.error_groups(10)
    assert live.errors_by_type == runner.store.errors_by("error_type")
    # A retry and a skip change failed items in the store itself: the breakdown follows.
    runner.command(new_command("retry", filter={"error_type": "exit 2"}))
    runner.step(t + 10)
    live = runner.live()
    assert live.counts.failed == 16 and live.errors_by_type == {"exit 1": 16}
    _agrees(live)
    runner.command(new_command("skip", seqs=[1, 3]))
    runner.step(t + 11)
    live = runner.live()
    assert live.counts.failed == 14 and live.error_groups == runner.store.error_groups(10)
    _agrees(live)
    assert runner.finish().counts.failed == 14


def test_the_window_holds_four_chunks_a_worker_of_the_chunk_size_given(make_runner: Any) -> None:
    """--chunk-size 10 on 2 workers: 4 x 2 x 10 items handed out, as --help gives the window.
    The adaptive chunk (1 before any item ended) was used for the window instead: 8 items, less
    than one chunk, and the callable got one short list at a time."""
    runner, ex = make_runner(200, workers=2, chunk_size=10)
    runner.step(time.monotonic())
    assert ex.queued() == 80


def test_a_line_of_control_jsonl_that_is_no_command_is_said_not_dropped_in_silence(make_runner: Any) -> None:
    from batchtui.engine.control import append_command

    runner, _ex = make_runner(10, workers=1)
    t = time.monotonic()
    runner.step(t)
    with (runner.batch.path / "control.jsonl").open("ab") as fh:
        fh.write(b"\x00\xffgarbage\n")
        fh.write(b'{"op": "no_such_op", "id": "x1", "ts": "2026-01-01T00:00:00"}\n')
    append_command(runner.batch, new_command("pause"))
    runner.step(t + 1)
    runner.step(t + 2)
    assert runner.state == BatchState.PAUSED  # the good line after them still applies
    warned = [w for w in runner.live().warnings if "control.jsonl" in w]
    assert len(warned) == 1 and "2 lines that are no command ignored" in warned[0], runner.live().warnings


def test_a_failure_rate_crossed_inside_a_group_of_outcomes_halts_at_the_crossing(make_runner: Any) -> None:
    """Outcomes come in groups (a worker's outbox, a pool part). Under --max-failure-rate the
    successes of a group are recorded together, not one at a time (a results.jsonl write each:
    100k quick calls took 1.5x as long), but the rate is still judged at the very outcome
    that crosses it: here the success that makes the outcomes --min-items (6 failures of 10),
    though the ten successes after it bring the rate back under the limit."""
    runner, ex = make_runner(40, workers=20, max_failure_rate=0.5, min_items=10, max_attempts=1, window=80)
    t = time.monotonic()
    assert runner.step(t)
    begun = ex.begin(20)
    assert len(begun) == 20
    group = []
    for n, seq in enumerate(begun):
        chunk, index, item = ex.running.pop(seq)
        chunk.gate.end(index)
        group.append(Outcome(seq, item.attempt, time.time(), 0.01, None, None, FAIL if n < 6 else None))
    ex.completions.put(group)  # one group, as one report: no early halt in between
    runner.step(t)
    assert runner.halt_reason == "failure rate 60% over --max-failure-rate 50% after 10 items"
    while runner.step(t):
        pass
    runner.finish()
    st = statuses(runner)
    assert sum(1 for s, _a in st.values() if s == "failed") == 6
    assert sum(1 for s, _a in st.values() if s == "complete") == 14  # all of the group recorded


def test_room_for_less_than_a_chunk_waits_for_a_whole_one(make_runner: Any) -> None:
    """--chunk-size 3 on 2 workers: the window holds 24 items. One item ending left room for
    one, and a chunk of one went out; it freed one place when it ended, and so on: a third of a
    run's chunks were of one item. With every worker two chunks ahead, the runner waits until a
    whole chunk fits."""
    runner, ex = make_runner(200, workers=2, chunk_size=3)
    sizes: list[int] = []
    submit = ex.submit

    def counted(chunk: Any) -> None:
        sizes.append(len(chunk))
        submit(chunk)

    ex.submit = counted  # type: ignore[method-assign]
    t = time.monotonic()
    runner.step(t)
    assert sizes == [3] * 8 and ex.queued() == 21 + 3
    first = ex.begin(3)
    ex.end(first[0])
    runner.step(t + 0.01)  # takes the outcome in (after handing out)
    runner.step(t + 0.011)
    assert sizes == [3] * 8, "a chunk of one went out for one free place"
    ex.end(first[1])
    ex.end(first[2])
    runner.step(t + 0.02)
    runner.step(t + 0.021)
    assert sizes == [3] * 9, str(sizes)
    assert ex.queued() == 24


def test_a_window_smaller_than_a_chunk_still_hands_out(make_runner: Any) -> None:
    """The wait for a whole chunk holds only while the workers have two chunks each: --window 2
    with chunks of 3 (room for 2 at most, never a whole chunk) still runs every item, and the
    queue's last item goes out alone."""
    runner, ex = make_runner(7, workers=2, chunk_size=3, window=2)
    t = time.monotonic()
    runner.step(t)
    assert ex.queued() == 2
    done = 0
    while done < 7:
        begun = ex.begin(3)
        assert begun, f"nothing handed out after {done} items"
        for seq in begun:
            ex.end(seq)
            done += 1
        t += 0.01
        runner.step(t)
        runner.step(t + 0.001)
    assert runner.finish().counts.complete == 7


def test_the_loop_waits_between_turns_only_while_enough_work_is_handed_out(make_runner: Any) -> None:
    """Each turn of the loop costs engine CPU on the cores the items run on: while the work
    handed out lasts, a turn waits a quarter of it (at most 20 ms) after the one before, and
    takes in several chunks' outcomes at once. Quick items, a pause or no duration known yet:
    no wait."""
    runner, _ = make_runner(200, workers=2, chunk_size=3)
    t = time.monotonic()
    runner.step(t)
    assert len(runner._inflight) == 24
    assert runner._coalesce_s() == 0.0  # no item has ended: no duration known
    runner.dispatcher.note_duration(0.005)
    assert runner._coalesce_s() == pytest.approx(24 * 0.005 / 2 / 4)  # 15 ms
    runner.dispatcher.note_duration(0.5)
    assert runner._coalesce_s() == pytest.approx(0.02)  # at most 20 ms
    runner.dispatcher.note_duration(0.000_01)
    assert runner._coalesce_s() == 0.0  # 24 no-op calls: nothing worth waiting for
    runner.dispatcher.note_duration(0.5)
    runner.paused = True
    assert runner._coalesce_s() == 0.0


def test_the_loop_turns_at_most_once_per_wait(make_runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real loop (``_run_loop``) waits out the rest of the turn's wait before the next turn,
    on the stop event (a Ctrl-C ends the wait), and not past what is due next."""
    runner, _ = make_runner(20, workers=2)
    turns: list[float] = []
    waits: list[float] = []

    def step(now: float, wait: float | None = 0.0) -> bool:
        turns.append(now)
        return len(turns) < 4

    monkeypatch.setattr(runner, "step", step)
    monkeypatch.setattr(runner, "_coalesce_s", lambda: 0.02)
    monkeypatch.setattr(runner, "_next_wake", lambda now: 0.015)
    monkeypatch.setattr(runner._stop, "wait", lambda seconds: waits.append(seconds) or False)
    runner._run_loop()
    assert len(turns) == 4
    assert len(waits) == 3 and all(0 < w <= 0.015 for w in waits), waits


def test_the_pause_answer_says_one_item_in_the_singular(make_runner: Any) -> None:
    """ "1 items already running finish" was the answer with one item running."""
    runner, ex = make_runner(20, workers=1)
    t = time.monotonic()
    runner.step(t)
    assert len(ex.begin(1)) == 1
    cmd = new_command("pause")
    runner.command(cmd)
    runner.step(t)
    live = LiveProgress.model_validate_json((runner.batch.path / "live_progress.json").read_bytes())
    answer = live.control_results[cmd.id]
    assert answer == "paused; 3 queued items back to pending, 1 item already running finishes", answer


def test_the_live_view_lists_the_latest_failures(make_runner: Any) -> None:
    runner, ex = make_runner(3, workers=3, max_attempts=1)
    t = time.monotonic()
    runner.step(t)
    first, second, third = ex.begin(3)
    ex.end(first, ErrorInfo("ValueError", "item", "bad one", ""))
    ex.end(second)
    ex.end(third, ErrorInfo("KeyError", "item", "'x'", ""))
    runner.step(t)
    recent = runner.live().recent_errors
    assert [(r.seq, r.key, r.error_type, r.category, r.message, r.attempt) for r in recent] == [
        (first, f"item-{first}", "ValueError", "item", "bad one", 1),
        (third, f"item-{third}", "KeyError", "item", "'x'", 1),
    ]
    assert all(r.at.endswith("+00:00") for r in recent)


def test_a_stop_that_left_nothing_undone_ends_the_batch_finished(make_runner: Any) -> None:
    """A stop while the last items ran, which all ended within the grace: nothing is left to
    resume, so the batch is finished (exit 0), not "stopped (resumable)" with exit 130 and a
    `resume` line that would have nothing to do."""
    runner, ex = make_runner(3, workers=3, grace=30.0)
    t = time.monotonic()
    runner.step(t)
    begun = ex.begin(3)
    assert len(begun) == 3
    runner.request_stop("test")
    runner.step(t)
    assert runner.state == BatchState.STOPPING
    for seq in begun:
        ex.end(seq)
    runner.step(t + 0.1)  # takes the outcomes in
    assert not runner.step(t + 0.2)
    result = runner.finish()
    assert result.state == BatchState.FINISHED and result.exit_code == 0
    assert result.counts.complete == 3 and ex.killed == []


def test_a_stop_while_the_source_was_still_being_read_stays_stopped(make_runner: Any) -> None:
    """Its counts show nothing pending, but the rest of the source is not in the store yet:
    stopped, so that a resume reads it."""
    runner, ex = make_runner(2, workers=2, grace=30.0)
    assert runner.store is not None
    runner.store.set_meta("enqueue_done", 0)  # as an enqueue cut short leaves it
    t = time.monotonic()
    runner.step(t)
    begun = ex.begin(2)
    runner.request_stop("test")
    runner.step(t)
    for seq in begun:
        ex.end(seq)
    runner.step(t + 0.1)
    assert not runner.step(t + 0.2)
    result = runner.finish()
    assert result.counts.pending == 0 and result.counts.complete == 2
    assert result.state == BatchState.STOPPED and result.exit_code == 130


def test_a_stop_while_a_retry_waits_out_its_backoff_stays_stopped(make_runner: Any) -> None:
    """A retry waiting for its backoff is work left: the stop puts it back to pending, and the
    batch is stopped (a resume runs it), not finished."""
    runner, ex = make_runner(2, workers=2, backoff=10.0, backoff_max=10.0, max_attempts=3)
    t = time.monotonic()
    runner.step(t)
    first, second = ex.begin(2)
    ex.end(first, TRANSIENT)
    ex.end(second)
    runner.step(t)
    assert len(runner.dispatcher.retries) == 1
    runner.request_stop("test")
    runner.step(t + 0.1)
    assert not runner.step(t + 0.2)
    result = runner.finish()
    assert result.counts.pending == 1 and result.counts.complete == 1
    assert result.state == BatchState.STOPPED and result.exit_code == 130


def test_a_signal_in_the_loops_own_wait_takes_no_lock_and_stops_the_run_at_the_next_turn(make_runner: Any) -> None:
    """An engine SIGTERM'd under load hung for good: the handler ran inside the loop's
    ``_stop.wait`` just as that took the Event's lock back, and its ``_stop.set()`` waited for
    the lock its own thread held. Here the locks are held while the handler runs (on another
    thread, which the bug blocks instead of hanging the test); a second SIGINT kills at once."""
    runner, ex = make_runner(10, workers=1, grace=30.0)
    runner._signals = []  # as run() makes it before it puts the handler in place
    t = time.monotonic()
    runner.step(t)
    (seq,) = ex.begin(1)
    handled = threading.Event()

    def handler() -> None:
        runner._on_signal(signal.SIGINT, None)
        handled.set()

    with runner._stop._cond, runner._wake._cond:  # the loop's thread inside its waits
        thread = threading.Thread(target=handler)
        thread.start()
        assert handled.wait(10), "the handler waited for a lock the loop's thread held"
    thread.join()
    assert runner.completions.get_nowait() == []  # the loop's wait for outcomes is woken
    assert runner.state == BatchState.RUNNING  # nothing decided in the handler
    runner.step(t)
    assert runner.state == BatchState.STOPPING and runner._stop_reason == "SIGINT received"
    assert ex.killed == []  # graceful: the running item gets its grace
    runner._on_signal(signal.SIGINT, None)
    runner.step(t + 1)
    assert runner._stop_reason == "SIGINT again: stopping now" and ex.killed == [seq]


def test_a_success_that_comes_after_the_stops_kill_is_complete_not_run_again(make_runner: Any) -> None:
    """A Python call in a thread cannot be cut short: killed at the end of the grace, it went on,
    returned its result, and the stop threw it away (back to pending): the resume ran it, and
    paid for it, again."""
    runner, ex = make_runner(10, workers=2, grace=1.0)
    t = time.monotonic()
    runner.step(t)
    done, cut = ex.begin(2)
    runner.request_stop("test")
    runner.step(t)
    runner.step(t + 1.1)
    assert sorted(ex.killed) == sorted([done, cut])
    ex.end(done)  # returned anyway
    ex.end(cut, ErrorInfo("ItemKilled", "item", "killed", ""))
    runner.step(t + 1.2)
    while runner.step(t + 1.3):
        pass
    assert runner.finish().state == BatchState.STOPPED
    st = statuses(runner)
    assert st[done] == ("complete", 1) and st[cut] == ("pending", 0)
    lines = (runner.batch.path / "results.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [done]


def test_a_command_killed_by_the_signal_that_stops_the_run_goes_back_to_pending(make_runner: Any) -> None:
    """A Ctrl-C (a closed terminal: SIGHUP) reaches the whole process group, and a command
    started that very moment, before its setsid, with it: it was stored failed for good
    ("signal 2", an attempt spent) and the run exited 1. One killed by another signal failed."""
    runner, ex = make_runner(10, workers=2, grace=30.0)
    runner._signals = []  # as run() makes it before it puts the handler in place
    t = time.monotonic()
    runner.step(t)
    hit, other = ex.begin(2)
    runner._on_signal(signal.SIGINT, None)
    ex.end(hit, ErrorInfo("signal 2", "item", "killed by signal 2", ""))
    ex.end(other, ErrorInfo("signal 9", "item", "killed by signal 9", ""))
    while runner.step(t):
        pass
    assert runner.finish().state == BatchState.STOPPED
    st = statuses(runner)
    assert st[hit] == ("pending", 0) and st[other] == ("failed", 1)
