"""Scale: 1M items through a no-op callable. Enqueue time, run time, peak RSS, resume latency,
bytes on disk per item.

    python -m bench.bench_scale [--items 1000000]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from pathlib import Path

import orjson

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
        while proc.poll() is None:
            time.sleep(0.2)
            dirs = [p for p in out2.iterdir() if p.is_dir()] if out2.exists() else []
            if dirs:
                batch2 = dirs[0]
                try:
                    live = orjson.loads((batch2 / "live_progress.json").read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue
                if live["percent"] >= 50:
                    proc.send_signal(signal.SIGTERM)
                    break
        proc.wait()
        assert batch2 is not None
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
            ("bytes on disk per item", f"{disk / n:.0f} B  ({disk / 1048576:.0f} MB total)", ""),
        ]
        print(table(f"Scale: {n:,} items, no-op callable, thread executor, {args.workers} workers", rows))
        return rows
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
