"""Failures go to the runner in groups, as successes do, unless they may halt the batch.

Each failure went to the runner on its own: a pipe message from a pool process, a turn of the
runner's loop each. 60,000 quick calls of which 60% failed took 11.2 s where 60,000 that succeed
take 1.8 s. A failure only needs to arrive at once when a policy decides on it: a fatal error,
or a failure for good while a failure rate is watched (attempts.may_halt). The halts' own tests
(test_control_holds, test_halt_*) hold that those still do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine import outbox
from batchtui.engine.attempts import Classifier, Outcome, run_items
from batchtui.engine.callables import CallableProcessor
from batchtui.engine.shell.item import Item

FUNCS = """
from batchtui.engine.errors import Fatal

def work(item):
    kind = item.data
    if kind == "item":
        raise ValueError("bad record")
    if kind == "transient":
        raise ConnectionError("peer reset")
    if kind == "fatal":
        raise Fatal("the key was revoked")
    if kind == "cost":
        return {"value": 1, "cost": 0.5}
    return kind
"""


@pytest.fixture(autouse=True)
def _no_flush_by_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Groups end only at an urgent outcome or the chunk's end: a stall of the test machine
    # longer than REPORT_EVERY_S would otherwise cut a group anywhere.
    # A flusher of the test's own: it may sleep towards a deadline an hour away (the streaming
    # tests after this one, in the same process, waited for the process's flusher in vain).
    monkeypatch.setattr(outbox, "_FLUSHER", None)
    monkeypatch.setattr(outbox, "REPORT_EVERY_S", 3600.0)
    yield
    monkeypatch.undo()


def groups(tmp_path: Path, kinds: list[str], judged_below: int = 0, attempt: int = 1) -> list[list[str]]:
    funcs = tmp_path / "funcs.py"
    funcs.write_text(FUNCS)
    processor = CallableProcessor(f"{funcs}:work")
    chunk = [Item(seq, str(seq), kind, attempt, str(tmp_path)) for seq, kind in enumerate(kinds)]
    sent: list[list[Outcome]] = []
    assert run_items(processor, chunk, Classifier(), False, None, sent.append, None, None, judged_below) == []

    def name(o: Outcome) -> str:
        return "ok" if o.error is None else kinds[o.seq]

    got = [[name(o) for o in group] for group in sent]
    assert sorted(o.seq for group in sent for o in group) == list(range(len(kinds)))
    return got


def test_failures_no_policy_decides_on_go_in_one_group(tmp_path: Path) -> None:
    kinds = ["item", "item", "transient", "ok", "item", "transient"]
    assert groups(tmp_path, kinds) == [[*kinds[:3], "ok", *kinds[4:]]]


def test_a_fatal_error_and_a_cost_go_at_once_with_what_waited(tmp_path: Path) -> None:
    assert groups(tmp_path, ["item", "fatal", "item", "cost", "ok", "item"]) == [
        ["item", "fatal"],
        ["item", "ok"],
        ["ok", "item"],
    ]


def test_with_a_failure_rate_watched_a_failure_for_good_goes_at_once(tmp_path: Path) -> None:
    # --max-attempts 3 and a failure rate: a transient failure of attempt 1 is retried (it
    # cannot count), a failure of the item's own is for good (it counts at once).
    assert groups(tmp_path, ["transient", "item", "transient", "ok"], judged_below=3) == [
        ["transient", "item"],
        ["transient", "ok"],
    ]
    # At the last attempt a transient failure is for good too.
    assert groups(tmp_path, ["transient", "ok", "transient"], judged_below=3, attempt=3) == [
        ["transient"],
        ["ok", "transient"],
    ]


def test_a_result_that_does_not_fit_fails_in_the_group_too(tmp_path: Path) -> None:
    funcs = tmp_path / "funcs.py"
    funcs.write_text("def work(item):\n    return object() if item.data == 'odd' else 1\n")
    processor = CallableProcessor(f"{funcs}:work")
    chunk = [Item(seq, str(seq), "odd" if seq % 2 else "even", 1, str(tmp_path)) for seq in range(4)]
    sent: list[list[Any]] = []
    run_items(processor, chunk, Classifier(), False, None, sent.append)
    assert [[o.error is None for o in g] for g in sent] == [[True, False, True, False]]
    sent.clear()
    run_items(processor, chunk, Classifier(), False, None, sent.append, None, None, 1)
    assert [[o.error is None for o in g] for g in sent] == [[True, False], [True, False]]
