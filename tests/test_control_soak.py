"""Random control against a running engine, checked against what really started.

Each round sends one of pause, unpause, skip, retry, or stop (then resume) to a real engine
process, through control.jsonl as the CLI and the TUI do, and waits for its acknowledgement.
Every item logs ``SEQ ATTEMPT TIME`` as it starts. At the end the log must show:
no attempt of an item started twice; nothing started while the batch was paused or stopped
(after the acknowledgement, with a margin for an item that had begun and not yet logged);
no item started after a skip of it was acknowledged; every complete item has exactly one
result line. 200 rounds run with ``-m slow``; the default suite runs a short version.
"""

from __future__ import annotations

import collections
import random
import sqlite3
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.control import append_command, new_command, wait_for_ack

from .conftest import CLI, cli_env, only_batch, read_jsonl

PROCS = Path(__file__).with_name("procs.py")
#: A start logged this long after an acknowledgement may have begun before it (the log line
#: is written by the item, a moment after its gate opened).
MARGIN_S = 0.2


def _starts(log: Path) -> list[tuple[int, int, float]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        seq, attempt, ts = line.split()
        out.append((int(seq), int(attempt), float(ts)))
    return out


def _engine(args: list[str], tmp_path: Path, out_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, *args, "--headless"],
        env=cli_env(out_dir, {"BTUI_TEST_EXEC_LOG": str(log)}),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _send(bdir: BatchDir, op: str, **kw: object) -> float:
    """Send ``op``, wait for its acknowledgement; returns the time it was seen."""
    cmd = new_command(op, **kw)  # type: ignore[arg-type]
    append_command(bdir, cmd)
    assert wait_for_ack(bdir, cmd.id, timeout=20) is not None, f"{op} not acknowledged"
    return time.time()


def _wait_running(bdir: BatchDir, engine: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert engine.poll() is None, engine.stderr.read() if engine.stderr else ""
        try:
            live = orjson.loads(bdir.live_progress.read_bytes())
            if live.get("pid") == engine.pid and live["state"] in ("running", "paused"):
                return
        except (OSError, orjson.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise AssertionError("the engine did not start")


def _promised_exit(batch: Path, *, state: str) -> int:
    """The exit code DESIGN section 8 gives an engine that left ``batch`` in ``state`` (checked
    against manifest.json) with the store's counts: 130 stopped; 0 all complete, else 1."""
    manifest = orjson.loads((batch / "manifest.json").read_bytes())
    assert manifest["state"] == state, (manifest["state"], manifest["halt_reason"])
    if state == "stopped":
        return 130
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        statuses = {st for (st,) in db.execute("SELECT DISTINCT status FROM items")}
    finally:
        db.close()
    return 0 if statuses == {"complete"} else 1


def soak(tmp_path: Path, out_dir: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    items = tmp_path / "items.txt"
    n = 60 + rounds * 6
    items.write_text("".join(f"item-{i}\n" for i in range(n)))
    log = tmp_path / "starts.log"
    common = ["--workers", "3", "--max-attempts", "1", "--grace", "600"]
    engine = _engine(
        ["run", str(items), "--call", f"{PROCS}:soak_item", "--executor", "thread", *common], tmp_path, out_dir, log
    )
    quiet: list[tuple[float, float]] = []  # windows in which nothing may start
    skipped_at: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 30
        while not (out_dir.exists() and any(out_dir.iterdir())):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        batch = only_batch(out_dir)
        bdir = BatchDir(batch)
        _wait_running(bdir, engine)
        paused_since: float | None = None
        for _ in range(rounds):
            if engine.poll() is not None:  # finished: start it again with more to do
                promised = _promised_exit(batch, state="finished")
                assert engine.returncode == promised, engine.stderr.read() if engine.stderr else ""
                engine = _engine(["resume", batch.name, "--retry-failed"], tmp_path, out_dir, log)
                _wait_running(bdir, engine)
                paused_since = None
            op = rng.choice(["pause", "unpause", "skip", "skip", "retry", "stop", "wait", "wait"])
            if op == "pause" and paused_since is None:
                paused_since = _send(bdir, "pause")
            elif op == "unpause" and paused_since is not None:
                t = time.time()
                quiet.append((paused_since + MARGIN_S, t))
                _send(bdir, "resume")
                paused_since = None
            elif op == "skip":
                seqs = rng.sample(range(n), 4)
                at = _send(bdir, "skip", seqs=seqs)
                for seq in seqs:
                    skipped_at.setdefault(seq, at)
            elif op == "retry":
                _send(bdir, "retry")
            elif op == "stop":
                at = _send(bdir, "stop")
                code = engine.wait(timeout=60)
                # Acknowledged by a live engine: it stops (130), unless nothing was left to run.
                left = sum(
                    orjson.loads(bdir.live_progress.read_bytes())["counts"][k] for k in ("pending", "processing")
                )
                assert code == _promised_exit(batch, state="stopped" if left else "finished")
                restart = time.time()
                quiet.append(((paused_since or at) + MARGIN_S, restart))
                engine = _engine(["resume", batch.name], tmp_path, out_dir, log)
                _wait_running(bdir, engine)
                paused_since = None
            time.sleep(rng.uniform(0.0, 0.3))
        if paused_since is not None:
            quiet.append((paused_since + MARGIN_S, time.time()))
            _send(bdir, "resume")
        code = engine.wait(timeout=300)
        assert code == _promised_exit(batch, state="finished"), engine.stderr.read() if engine.stderr else ""
    finally:
        if engine.poll() is None:
            engine.kill()

    starts = _starts(log)
    attempts = collections.Counter((seq, attempt) for seq, attempt, _ts in starts)
    twice = {k: c for k, c in attempts.items() if c > 1}
    assert not twice, f"attempts started more than once: {twice}"
    in_quiet = [(s, a, ts) for s, a, ts in starts for lo, hi in quiet if lo < ts < hi]
    assert not in_quiet, f"started while paused or stopped: {in_quiet}"
    late = [(s, a, ts) for s, a, ts in starts if s in skipped_at and ts > skipped_at[s] + MARGIN_S]
    assert not late, f"started after its skip was acknowledged: {late}"

    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        status = dict(db.execute("SELECT seq, status FROM items").fetchall())
        recorded = set(db.execute("SELECT seq, attempt FROM attempts").fetchall())
    finally:
        db.close()
    assert set(status.values()) <= {"complete", "failed", "skipped"}
    assert set(attempts) == recorded  # every start is an attempt the engine recorded, and back
    lines = collections.Counter(int(line["seq"]) for line in read_jsonl(batch / "results.jsonl"))  # type: ignore[call-overload]
    assert lines == {seq: 1 for seq, st in status.items() if st == "complete"}
    started_seqs = {s for s, _a, _t in starts}
    assert {seq for seq, st in status.items() if st in ("complete", "failed")} <= started_seqs


def test_control_soak_short(tmp_path: Path, out_dir: Path) -> None:
    soak(tmp_path, out_dir, rounds=16, seed=14)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_control_soak_200_rounds(tmp_path: Path, out_dir: Path) -> None:
    soak(tmp_path, out_dir, rounds=200, seed=2026)
