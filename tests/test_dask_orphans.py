"""An engine killed -9 on a dask cluster it does not own (``--scheduler``) leaves its running items
there: the next run of the batch must not run them a second time while they still run (DESIGN
section 6: no item ever runs in two processes at once). Shell items are killed; a Python call,
which cannot be stopped in a worker's thread, is waited for. See engine/dask_orphans.py.

Each item writes where it starts and a heartbeat every 0.1 s into a log (pid, time); the earlier
run's copy of an item must have given its last beat before the next run's copy starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.dask_gates import WorkerGates
from batchtui.engine.handoff import CANCELLED, QUEUED, RUNNING, Handoff
from batchtui.engine.shell.item import Item

from .conftest import CLI, cli_env, dask_client, only_batch, read_json, read_jsonl
from .test_dask import needs_dask

pytestmark = pytest.mark.xdist_group("test_dask_orphans")

#: Shell: ``beat.sh SEQ LOG`` beats for 20 s, unless the file ``fast`` is beside it.
BEAT_SH = """#!/bin/sh
printf 'start %s %s %s\\n' "$1" "$$" "$(date +%s.%N)" >> "$2"
[ -e "$(dirname "$0")/fast" ] && exit 0
n=200
while [ $n -gt 0 ]; do
    sleep 0.1
    printf 'beat %s %s %s\\n' "$1" "$$" "$(date +%s.%N)" >> "$2"
    n=$((n-1))
done
"""

#: Python: ``beat`` does the same until the file ``release`` is beside it (ten minutes at most:
#: never of itself within the test), in the worker's thread: it cannot be stopped.
BEAT_PY = """
import os
import threading
import time


def beat(item):
    here = os.path.dirname(os.path.abspath(__file__))
    log = os.path.join(here, "ran.log")
    me = f"{os.getpid()}.{threading.get_ident()}"
    with open(log, "a") as fh:
        fh.write(f"start {item.seq} {me} {time.time()}\\n")
    if os.path.exists(os.path.join(here, "fast")):
        return {"seq": item.seq}
    for _ in range(6000):
        if os.path.exists(os.path.join(here, "release")):
            break
        time.sleep(0.1)
        with open(log, "a") as fh:
            fh.write(f"beat {item.seq} {me} {time.time()}\\n")
    return {"seq": item.seq}
