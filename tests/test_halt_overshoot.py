"""A halt overshoots by at most the items already running (DESIGN section 6), on every local
executor and for every halt an outcome decides: a fatal error and the failure rate.

Each item logs its start in a side-effect file, so what ran is read from what happened. With w
workers, when the outcome that halts the batch is decided at most w - 1 other items run: a
fatal error lets at most w items run in all, the failure rate's N-th finished item at most
N - 1 + w. Before the fixes a fatal error with one worker let 2 or 3 items run (thread) and a
pool worker process went on to its next item while its failure was on its way to the engine
(11 items with one worker, 15 with four).
"""

from __future__ import annotations

import queue
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .conftest import only_batch


def starts(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def source(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"{i}\n" for i in range(n)))
    return path


def crossing_run(
    invoke_cli: Any, tmp_path: Path, out_dir: Path, executor: str, workers: int, output: list[str] | None = None
) -> list[int]:
    """300 items, 0-7 failing and the rest succeeding, under a failure rate over 50% from 10
    items: the run halts at its 10th outcome. The seqs that started."""
    policy = ("--max-failure-rate", "0.5", "--min-items", "10")
    script = "if [ {seq} -lt 8 ]; then exit 3; fi"
    ran = halting_run(invoke_cli, tmp_path, executor, workers, *policy, script=script, output=output)
    assert "after 10 items" in only_manifest(out_dir)["halt_reason"]
    return ran


def only_manifest(out_dir: Path) -> dict[str, Any]:
    import json

    manifest: dict[str, Any] = json.loads((only_batch(out_dir) / "manifest.json").read_text())
    return manifest


def store_count(batch: Path, status: str) -> int:
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM items WHERE status = ?", (status,)).fetchone()[0])
    finally:
        db.close()


def halting_run(
    invoke_cli: Any,
    tmp_path: Path,
    executor: str,
    workers: int,
    *policy: str,
    script: str = "exit 3",
    output: list[str] | None = None,
) -> list[int]:
    """300 items of ``script`` under ``policy``, each logging its start: the seqs that started
    (and the run's stderr appended to ``output``, for an assertion to show)."""
    log = tmp_path / "runs.log"
    proc = invoke_cli(
        [
            "run",
            str(source(tmp_path, 300)),
            "--cmd",
            f"echo {{seq}} >> {log}; {script}",
            "--executor",
            executor,
            *policy,
            "-j",
            str(workers),
            "--headless",
        ],
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    if output is not None:
        output.append(proc.stderr)
    return starts(log)


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_failure_rate_halt_starts_nothing_after_the_crossing_outcome(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    executor: str,
    workers: int,
) -> None:
    ran = halting_run(invoke_cli, tmp_path, executor, workers, "--max-failure-rate", "0.5", "--min-items", "10")
    assert 10 <= len(ran) <= 9 + workers, (executor, workers, ran)
    assert len(set(ran)) == len(ran)
    assert store_count(only_batch(out_dir), "failed") == len(ran)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_fatal_halt_starts_nothing_after_the_fatal_outcome(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    executor: str,
    workers: int,
) -> None:
    ran = halting_run(invoke_cli, tmp_path, executor, workers, "--fatal-exit-codes", "3")
    assert 1 <= len(ran) <= workers, (executor, workers, ran)
    # A fatal item goes back to pending: nothing was recorded as run to an end.
    batch = only_batch(out_dir)
    assert store_count(batch, "failed") == 0
    assert store_count(batch, "pending") == 300


def test_a_trip_holds_back_work_handed_out_until_the_runner_takes_it_in(tmp_path: Path) -> None:
    """The runner, which has not seen the outcomes of a trip yet, fills the room the earlier
    outcomes left: that work must not reach the workers (it went out, after the trip had
    taken back what was queued, and started: 25 items ran with 8 workers where 17 may)."""
    from batchtui.engine.attempts import Outcome
    from batchtui.engine.config import BatchConfig
    from batchtui.engine.earlyhalt import EarlyHalt
    from batchtui.engine.errors import classify
    from batchtui.engine.executors import ThreadExecutor
    from batchtui.engine.processors import Item, shell_spec

    completions: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ex = ThreadExecutor(shell_spec("true"), BatchConfig(workers=1), completions)
    early = EarlyHalt(lambda complete, failed: "over" if failed >= 1 else None, 0, 0, 3)
    ex.early_halt = early
    failure = Outcome(0, 1, 0.0, 0.1, error=classify(ValueError("bad")))
    ex._report([failure])  # a worker's failure: the trip
    assert early.tripped and early.tripped_by is failure
    assert completions.get_nowait() == [failure]
    ex.submit([Item(1, "k1", "v1", 1, str(tmp_path))])  # the runner's refill, after the trip
    assert ex.handoff.counts() == (0, 0)  # nothing handed to the workers
    returned = completions.get_nowait()
    assert [(o.seq, o.returned) for o in returned] == [(1, True)]
    early.dismiss(0, 0)  # the runner took the trip in and did not halt: work goes out again
    ex.submit([Item(1, "k1", "v1", 1, str(tmp_path))])
    assert ex.handoff.counts() == (1, 0)
    ex.handoff.cancel_all()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_failure_rate_crossed_by_a_success_starts_nothing_after_it(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    executor: str,
    workers: int,
) -> None:
    """The rate is judged from --min-items outcomes on, and the outcome that makes them 10
    crosses the limit whatever it is. Items 0-7 fail and the rest succeed: any 10 outcomes a
    run of one or two workers has taken (items begin in order, so at most one of items 0-10 is
    still running) hold 7 or more failures, so the 10th outcome crosses 50%; with one worker it
    is item 9's success. Before, a success waited in its worker's outbox (up to
    REPORT_EVERY_S) while the worker ran on, and a pool worker never waited for a verdict on
    one: 21 items ran with one thread worker, where 10 may."""
    ran = crossing_run(invoke_cli, tmp_path, out_dir, executor, workers)
    assert 10 <= len(ran) <= 10 - 1 + workers, ran
    assert len(set(ran)) == len(ran)


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_crossing_success_stops_the_rest_of_its_chunk(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    executor: str,
) -> None:
    """As above with one worker and a quick callable, whose items go out many to a chunk: the
    worker's next items are in its hands, not the runner's, so only the crossing success's verdict,
    given before the next item begins, can stop them (without it, the success waited in the
    worker's outbox while the chunk ran on)."""
    log = tmp_path / "runs.log"
    (tmp_path / "work.py").write_text(
        "def work(item):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'{item.seq}\\n')\n"
        "    if item.seq < 8:\n"
        "        raise ValueError('bad')\n"
    )
    proc = invoke_cli(
        [
            "run",
            str(source(tmp_path, 300)),
            "--call",
            f"{tmp_path}/work.py:work",
            "--executor",
            executor,
            "--max-attempts",
            "1",
            "--max-failure-rate",
            "0.5",
            "--min-items",
            "10",
            "-j",
            "1",
            "--headless",
        ],
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "after 10 items" in only_manifest(out_dir)["halt_reason"]
    assert starts(log) == list(range(10))
