"""A Python call that times out on a cluster the engine does not own (``--scheduler``) cannot be
stopped: it holds its worker's thread until it returns (engine/dask_executor.py abandon).

Before, its item was retried at once, while the first call still ran (twice at once), and each
retry that hung too held one more thread, until the run stalled with every thread held and
nothing said why. Now the item fails for good, the run goes on on the threads left, and once
such calls hold every thread of the cluster the run halts and says so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

from .conftest import dask_client
from .test_control_holds import rows
from .test_dask import needs_dask

pytestmark = [needs_dask, pytest.mark.xdist_group("test_dask_giveup")]

#: Items listed in HELD wait (up to 60 s, whatever is raised in them) for the file RELEASE; the
#: others take 0.05 s. Each logs its start.
STEPS = """
import os
import time


def step(item):
    with open({log!r}, "a") as fh:
        fh.write(f"{{item.seq}} {{item.attempt}}\\n")
    if item.seq in {held!r}:
        deadline = time.monotonic() + 60
        while not os.path.exists({release!r}) and time.monotonic() < deadline:
            try:
                time.sleep(0.02)
            except BaseException:
                pass
    else:
        time.sleep(0.05)
    return {{"seq": item.seq}}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A scheduler and two single-threaded worker processes: two threads in all."""
    with dask_client(1) as client:
        yield client


def _start(
    tmp_path: Path, cluster: Any, held: tuple[int, ...], n: int, timeout: float | None
) -> tuple[Any, BatchRunner, threading.Thread, Path]:
    """``n`` items of STEPS on the cluster, the run started in a thread: (batch, runner, its
    thread, the items' log); the file ``release`` in tmp_path lets the ``held`` items return."""
    log, release = tmp_path / "starts.log", tmp_path / "release"
    steps = tmp_path / "steps.py"
    steps.write_text(STEPS.format(log=str(log), held=held, release=str(release)))
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{i}\n" for i in range(n)))
    config = BatchConfig(
        output_dir=str(tmp_path / "out"),
        workers=2,
        executor="dask",
        scheduler=cluster.scheduler.address,
        timeout=timeout,
        max_attempts=3,
        fsync=False,
    )
    batch = create_batch(config, build_spec([str(items)]), python_spec(f"{steps}:step"))
    runner = BatchRunner(batch)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return batch, runner, thread, log


def _run(tmp_path: Path, cluster: Any, held: tuple[int, ...], n: int) -> tuple[Any, BatchRunner, Path]:
    batch, runner, thread, log = _start(tmp_path, cluster, held, n, timeout=1.0)
    release = tmp_path / "release"
    try:
        thread.join(90)  # a stall (the bug) runs out this wait
        assert not thread.is_alive(), "the run stalled"
    finally:
        release.touch()  # the held calls return: the cluster's threads are free for the next test
    return batch, runner, log


def test_a_timed_out_call_fails_for_good_and_the_run_goes_on(tmp_path: Path, cluster: Any) -> None:
    batch, runner, log = _run(tmp_path, cluster, held=(0,), n=8)
    assert runner.state.value == "finished"
    assert rows(batch.path, "SELECT seq, status, attempts, error_type FROM items WHERE status != 'complete'") == [
        (0, "failed", 1, "timeout")
    ]
    assert rows(batch.path, "SELECT count(*) FROM items WHERE status = 'complete'") == [(7,)]
    starts = sorted(tuple(map(int, line.split())) for line in log.read_text().splitlines())
    assert starts == [(seq, 1) for seq in range(8)]  # item 0 not retried while its call ran
    said = [w for w in runner.warnings if "cannot be stopped" in w]
    assert len(said) == 1 and "holds its worker's thread" in said[0] and "without --scheduler" in said[0]


def test_calls_holding_every_thread_halt_the_run(tmp_path: Path, cluster: Any) -> None:
    batch, runner, _log = _run(tmp_path, cluster, held=(0, 1), n=8)
    assert runner.state.value == "halted"
    assert runner.halt_reason is not None and runner.halt_reason.startswith(
        "2 Python calls timed out or skipped still hold worker threads"
    )
    assert rows(batch.path, "SELECT seq, status, attempts FROM items WHERE status = 'failed'") == [
        (0, "failed", 1),
        (1, "failed", 1),
    ]


def test_skips_of_calls_holding_every_thread_do_not_halt_the_run(tmp_path: Path, cluster: Any) -> None:
    """The operator skips the two calls running on a 2-thread cluster it does not own: they
    cannot be stopped and hold both threads. That halted the run (exit 3), as a timeout does;
    a skip is the operator's triage, and such calls may well end soon: the run waits for a
    free thread and goes on (seen under load in test_dask_control's skip test)."""
    from batchtui.engine.client import send

    from .conftest import wait_until, waits_for_held_calls

    batch, runner, thread, log = _start(tmp_path, cluster, held=(0, 1), n=8, timeout=None)
    release = tmp_path / "release"
    try:
        started = lambda: log.exists() and {0, 1} <= {int(x.split()[0]) for x in log.read_text().splitlines()}  # noqa: E731
        wait_until(started, 60, "items 0 and 1 running")
        send(batch, "skip", seqs=[0, 1])
        waits_for_held_calls(runner, thread, release)
    finally:
        release.touch()
    assert runner.state.value == "finished", runner.halt_reason
    assert rows(batch.path, "SELECT seq FROM items WHERE status = 'skipped'") == [(0,), (1,)]
    assert rows(batch.path, "SELECT count(*) FROM items WHERE status = 'complete'") == [(6,)]
