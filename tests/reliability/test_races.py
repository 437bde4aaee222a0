"""Races: two engines on one batch, many control commands at once, CLI and engine together."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.control import append_command, new_command, wait_for_ack

from .helpers import (
    CLI,
    PROCS,
    assert_invariants,
    assert_no_traceback,
    cli,
    env_for,
    exited,
    kill_group,
    only_batch,
    read_json,
    start,
    store_items,
    wait_or_dump,
    wait_until,
)


def _stopped_batch(tmp_path: Path, out_dir: Path, n: int, at: int = 10) -> Path:
    """A batch of ``paced`` items (50 ms each; seq % 7 == 3 fails its first attempt), stopped
    by SIGTERM after ``at`` results."""
    source = tmp_path / "items.txt"
    source.write_text("".join(f"row-{i}\n" for i in range(n)))
    proc = start(
        ["run", str(source), "--call", f"{PROCS}:paced", "--executor", "thread", "-j", "4", "--headless"],
        out=out_dir,
        cwd=tmp_path,
    )
    try:
        wait_until(
            lambda: (
                bool(list(out_dir.glob("*/results.jsonl")))
                and len(next(out_dir.glob("*/results.jsonl")).read_bytes().splitlines()) >= at
            ),
            60,
        )
    finally:
        kill_group(proc, signal.SIGTERM)
    assert proc.returncode == 130
    return only_batch(out_dir)


def test_two_engines_at_once_exactly_one_runs(tmp_path: Path, out_dir: Path) -> None:
    n = 200
    batch = _stopped_batch(tmp_path, out_dir, n)
    # The items left wait for this file, opened once one engine has ended (the loser): the
    # winner cannot finish the batch before the other has even started, however slow its start.
    hold = tmp_path / "hold"
    env = env_for(out_dir, _held(hold, 0))
    procs = [
        subprocess.Popen(
            [*CLI, "resume", batch.name, "--headless"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        wait_until(lambda: any(p.poll() is not None for p in procs), 60, "one engine's end")
    finally:
        hold.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [1, 2], (codes, [o[1][-800:] for o in outs])  # 1: the paced failures
    winner = next(p for p in procs if p.returncode != 2)
    loser_err = next(o[1] for p, o in zip(procs, outs, strict=True) if p.returncode == 2)
    assert f"pid {winner.pid} on" in loser_err and "is being run by" in loser_err, loser_err
    assert "Traceback" not in loser_err
    checked = assert_invariants(batch, n_items=n, state="finished")
    history = checked["manifest"]["history"]
    assert [h["pid"] for h in history[1:]] == [winner.pid], "the loser must leave no trace in the manifest"


def test_two_detached_engines_at_once(tmp_path: Path, out_dir: Path) -> None:
    n = 300
    batch = _stopped_batch(tmp_path, out_dir, n)
    # The items left wait for this file, opened once both starts have answered: the engine that
    # runs cannot finish the batch before the other one has even started (both said 0 under load).
    hold = tmp_path / "hold"
    env = env_for(out_dir, _held(hold, 0))
    procs = [
        subprocess.Popen(
            [*CLI, "resume", batch.name, "--detach", "--json"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        hold.touch()
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], (codes, outs)
    ok_proc, ok = next((p, o) for p, o in zip(procs, outs, strict=True) if p.returncode == 0)
    err = next(o[1] for p, o in zip(procs, outs, strict=True) if p.returncode == 2)
    pid = int(json.loads(ok[0])["pid"])
    # The holder when it was refused: the other --detach while it planned (it holds the batch
    # from its plan on), or from the hand-over on the engine it started, which the lock file
    # names from its start. Which of the two depends on the moment; never any other process.
    named = re.search(r"is being run by pid (\d+) on", err)
    assert named is not None and "Traceback" not in err, err
    assert int(named.group(1)) in (ok_proc.pid, pid), (ok_proc.pid, pid, err)
    wait_until(exited(pid), 60)
    checked = assert_invariants(batch, n_items=n, state="finished")
    assert [h["pid"] for h in checked["manifest"]["history"][1:]] == [pid]


def test_the_loser_of_two_detached_engines_says_who_holds_the_batch(tmp_path: Path, out_dir: Path) -> None:
    batch = _stopped_batch(tmp_path, out_dir, 300)
    # One worker: the engine outlives the loser's start by far (~15 s of items), under any load.
    engine = start(["resume", batch.name, "--headless", "-j", "1"], out=out_dir, cwd=tmp_path)
    stop = threading.Event()

    def other_engine_output() -> None:
        # What a detached engine running the batch writes to engine.log meanwhile (its progress
        # lines, its summary at the end), here a line every 2 ms.
        with (batch / "engine.log").open("a", buffering=1) as log:
            while not stop.is_set():
                log.write("Progress: 10/300 (10 ok, 0 failed, 0 skipped) | the other engine\n")
                time.sleep(0.002)

    writer = threading.Thread(target=other_engine_output)
    try:
        wait_until(lambda: (batch / "lock").stat().st_size > 0, 30, "engine lock")
        writer.start()
        loser = cli(["resume", batch.name, "--detach"], out=out_dir, cwd=tmp_path)
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        kill_group(engine, signal.SIGTERM)
    assert loser.returncode == 2
    assert "is being run by" in loser.stderr and f"pid {engine.pid}" in loser.stderr, loser.stderr


def _held(hold: Path, start_at: int) -> dict[str, str]:
    """The environment that holds ``paced`` items from seq ``start_at`` on until ``hold`` exists."""
    return {"BTUI_TEST_HOLD": str(hold), "BTUI_TEST_HOLD_FROM": str(start_at)}


def _running(batch: Path, engine: subprocess.Popen[bytes]) -> Callable[[], bool]:
    """Whether ``engine`` runs the batch (its signal handlers are set by then)."""

    def check() -> bool:
        assert engine.poll() is None, engine.stderr.read() if engine.stderr else ""
        try:
            live = read_json(batch / "live_progress.json")
        except (OSError, ValueError):
            return False
        return bool(live.get("pid") == engine.pid and live["state"] in ("running", "paused"))

    return check


def _acknowledged(batch: Path, op: str) -> None:
    """Send ``op`` to the engine running ``batch`` and wait for its acknowledgement."""
    bdir = BatchDir(batch)
    cmd = new_command(op)  # type: ignore[arg-type]
    append_command(bdir, cmd)
    assert wait_for_ack(bdir, cmd.id, timeout=20) is not None, f"{op} not acknowledged"


def test_concurrent_control_commands_all_acked(tmp_path: Path, out_dir: Path) -> None:
    """Ten commands at once against a running engine: every one acknowledged by it. Items from
    seq 40 on are held until the commands are in, so the engine is alive for all of them and the
    skipped items have not started: each ends skipped."""
    n = 240
    batch = _stopped_batch(tmp_path, out_dir, n, at=5)
    hold = tmp_path / "hold"
    engine = start(["resume", batch.name, "--headless", "-j", "2"], out=out_dir, cwd=tmp_path, env=_held(hold, 40))
    try:
        wait_until(_running(batch, engine), 30, "the engine running")
        # Everything before the held items has ended: items 3, 10, ..., 38 have failed, and
        # each retry below has failed items to take (two retries of one set: the second would
        # find nothing, an exit 1).
        ended = ("complete", "failed")
        wait_until(lambda: all(store_items(batch)[seq][1] in ended for seq in range(40)), 60, "items 0-39 ended")
        skips = [list(range(180 + 10 * i, 185 + 10 * i)) for i in range(4)]
        commands = [
            *(["skip", batch.name, *map(str, s)] for s in skips),
            ["retry", batch.name, "--seq", "0-19"],
            ["retry", batch.name, "--type", "ValueError", "--seq", "20-39"],
            ["pause", batch.name],
            ["unpause", batch.name],
            ["workers", batch.name, "3"],
            ["pause", batch.name],
        ]
        env = env_for(out_dir)
        procs = [
            subprocess.Popen(
                [*CLI, *args, "--json", "--wait", "20"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        for args, proc, (stdout, stderr) in zip(commands, procs, outs, strict=True):
            assert proc.returncode == 0, (args, stderr)
            assert "Traceback" not in stderr
            info = json.loads(stdout)
            assert info["engine"] is True, (args, info)
        # Every command line is whole and acknowledged.
        lines = [orjson.loads(x) for x in (batch / "control.jsonl").read_bytes().splitlines()]
        ids = {json.loads(o[0])["id"] for o in outs}
        assert ids <= {c["id"] for c in lines}
        assert ids <= set(read_json(batch / "live_progress.json")["acked"])
        # Whatever order they landed in, the last word is ours: go on, and finish.
        final = cli(["unpause", batch.name, "--wait", "20"], out=out_dir, cwd=tmp_path)
        assert final.returncode == 0, final.stderr
        assert read_json(batch / "live_progress.json")["paused"] is False
        hold.touch()
        code = engine.wait(timeout=120)
        assert code == 1, str(read_json(batch / "live_progress.json")["counts"])  # 1: skipped items
    finally:
        hold.touch()
        if engine.poll() is None:
            kill_group(engine)
    checked = assert_invariants(batch, n_items=n, state="finished")
    statuses = {s: st for s, (_k, st) in store_items(batch).items()}
    assert {seq: statuses[seq] for group in skips for seq in group} == {
        seq: "skipped" for group in skips for seq in group
    }
    assert checked["counts"]["skipped"] == 20
    assert checked["counts"]["pending"] == 0


def test_offline_commands_racing_an_engine_start(tmp_path: Path, out_dir: Path) -> None:
    """`skip` while an engine is starting: applied to the store before the engine takes the lock,
    or sent to the engine and acknowledged; never an error, never lost. The skip is sent at
    three points of the start (at once, once the lock is taken, once the engine runs); items
    from seq 100 on are held, so the skipped one has not started: it ends skipped either way."""
    n = 200
    batch = _stopped_batch(tmp_path, out_dir, n, at=20)
    points = {
        "at once": lambda _engine: True,
        "lock taken": lambda _engine: (batch / "lock").exists() and (batch / "lock").stat().st_size > 0,
        "running": lambda engine: _running(batch, engine)(),
    }
    for round_no, (point, reached) in enumerate(points.items()):
        seq = 150 + round_no
        hold = tmp_path / f"hold-{round_no}"
        engine = start(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path, env=_held(hold, 100))
        try:
            wait_until(lambda: reached(engine), 30, point)  # noqa: B023 - called within the round
            proc = cli(["skip", batch.name, str(seq), "--wait", "20"], out=out_dir, cwd=tmp_path)
            assert proc.returncode == 0, (point, proc.stderr)
            assert_no_traceback(proc)
            assert store_items(batch)[seq][1] == "skipped", (point, proc.stdout)
            # Stopped once its loop runs (it has acknowledged a command: its signal handlers are
            # set; a SIGTERM before would be a crash), while its held items wait: 130, resumable.
            wait_until(_running(batch, engine), 30, "the engine running")
            _acknowledged(batch, "resume")
            os.killpg(engine.pid, signal.SIGTERM)
            wait_until(lambda: read_json(batch / "live_progress.json")["state"] != "running", 30, "stopping")
        finally:
            hold.touch()
            if engine.poll() is None:
                wait_or_dump(engine)
        assert engine.returncode == 130, (point, engine.stderr.read() if engine.stderr else "")
    final = cli(["resume", batch.name, "--headless", "-j", "8"], out=out_dir, cwd=tmp_path)
    assert final.returncode == 1, final.stderr  # the paced failures and the skipped items
    checked = assert_invariants(batch, n_items=n, state="finished")
    statuses = store_items(batch)
    assert [statuses[150 + i][1] for i in range(3)] == ["skipped"] * 3
    assert checked["counts"]["skipped"] == 3


def test_readers_during_a_run_never_fail(tmp_path: Path, out_dir: Path) -> None:
    """show/ls/export against a batch the engine is writing: always whole, never an error."""
    n = 300
    batch = _stopped_batch(tmp_path, out_dir, n, at=5)
    engine = start(["resume", batch.name, "--headless", "-j", "8"], out=out_dir, cwd=tmp_path)
    seen = []
    try:
        while engine.poll() is None:
            shown = cli(["show", batch.name, "--json"], out=out_dir, cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            assert_no_traceback(shown)
            counts = json.loads(shown.stdout)["counts"]
            assert sum(counts[k] for k in ("pending", "processing", "complete", "failed", "skipped")) == n
            seen.append(counts["complete"])
            exported = cli(["export", batch.name], out=out_dir, cwd=tmp_path)
            assert exported.returncode == 0 and len(exported.stdout.splitlines()) == n
    finally:
        if engine.poll() is None:
            kill_group(engine)
    assert seen == sorted(seen), "complete counts went backwards"
    assert_invariants(batch, n_items=n, state="finished")


def test_recover_refuses_while_an_engine_runs(tmp_path: Path, out_dir: Path) -> None:
    batch = _stopped_batch(tmp_path, out_dir, 200, at=5)
    # One worker: ~10 s of items, so the engine still runs when recover (a process to start) looks.
    engine = start(["resume", batch.name, "--headless", "-j", "1"], out=out_dir, cwd=tmp_path)
    try:
        wait_until(lambda: (batch / "lock").stat().st_size > 0, 30, "engine lock")
        proc = cli(["recover", batch.name, "--force"], out=out_dir, cwd=tmp_path)
        assert proc.returncode == 2 and f"pid {engine.pid}" in proc.stderr, proc.stderr
        assert_no_traceback(proc)
        assert not list(batch.glob("items.db.corrupt-*"))
    finally:
        kill_group(engine, signal.SIGTERM)
    assert_invariants(batch, n_items=200)


def test_command_queued_for_an_engine_that_dies_is_not_lost(tmp_path: Path, out_dir: Path) -> None:
    batch = _stopped_batch(tmp_path, out_dir, 100, at=5)
    engine = start(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path)
    try:
        # Its run recorded: it has opened the store (stopped while it sets up items.db's WAL, it
        # would hold it locked, and the skip below would wait for the store, not the engine).
        wait_until(lambda: read_json(batch / "manifest.json")["history"][-1]["pid"] == engine.pid, 30, "engine run")
        os.kill(engine.pid, signal.SIGSTOP)  # alive, holding the lock, reading nothing
        proc = cli(["skip", batch.name, "90", "--wait", "1"], out=out_dir, cwd=tmp_path)
        assert proc.returncode == 1 and "queued" in proc.stderr
    finally:
        kill_group(engine)  # it dies without reading the command
    final = cli(["resume", batch.name, "--headless", "-j", "8"], out=out_dir, cwd=tmp_path)
    assert final.returncode == 1, final.stderr  # 1: item 90 skipped
    assert store_items(batch)[90][1] == "skipped", "the queued skip was never applied"
    live = read_json(batch / "live_progress.json")
    assert any(
        "1 control command was queued for the previous engine, which never read it" in w for w in live["warnings"]
    ), live["warnings"]


def test_session_commands_for_a_dead_engine_do_not_act_on_the_next(tmp_path: Path, out_dir: Path) -> None:
    """A pause (or stop) queued for an engine that died unread was meant for that engine: the
    next resume answers it as not applied and runs to the end, and it is not replayed again."""
    batch = _stopped_batch(tmp_path, out_dir, 60, at=5)
    engine = start(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path)
    try:
        wait_until(lambda: (batch / "lock").stat().st_size > 0, 30, "engine lock")
        os.kill(engine.pid, signal.SIGSTOP)
        for op in ("pause", "stop"):
            proc = cli([op, batch.name, "--wait", "0.5"], out=out_dir, cwd=tmp_path)
            assert proc.returncode == 1 and "dropped if this engine ends first" in proc.stderr, proc.stderr
    finally:
        kill_group(engine)
    final = cli(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path)
    assert final.returncode == 1, final.stderr  # 1: some items fail by design, none were left
    assert_invariants(batch, n_items=60, state="finished")
    live = read_json(batch / "live_progress.json")
    answers = list(live["control_results"].values())
    assert len(answers) == 2 and all(a.startswith("not applied") for a in answers), answers
    # Read once: the store records how far control.jsonl was read, so nothing is replayed.
    with sqlite3.connect(batch / "items.db") as db:
        (offset,) = db.execute("SELECT v FROM meta WHERE k = 'control_offset'").fetchone()
    assert int(offset) == (batch / "control.jsonl").stat().st_size
