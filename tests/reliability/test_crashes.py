"""Crashes: SIGKILL of the engine (headless and detached), of a pool worker, of a shell child.

After every engine that ends on its own (and after the final resume) every invariant of
helpers.assert_invariants holds; after every SIGKILL results.jsonl is already valid JSONL with no
item twice. Items run again only if they were in flight at a kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from .helpers import (
    PROCS,
    assert_invariants,
    batches,
    cli,
    error_types,
    exec_log,
    exited,
    kill_group,
    only_batch,
    start,
    store_counts,
    strict_jsonl,
    wait_or_dump,
    wait_until,
)


def _write_lines(path: Path, n: int) -> Path:
    path.write_text("".join(f"item-{i:06d}\n" for i in range(n)))
    return path


def _after_kill(out: Path, elog: Path, allowed: set[int]) -> Path | None:
    """Checks right after a SIGKILL; returns the batch (None if the kill came before it existed)."""
    found = batches(out)
    if not found:
        return None
    assert len(found) == 1, found
    batch = found[0]
    results = strict_jsonl(batch / "results.jsonl")
    seqs = [int(r["seq"]) for r in results]
    assert len(seqs) == len(set(seqs)), "an item completed twice after a SIGKILL"
    started = {seq for seq, _attempt, _pid in exec_log(elog)}
    allowed |= started - set(seqs)  # started but no result line: in flight at the kill
    return batch


def _results_lines(out: Path) -> int:
    """Complete lines in the one batch's results.jsonl (0 before the batch exists)."""
    found = batches(out)
    if len(found) != 1:
        return 0
    try:
        return (found[0] / "results.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _progressed(proc: subprocess.Popen[bytes], out: Path, before: int) -> Callable[[], bool]:
    """A predicate: the engine has ended, or the batch holds more than ``before`` results."""
    return lambda: proc.poll() is not None or _results_lines(out) > before


def _check_reruns(elog: Path, allowed: set[int]) -> None:
    runs: dict[int, int] = {}
    for seq, _attempt, _pid in exec_log(elog):
        runs[seq] = runs.get(seq, 0) + 1
    again = {s for s, n in runs.items() if n > 1}
    assert again <= allowed, f"items run again that were not in flight at a kill: {sorted(again - allowed)[:20]}"


def _resume_or_recover(batch: Path, out: Path, tmp_path: Path, args: list[str]) -> list[str]:
    return ["resume", batch.name, "--headless", "--progress-interval", "0.5", *args]


@pytest.mark.parametrize(
    "rounds",
    [3, pytest.param(8, marks=[pytest.mark.slow, pytest.mark.timeout(900)], id="soak")],
)
def test_sigkill_headless_engine_many_rounds(tmp_path: Path, out_dir: Path, rounds: int) -> None:
    """SIGKILL at random moments (startup, enqueue, run, commit), with a SIGTERM stop every third
    round whose clean exit is checked against every invariant. By default two kills and a stop;
    the soak (``-m slow``) runs eight rounds."""
    n = 5000
    source = _write_lines(tmp_path / "items.txt", n)
    elog = tmp_path / "exec.log"
    env = {"BTUI_TEST_EXEC_LOG": str(elog)}
    rng = random.Random(20240607)
    allowed: set[int] = set()
    run_args = ["run", str(source), "--call", f"{PROCS}:work", "--executor", "thread", "-j", "4", "--headless"]
    args = run_args
    kills = stops = 0
    last_done = 0
    for round_no in range(rounds):
        proc = start(args, out=out_dir, cwd=tmp_path, env=env)
        stop = round_no % 3 == 2
        if round_no == 0:
            time.sleep(rng.uniform(0.4, 1.6))  # anywhere: start-up, enqueue or the run
        else:
            # Every resume must make progress of its own before it is interrupted, so these kills
            # land mid-run and mid-commit whatever the machine's load does to start-up time.
            wait_until(
                _progressed(proc, out_dir, last_done),
                timeout=90,
                what=f"progress past {last_done} results in round {round_no}",
            )
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            assert proc.returncode == 0, err
            break
        if stop:
            kill_group(proc, signal.SIGTERM)
            err = proc.stderr.read().decode() if proc.stderr else ""
            if batches(out_dir) and proc.returncode == 130:
                stops += 1
                assert "Traceback" not in err, err
                batch = only_batch(out_dir)
                assert_invariants(batch, n_items=n, state="stopped")
        else:
            kill_group(proc)
            kills += 1
        batch_or_none = _after_kill(out_dir, elog, allowed)
        if batch_or_none is None:
            args = run_args  # killed before the batch existed: start over
            continue
        batch = batch_or_none
        last_done = len(strict_jsonl(batch / "results.jsonl"))
        args = ["resume", batch.name, "--headless"]
    assert kills >= rounds // 2, f"only {kills} kills landed: the machine is too fast for this test"

    # The rest at full speed: the kills are over, the pace only made them land mid-run.
    final = cli([*args], out=out_dir, cwd=tmp_path, env={**env, "BTUI_TEST_UNPACED": "1"}, timeout=180)
    assert final.returncode == 0, final.stderr[-3000:]
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=n, state="finished")
    assert sorted(int(r["seq"]) for r in checked["results"]) == list(range(n)), "an item was lost"
    for r in checked["results"]:
        seq = int(r["seq"])
        assert r["result"] == {"seq": seq, "line": f"item-{seq:06d}", "double": 2 * seq}
    _check_reruns(elog, allowed)
    history = checked["manifest"]["history"]
    assert history[-1]["outcome"] == "finished"


