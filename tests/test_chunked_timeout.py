"""A chunked callable (``--chunk-size N``: one call on a list of items, a bulk insert) under a
``--timeout``: its chunks stay chunks on every executor, and the timeout is the call's.

Each item of a chunk is recorded with its share of the call's time, so the adaptive timeout's
median is of shares: scaled back by the items of the call (:meth:`TimeoutPolicy.for_call`), or
every chunk of more items than the percentage was killed once the median came into force."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from batchtui.engine.adaptive import AdaptiveLimit, TimeoutPolicy

from .conftest import only_batch, read_jsonl

#: Each call sleeps 10 ms an item (a chunk of 20: 0.2 s) and gives every item its chunk's size;
#: a chunk holding the item "hang" sleeps 30 s.
BULK = """\
import time

def insert(items):
    time.sleep(30 if any(i.data == "hang" for i in items) else 0.01 * len(items))
    return [len(items)] * len(items)
"""


def _batch(tmp_path: Path, invoke_cli, lines: list[str], *args: str) -> Path:  # type: ignore[no-untyped-def]
    module = tmp_path / "bulk.py"
    module.write_text(BULK)
    source = tmp_path / "items.txt"
    source.write_text("".join(f"{line}\n" for line in lines))
    out = tmp_path / "out"
    proc = invoke_cli(["run", str(source), "--call", f"{module}:insert", "--headless", "-o", str(out), *args])
    assert "Traceback" not in proc.stderr, proc.stderr
    return only_batch(out)


def _failures(batch: Path) -> dict[int, str]:
    with closing(sqlite3.connect(batch / "items.db")) as db:
        return dict(db.execute("SELECT seq, error_type FROM items WHERE status != 'complete'").fetchall())


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_chunked_callable_gets_its_chunks_under_a_timeout(tmp_path: Path, invoke_cli, executor: str) -> None:  # type: ignore[no-untyped-def]
    # On the process executor a --timeout made every chunk one item: a bulk insert of 20 was
    # called 20 times with a list of one, without a word.
    batch = _batch(
        tmp_path, invoke_cli, [f"i{n}" for n in range(40)], "--chunk-size", "20", "--timeout", "60",
        "--executor", executor,
    )  # fmt: skip
    assert _failures(batch) == {}
    assert sorted(line["result"] for line in read_jsonl(batch / "results.jsonl")) == [20] * 40


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_the_adaptive_timeout_of_a_chunked_call_is_the_calls(tmp_path: Path, invoke_cli, executor: str) -> None:  # type: ignore[no-untyped-def]
    # Calls of 0.2 s, items recorded at 0.01 s each: at 1000% the limit was 0.1 s a call, and
    # every chunk after the first two was killed as a timeout. The call's limit is 2 s.
    batch = _batch(
        tmp_path, invoke_cli, [f"i{n}" for n in range(200)], "--chunk-size", "20", "--workers", "2",
        "--timeout", "1000%,after=2,min=0.01", "--max-attempts", "1", "--executor", executor,
    )  # fmt: skip
    assert _failures(batch) == {}
    assert sorted(line["result"] for line in read_jsonl(batch / "results.jsonl")) == [20] * 200


def test_a_hung_chunked_call_is_still_killed_by_the_adaptive_timeout(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    lines = [f"i{n}" for n in range(200)] + ["hang"] + [f"j{n}" for n in range(19)]
    t0 = time.monotonic()
    batch = _batch(
        tmp_path, invoke_cli, lines, "--chunk-size", "20", "--workers", "2",
        "--timeout", "1000%,after=2,min=0.01", "--max-attempts", "1",
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert _failures(batch) == dict.fromkeys(range(200, 220), "timeout")  # the hung call's chunk
    assert elapsed < 20, elapsed  # not the 30 s the call would sleep
    assert len(read_jsonl(batch / "results.jsonl")) == 200


def test_the_limit_of_a_call_scales_with_its_items_up_to_the_absolute_one() -> None:
    policy = TimeoutPolicy(None, AdaptiveLimit(percent=300, floor_s=0.5, after=2))
    for _ in range(10):
        policy.learn(0.1)  # shares of calls of 10 items of 1 s
    limit = policy.limit(0.0)
    assert limit == 0.5  # the floor: 300% of 0.1 s
    assert policy.for_call(limit, 1) == 0.5
    assert policy.for_call(limit, 10) == pytest.approx(3.0, rel=0.01)  # 300% of the call's 1 s
    assert policy.for_call(limit, 2) == pytest.approx(0.6, rel=0.01)  # over the floor now
    capped = TimeoutPolicy(2.0, AdaptiveLimit(percent=300, floor_s=0.5, after=2))
    capped.seed([0.1] * 10)
    assert capped.for_call(capped.limit(0.0) or 0, 10) == 2.0  # max= is the call's own limit
    learning = TimeoutPolicy(2.0, AdaptiveLimit(percent=300, after=50))
    assert learning.for_call(2.0, 10) == 2.0  # no median in force yet: the absolute limit alone
