"""Load: many items, 16 workers, 30% transient failures on the first attempt, no backoff.

The default run does 20k items; the 200k soaks (one with SIGKILLs in the middle, one in a
process pool) are marked slow: ``pytest -m slow tests/reliability``.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import (
    PROCS,
    assert_invariants,
    cli,
    db,
    kill_group,
    only_batch,
    start,
    strict_jsonl,
    wait_until,
)


def _flaky(seq: int) -> bool:
    """The same pseudo-random choice procs.flaky30 makes."""
    unit = int.from_bytes(hashlib.blake2b(str(seq).encode(), digest_size=8).digest(), "big") / 2**64
    return unit < 0.3


def _load_run(tmp_path: Path, out_dir: Path, n: int, *, executor: str = "thread", kills: int = 0) -> None:
    source = tmp_path / "items.txt"
    with source.open("w") as fh:
        for i in range(n):
            fh.write(f"https://example.com/doc/{i}\n")
    args = [
        "run",
        str(source),
        "--call",
        f"{PROCS}:flaky30",
        "--executor",
        executor,
        "-j",
        "16",
        "--backoff",
        "0",
        "--headless",
        "--progress-interval",
        "5",
    ]
    rng = random.Random(n)
    for _ in range(kills):
        proc = start(args, out=out_dir, cwd=tmp_path)
        done_at = rng.uniform(0.1, 0.9) * n

        def progressed(engine: subprocess.Popen[bytes] = proc, target: float = done_at) -> bool:
            found = list(out_dir.glob("*/results.jsonl"))
            return engine.poll() is not None or (bool(found) and found[0].stat().st_size > target * 100)

        try:
            wait_until(progressed, 600)
        finally:
            kill_group(proc)
        strict_jsonl(only_batch(out_dir) / "results.jsonl")
        args = ["resume", only_batch(out_dir).name, "--headless", "--progress-interval", "5"]
    started = time.monotonic()
    final = cli(args, out=out_dir, cwd=tmp_path, timeout=1800)
    elapsed = time.monotonic() - started
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Traceback" not in final.stderr
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=n, state="finished")
    results = checked["results"]
    assert len(results) == n
    flaky = {s for s in range(n) if _flaky(s)}
    assert 0.27 * n < len(flaky) < 0.33 * n
    for r in results:
        seq = int(r["seq"])
        assert r["result"] == {"seq": seq, "attempt": r["attempts"]}
        if not kills:  # a kill may put an item back with one more attempt counted
            assert r["attempts"] == (2 if seq in flaky else 1), r
    conn = db(batch)
    try:
        failed_attempts = conn.execute(
            "SELECT COUNT(*) FROM attempts WHERE status='failed' AND error_type='ConnectionError'"
        ).fetchone()[0]
        categories = {c for (c,) in conn.execute("SELECT DISTINCT error_category FROM attempts WHERE status='failed'")}
    finally:
        conn.close()
    assert failed_attempts >= len(flaky)
    assert categories <= {"transient"}
    report = checked["manifest"]
    assert report["state"] == "finished"
    print(f"{n} items, {executor}, {kills} kills: last run {elapsed:.1f}s")


def test_load_20k_16_workers_30pct_transient(tmp_path: Path, out_dir: Path) -> None:
    _load_run(tmp_path, out_dir, 20_000)


@pytest.mark.slow
def test_load_200k_16_workers_30pct_transient_with_kills(tmp_path: Path, out_dir: Path) -> None:
    _load_run(tmp_path, out_dir, 200_000, kills=2)


@pytest.mark.slow
def test_load_200k_process_pool(tmp_path: Path, out_dir: Path) -> None:
    _load_run(tmp_path, out_dir, 200_000, executor="process")


@pytest.mark.slow
def test_load_200k_sigterm_and_resume_keeps_invariants(tmp_path: Path, out_dir: Path) -> None:
    """A graceful stop in the middle of a big run: every invariant holds at the stop too."""
    n = 200_000
    source = tmp_path / "items.txt"
    source.write_text("".join(f"r{i}\n" for i in range(n)))
    proc = start(
        ["run", str(source), "--call", f"{PROCS}:flaky30", "--executor", "thread", "-j", "16", "--backoff", "0"],
        out=out_dir,
        cwd=tmp_path,
    )
    try:
        wait_until(
            lambda: (
                bool(list(out_dir.glob("*/results.jsonl")))
                and next(out_dir.glob("*/results.jsonl")).stat().st_size > 5_000_000
            ),
            600,
        )
    finally:
        kill_group(proc, signal.SIGTERM)
    assert proc.returncode == 130
    batch = only_batch(out_dir)
    assert_invariants(batch, n_items=n, state="stopped")
    final = cli(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path, timeout=1800)
    assert final.returncode == 0, final.stderr[-2000:]
    assert_invariants(batch, n_items=n, state="finished")