@pytest.mark.parametrize(
    "rounds",
    [2, pytest.param(5, marks=[pytest.mark.slow, pytest.mark.timeout(900)], id="soak")],
)
def test_sigkill_detached_engine_rounds(tmp_path: Path, out_dir: Path, rounds: int) -> None:
    """--detach: the pid from --json is the engine; SIGKILL it, resume --detach, again and again
    (twice by default, five times in the soak, ``-m slow``)."""
    n = 2000
    source = _write_lines(tmp_path / "items.txt", n)
    elog = tmp_path / "exec.log"
    env = {"BTUI_TEST_EXEC_LOG": str(elog)}
    rng = random.Random(99)
    allowed: set[int] = set()
    proc = cli(
        ["run", str(source), "--call", f"{PROCS}:work", "--executor", "thread", "-j", "3", "--detach", "--json"],
        out=out_dir,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    batch = Path(info["batch_dir"])
    kills = 0
    for round_ in range(rounds):
        pid = int(info["pid"])
        time.sleep(rng.uniform(0.1, 0.8))
        try:
            os.kill(pid, signal.SIGKILL)
            kills += 1
        except ProcessLookupError:
            break  # it finished first
        wait_until(exited(pid), 10)
        _after_kill(out_dir, elog, allowed)
        # After the last kill the pace has nothing left to make land: the rest runs at full speed.
        last = round_ == rounds - 1
        resume_env = {**env, "BTUI_TEST_UNPACED": "1"} if last else env
        proc = cli(["resume", batch.name, "--detach", "--json"], out=out_dir, cwd=tmp_path, env=resume_env)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        info = json.loads(proc.stdout)
    assert kills >= rounds - 1
    pid = int(info["pid"])
    wait_until(exited(pid), 120, "engine end")
    log = (batch / "engine.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    checked = assert_invariants(batch, n_items=n, state="finished")
    assert len(checked["results"]) == n
    _check_reruns(elog, allowed)


def _pool_children(engine_pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(engine_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "multiprocessing" in " ".join(k.cmdline())]


def test_sigkill_pool_worker_items_retried_as_worker_lost(tmp_path: Path, out_dir: Path) -> None:
    n = 30
    source = _write_lines(tmp_path / "items.txt", n)
    elog = tmp_path / "exec.log"
    env = {"BTUI_TEST_EXEC_LOG": str(elog)}
    proc = start(
        ["run", str(source), "--call", f"{PROCS}:slow", "--executor", "process", "-j", "3", "--headless"],
        out=out_dir,
        cwd=tmp_path,
        env=env,
    )
    try:
        wait_until(lambda: len(exec_log(elog)) >= 4, 60, "items running in the pool")
        starts = exec_log(elog)
        victim = starts[-1][2]  # a worker that has just started an item: it is running it now
        assert victim in {p.pid for p in _pool_children(proc.pid)}, "the logged pid is not a pool worker"
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=n, state="finished")
    lost = {seq for seq, _a, pid in exec_log(elog) if pid == victim}
    results = {int(r["seq"]): r for r in checked["results"]}
    types = error_types(batch)
    retried = [s for s in lost if "WorkerLost" in types.get(s, [])]
    assert retried, f"no item of the killed worker was retried as WorkerLost: {types}"
    for seq in retried:
        assert results[seq]["attempts"] >= 2
        assert results[seq]["result"]["pid"] != victim


def _sleeps_under(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if k.name() == "sleep":
                out.append(k)
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.mark.parametrize(
    ("template", "errors"), [("sleep 1", {"signal 9", "exit 137"}), ("sleep 1 && echo done {}", {"exit 137"})]
)
def test_sigkill_shell_child_fails_item_never_hangs(
    tmp_path: Path, out_dir: Path, template: str, errors: set[str]
) -> None:
    """sh that exec'd sleep reports the signal (``signal 9``); sh that waited for it exits 128+9
    (``exit 137``). Either way the item fails at once (an item error, not retried), the others
    complete, and the run ends."""
    n = 6
    source = _write_lines(tmp_path / "items.txt", n)
    proc = start(
        ["run", str(source), "--cmd", template, "-j", "2", "--headless", "--max-attempts", "2", "--backoff", "0"],
        out=out_dir,
        cwd=tmp_path,
    )
    try:
        wait_until(lambda: bool(_sleeps_under(proc.pid)), 30, "a running sleep")
        victim = _sleeps_under(proc.pid)[0]
        victim.send_signal(signal.SIGKILL)
        wait_or_dump(proc)  # never hangs
    finally:
        if proc.poll() is None:
            kill_group(proc)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in err
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=n, state="finished")
    counts = checked["counts"]
    types = [t for ts in error_types(batch).values() for t in ts if t]
    assert len(types) == 1 and types[0] in errors, types
    assert counts["failed"] == 1 and counts["complete"] == n - 1, counts
    assert proc.returncode == 1


def test_sigkill_during_enqueue_resume_reads_the_rest(tmp_path: Path, out_dir: Path) -> None:
    """A kill while a big source is being enqueued: resume enqueues the rest, no item twice."""
    n = 250_000
    source = tmp_path / "big.txt"
    with source.open("w") as fh:
        for i in range(n):
            fh.write(f"line-{i}\n")
    proc = start(
        ["run", str(source), "--call", f"{PROCS}:work", "--headless", "--executor", "thread"], out=out_dir, cwd=tmp_path
    )

    def enqueued_some() -> bool:
        found = batches(out_dir)
        if not found or not (found[0] / "items.db").exists():
            return False
        try:
            return 0 < store_counts(found[0])["total"] < n
        except Exception:
            return False

    try:
        wait_until(enqueued_some, 60, "a partly enqueued batch")
    finally:
        kill_group(proc)
    batch = only_batch(out_dir)
    partial = store_counts(batch)["total"]
    assert 0 < partial < n
    # The rest is enqueued on resume; stop it right after (SIGTERM) to keep the test short.
    resumed = start(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path)
    try:
        wait_until(lambda: store_counts(batch)["total"] == n and (batch / "live_progress.json").exists(), 90)
        time.sleep(0.5)
    finally:
        kill_group(resumed, signal.SIGTERM)
    err = resumed.stderr.read().decode() if resumed.stderr else ""
    assert resumed.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    checked = assert_invariants(batch, n_items=n, state="stopped")
    assert checked["counts"]["complete"] > 0