"""


#: As many as the cluster has threads (two workers of two): the dead engine's items hold every
#: one, so the resume's own start-up check, a task, would wait behind them (it did, 120 s, then
#: failed) if the batch were not taken first.
ITEMS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with dask_client(2) as client:
        yield client


def _runs(log: Path) -> dict[int, list[tuple[str, float, float]]]:
    """Per seq, each copy that ran: (who, when it started, its last sign of life)."""
    runs: dict[int, list[tuple[str, float, float]]] = {}
    for line in log.read_text().splitlines():
        what, seq_text, who, at_text = line.split()
        seq, at = int(seq_text), float(at_text)
        copies = runs.setdefault(seq, [])
        if what == "start":
            copies.append((who, at, at))
        else:
            index = max(i for i, (w, _, _) in enumerate(copies) if w == who)
            copies[index] = (who, copies[index][1], at)
    return runs


def killed_mid_run(tmp_path: Path, out_dir: Path, env: dict[str, str], args: list[str], log: Path, n: int) -> Path:
    """The batch of an engine (``batchtui ARGS``) killed -9 once its ``n`` items run (``log`` has
    their starts) on the cluster."""
    engine = subprocess.Popen(
        [*CLI, *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (log.exists() and log.read_text().count("start ") == n):
            assert time.monotonic() < deadline, "the items never all started"
            assert engine.poll() is None, "the engine ended before its items did"
            time.sleep(0.05)
        time.sleep(0.3)  # they beat: they run on the workers
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(10)
    finally:
        if engine.poll() is None:
            engine.kill()
    return only_batch(out_dir)


def _kill_mid_run_then_resume(
    tmp_path: Path, out_dir: Path, cluster: Any, processor: list[str], log: Path, *, release: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[int, list[tuple[str, float, float]]], Path]:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"i{n}\n" for n in range(ITEMS)))
    env = cli_env(out_dir, {"BATCHTUI_SCHEDULER": cluster.scheduler.address})
    args = ["run", str(items), *processor, "--executor", "dask", "-j", str(ITEMS), "--headless"]
    batch = killed_mid_run(tmp_path, out_dir, env, args, log, ITEMS)
    (log.parent / "fast").touch()  # the next copies end at once
    resume = subprocess.Popen(
        [*CLI, "resume", str(batch), "--headless"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if release:  # the earlier calls end once the new run has said that it waits for them
            deadline = time.monotonic() + 90
            while not any("still run on the dask cluster" in w for w in _live(batch).get("warnings", [])):
                assert time.monotonic() < deadline and resume.poll() is None, "the resume never said it waits"
                time.sleep(0.05)
            time.sleep(0.5)  # it waits: nothing of them runs again meanwhile (_ran_one_at_a_time)
            shown = subprocess.run([*CLI, "show", str(batch)], env=env, capture_output=True, text=True, check=False)
            assert "  Warnings:  " in shown.stdout and "still run on the dask cluster" in shown.stdout, shown.stdout
            (log.parent / "release").touch()
        out, err = resume.communicate(timeout=120)
    finally:
        (log.parent / "release").touch()  # whatever happened: no call is left on the cluster
        if resume.poll() is None:
            resume.kill()
    time.sleep(0.3)  # an earlier copy still running would beat meanwhile
    return subprocess.CompletedProcess(resume.args, resume.returncode, out, err), _runs(log), batch


def beat_script(tmp_path: Path) -> tuple[Path, Path]:
    """BEAT_SH in a folder of its own, and the log its items write."""
    work = tmp_path / "work"
    work.mkdir()
    script = work / "beat.sh"
    script.write_text(BEAT_SH)
    script.chmod(0o755)
    return script, work / "ran.log"


def _live(batch: Path) -> dict[str, Any]:
    try:
        return read_json(batch / "live_progress.json")
    except (OSError, ValueError):
        return {}


def _ran_one_at_a_time(runs: dict[int, list[tuple[str, float, float]]]) -> None:
    assert sorted(runs) == list(range(ITEMS))
    for seq, copies in runs.items():
        assert len(copies) == 2, (seq, copies)
        (_, _, last_beat), (_, second_start, _) = sorted(copies, key=lambda c: c[1])
        assert last_beat < second_start, f"item {seq} ran twice at once: {last_beat - second_start:.2f} s overlap"


def _completed_once(batch: Path) -> None:
    assert sorted(int(r["seq"]) for r in read_jsonl(batch / "results.jsonl")) == list(range(ITEMS))  # type: ignore[call-overload]
    assert read_json(batch / "live_progress.json")["counts"]["complete"] == ITEMS  # type: ignore[index]


@needs_dask
def test_shell_items_a_killed_engine_left_running_are_killed_before_they_run_again(
    tmp_path: Path, out_dir: Path, cluster: Any
) -> None:
    script, log = beat_script(tmp_path)
    proc, runs, batch = _kill_mid_run_then_resume(tmp_path, out_dir, cluster, ["--cmd", f"{script} {{seq}} {log}"], log)
    assert proc.returncode == 0, proc.stderr
    _ran_one_at_a_time(runs)
    _completed_once(batch)
    # Killed on the workers at once (they would have beaten for 20 s), not waited for.
    old = [sorted(copies, key=lambda c: c[1])[0] for copies in runs.values()]
    assert all(last - start < 15 for _, start, last in old), old  # killed, not waited out (20 s or more)
    assert (
        "4 items of an earlier run of this batch still run on the dask cluster (#0, #1, #2, #3): killed" in proc.stderr
    )


@needs_dask
def test_python_calls_a_killed_engine_left_running_are_waited_for(tmp_path: Path, out_dir: Path, cluster: Any) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "beatmod.py").write_text(BEAT_PY)
    log = work / "ran.log"
    proc, runs, batch = _kill_mid_run_then_resume(
        tmp_path, out_dir, cluster, ["--call", f"{work / 'beatmod.py'}:beat"], log, release=True
    )
    assert proc.returncode == 0, proc.stderr
    _ran_one_at_a_time(runs)
    _completed_once(batch)
    assert "each runs again here once it has ended (a Python call cannot be stopped" in proc.stderr


# -- the parts, without a cluster -------------------------------------------------------------------


def test_a_worker_gives_a_batch_to_its_latest_run() -> None:
    """On a worker, once run B takes the batch: run A's queued items never begin, its running
    ones are named, a task of A that arrives later begins nothing, and other batches are untouched."""
    gates = WorkerGates()
    old = gates.arrive("A-0-1", 3, "batch", "A", (10, 11, 12))
    assert gates.begin(old, 0)
    other = gates.arrive("C-0-1", 1, "another batch", "C", (10,))
    assert gates.begin(other, 0)
    ours = gates.arrive("B-0-1", 1, "batch", "B", (20,))
    assert gates.take_batch("batch", "B") == ({"A"}, [10])
    assert list(old.states) == [RUNNING, CANCELLED, CANCELLED]
    assert not gates.begin(old, 1)
    late = gates.arrive("A-13-2", 2, "batch", "A", (13, 14))  # in transit when A died
    assert list(late.states) == [CANCELLED, CANCELLED] and not gates.begin(late, 0)
    assert gates.begin(ours, 0)  # B's own items go on
    assert gates.orphans("batch", "B") == [10]
    gates.end(old, 0, [])
    gates.finish(old)
    assert gates.orphans("batch", "B") == []
    assert gates.orphans("another batch", "D") == [10]  # C's, for a run D of C's batch


def test_a_chunk_held_waits_in_the_hand_off_and_the_next_goes_past_it() -> None:
    handoff = Handoff()
    handoff.put([Item(1, "a", "a", 1, "")])
    handoff.put([Item(2, "b", "b", 1, "")])
    chunk = handoff.take(0.1, held=lambda c: any(i.seq == 1 for i in c.items))
    assert chunk is not None and [i.seq for i in chunk.items] == [2]
    with pytest.raises(TimeoutError):
        handoff.take(0.05, held=lambda c: True)
    assert handoff.state(1) == QUEUED  # still here: a cancel finds it
    assert handoff.cancel([1]) == [1]
    with pytest.raises(TimeoutError):
        handoff.take(0.05)


def test_while_items_wait_for_an_earlier_runs_calls_the_eta_is_unknown() -> None:
    """They end when calls no engine can stop return: the ETA of the other items' pace ("1s",
    for as long as the hold lasted) was a figure nobody could know."""
    from types import SimpleNamespace

    from batchtui.engine.eta import EtaEstimator
    from batchtui.engine.snapshot import _eta

    eta = EtaEstimator()
    eta.durations([0.5] * 20)
    eta.finished(0, 0.0)
    eta.finished(20, 10.0)
    orphans = SimpleNamespace(holding=False)
    run = SimpleNamespace(
        _clock=lambda: 10.5,
        executor=SimpleNamespace(started=lambda seq: None, orphans=orphans),
        _inflight={},
        eta=eta,
        dispatcher=SimpleNamespace(retries=[]),
        config=SimpleNamespace(rate=None),
        paused=False,
    )
    assert _eta(run, remaining=4, running=0).eta_s is not None  # type: ignore[arg-type]
    orphans.holding = True
    held = _eta(run, remaining=4, running=0)  # type: ignore[arg-type]
    assert held.eta_s is None and held.rate_per_s > 0
