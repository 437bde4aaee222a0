"""kill -9 the engine at random moments, resume each time, and check nothing is lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from .conftest import CLI, cli_env, only_batch, wait_until

PROCS = Path(__file__).with_name("procs.py")


def _strict_jsonl(path: Path) -> list[dict[str, object]]:
    """results.jsonl right after a crash: every line whole JSON, the file newline-terminated."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), f"torn results.jsonl: {data[-80:]!r}"
    return [orjson.loads(line) for line in data.splitlines()]


def _exec_log(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]


def _lines_done(batch_dir: Path) -> int:
    path = batch_dir / "results.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_one_sigkill_loses_nothing_and_redoes_only_in_flight(tmp_path: Path, out_dir: Path) -> None:
    _sigkill_rounds(tmp_path, out_dir, rounds=1)


@pytest.mark.slow
def test_sigkill_rounds_lose_nothing_and_redo_only_in_flight(tmp_path: Path, out_dir: Path) -> None:
    _sigkill_rounds(tmp_path, out_dir, rounds=8)


def _sigkill_rounds(tmp_path: Path, out_dir: Path, rounds: int) -> None:
    """``rounds`` times: run (or resume) and kill -9 the engine's group once a random number of
    results more is in results.jsonl; then resume to the end and check every item once."""
    n_items = 600
    lines = tmp_path / "items.txt"
    lines.write_text("".join(f"item-{i:05d}\n" for i in range(n_items)))
    exec_log = tmp_path / "exec.log"
    env = cli_env(out_dir, {"BTUI_TEST_EXEC_LOG": str(exec_log)})
    rng = random.Random(1234)
    allowed_reruns: set[int] = set()
    kills = 0

    args = [
        "run",
        str(lines),
        "--call",
        f"{PROCS}:record_and_work",
        "--executor",
        "thread",
        "-j",
        "3",
        "--headless",
        "--progress-interval",
        "0.2",
    ]
    done = 0
    for _round in range(rounds):
        # The kill lands once this many results are written (a moment of the run, not of the clock).
        target = min(n_items - 60, done + rng.randint(20, 500 // rounds + 20))
        proc = subprocess.Popen(
            [*CLI, *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        wait_until(
            lambda p=proc, t=target: (  # type: ignore[misc]
                p.poll() is not None
                or (out_dir.is_dir() and any(out_dir.iterdir()) and _lines_done(only_batch(out_dir)) >= t)
            ),
            120,
            f"{target} results",
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""  # killed mid-run, not ended
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        batch = only_batch(out_dir)
        results = _strict_jsonl(batch / "results.jsonl")
        done = len(results)
        with_result = {int(r["seq"]) for r in results}  # type: ignore[call-overload]
        started = set(_exec_log(exec_log))
        # Items that had started but had no result line were in flight at the kill.
        allowed_reruns |= started - with_result
        args = ["resume", batch.name, "--headless"]

    assert kills == rounds
    final = subprocess.run(
        [*CLI, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert final.returncode == 0, final.stderr

    batch = only_batch(out_dir)
    results = _strict_jsonl(batch / "results.jsonl")
    seqs = [int(r["seq"]) for r in results]  # type: ignore[call-overload]
    assert len(seqs) == len(set(seqs)), "an item was completed twice in results.jsonl"
    assert sorted(seqs) == list(range(n_items)), "an item was lost"
    for r in results:
        assert r["result"] == {"seq": r["seq"], "double": 2 * int(r["seq"]), "line": f"item-{int(r['seq']):05d}"}  # type: ignore[call-overload]

    executions = _exec_log(exec_log)
    counts: dict[int, int] = {}
    for s in executions:
        counts[s] = counts.get(s, 0) + 1
    rerun = {s for s, n in counts.items() if n > 1}
    assert rerun <= allowed_reruns, (
        f"items run again that were not in flight at a kill: {sorted(rerun - allowed_reruns)}"
    )

    import sqlite3

    db = sqlite3.connect(batch / "items.db")
    assert dict(db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall()) == {"complete": n_items}
    db.close()
    manifest = orjson.loads((batch / "manifest.json").read_bytes())
    assert manifest["state"] == "finished"
    assert manifest["totals"]["complete"] == n_items
    history = manifest["history"]
    # A kill can land before an engine records its start, so there may be fewer entries.
    assert 1 <= len(history) <= kills + 1
    assert history[-1]["action"] == "resume" and history[-1]["outcome"] == "finished"
