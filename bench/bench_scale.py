"""Scale: 1M items through a no-op callable. Enqueue time, run time, peak RSS, resume latency,
bytes on disk per item, and the longest gap between two completions.

    python -m bench.bench_scale [--items 1000000]

The longest gap: between two consecutive finished_at of results.jsonl (to the millisecond), over
the whole run, once for the plain run and once for a run where a view asks for the slowest-first
index at about a quarter of the way (the ``index`` command, as the dashboard sends it when the
items are sorted slowest first): the index is built beside the run (engine/committer.py), so
the gap there should be about the plain run's, not the build's 1-2 s. No peer runs these items
with a store to index; the plain run's gap is what the machine's load gives anyway.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import subprocess
import time
from pathlib import Path

import orjson

from batchtui.engine.batchdir import BatchDir, parse_iso
from batchtui.engine.client import send
from bench.common import BATCHTUI, HERE, cleanup, du_bytes, env_for, run_timed, table, workdir


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    n = args.items
    work = workdir("bt-scale-")
    try:
        src = work / "items.txt"
        with src.open("w") as fh:
            for i in range(n):
                fh.write(f"https://example.com/item/{i}\n")
        out = work / "out"
        env = env_for(out)
        cmd = [
            *BATCHTUI,
            "run",
            str(src),
            "--call",
            f"{HERE / 'procs.py'}:noop",
            "--executor",
            "thread",
            "-j",
            str(args.workers),
            "--headless",
            "--progress-interval",
            "5",
        ]
        full = run_timed(cmd, env=env, marks={"enqueued": " items -> "})
        assert full.returncode == 0, full.stderr
        batch = next(p for p in out.iterdir() if p.is_dir())
        enqueue_s = full.marks.get("enqueued", float("nan"))
        disk = du_bytes(batch)

        # Resume of a half-done batch: run a second one, stop it at ~50%, time a resume to
        # the first newly completed item.
        out2 = work / "out2"
        env2 = env_for(out2)
        proc = subprocess.Popen(cmd, env=env2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        batch2: Path | None = None
        index_answer = "not sent"
        while proc.poll() is None:
            time.sleep(0.2)
            dirs = [p for p in out2.iterdir() if p.is_dir()] if out2.exists() else []
            if dirs:
                batch2 = dirs[0]
                try:
                    live = orjson.loads((batch2 / "live_progress.json").read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue
                if live["percent"] >= 25 and index_answer == "not sent":
                    index_answer = str(getattr(send(BatchDir(batch2), "index", value="duration"), "message", "?"))
                if live["percent"] >= 50:
                    proc.send_signal(signal.SIGTERM)
                    break
        proc.wait()
        assert batch2 is not None
        gap_indexed = longest_gap(batch2 / "results.jsonl")
        results = batch2 / "results.jsonl"
        size0 = results.stat().st_size
        t0 = time.perf_counter()
        resume = subprocess.Popen(
            [*BATCHTUI, "resume", batch2.name, "--headless"],
            env=env2,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        first = float("nan")
        while resume.poll() is None:
            if results.stat().st_size > size0:
                first = time.perf_counter() - t0
                break
            time.sleep(0.005)
        resume.send_signal(signal.SIGTERM)
        resume.wait()

        rows: list[tuple[str, ...]] = [
            ("measure", "value", "target"),
            ("items", f"{n:,}", ""),
            ("start-up + enqueue (to the 'N items ->' line)", f"{enqueue_s:.2f} s", ""),
            ("whole run incl. enqueue", f"{full.seconds:.2f} s", ""),
            (
                "run after enqueue",
                f"{full.seconds - enqueue_s:.2f} s  ({n / max(1e-9, full.seconds - enqueue_s):,.0f} items/s)",
                "",
            ),
            ("engine peak RSS", f"{full.peak_rss_mb:.0f} MB", "<= 300 MB"),
            ("resume of a half-done batch to its first new result", f"{first:.2f} s", "<= 2 s"),
            ("longest gap between two completions, whole run", _gap_text(longest_gap(batch / "results.jsonl")), ""),
            (
                "same, a run indexed slowest first at 25% (to its stop at 50%)",
                _gap_text(gap_indexed),
                "about the plain run's",
            ),
            ("  the engine's answer to the index command", index_answer, ""),
            ("bytes on disk per item", f"{disk / n:.0f} B  ({disk / 1048576:.0f} MB total)", ""),
        ]
        print(table(f"Scale: {n:,} items, no-op callable, thread executor, {args.workers} workers", rows))
        return rows
    finally:
        cleanup(work)


def longest_gap(results: Path) -> tuple[float, float]:
    """(the longest time between two consecutive completions, when it began after the first
    completion), in seconds, from results.jsonl's finished_at."""
    with results.open("rb") as fh:
        times = sorted(parse_iso(orjson.loads(line)["finished_at"]) for line in fh)
    if len(times) < 2:
        return (float("nan"), float("nan"))
    gap, at = max((b - a, a) for a, b in itertools.pairwise(times))
    return gap, at - times[0]


def _gap_text(gap: tuple[float, float]) -> str:
    return f"{gap[0] * 1000:.0f} ms (at {gap[1]:.1f} s)"


if __name__ == "__main__":
    main()
