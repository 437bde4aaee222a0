"""The dask executor on a local cluster against the process executor: items/s of short callables.

    python -m bench.bench_dask [--items 2000] [--ms 5] [--reps 3] [--workers 2]

Contenders, on the same items file (N distinct lines), interleaved round by round, median of
--reps rounds. Each item's callable sleeps --ms milliseconds (the work), so the figures show
what each executor adds per item.

  process   batchtui run items --call sleep.py:work --executor process --workers 2 --headless
  dask      batchtui run items --call sleep.py:work --executor dask --workers 2 --headless
            (the engine starts a LocalCluster: 2 worker processes, one thread each, and closes it)

Two rates per contender:
  end to end   N / the whole command's wall time (start-up, enqueue, run, cluster start and close)
  steady       items/s while items flow: (N - 1) / (last - first finished_at in results.jsonl),
               so a cluster's start-up is left out

The ratio column is dask / process (above 1: dask is faster). Needs the extra:
pip install 'batchtui[dask]'.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from datetime import datetime
from pathlib import Path

import orjson

from bench.common import (
    BATCHTUI,
    check,
    cleanup,
    env_for,
    interleave,
    machine_line,
    median,
    only_batch,
    per_s,
    run_timed,
    spread,
    table,
    workdir,
    write_lines,
)

WORK = """\
import time


def work(item):
    time.sleep({seconds!r})
    return {{"seq": item.seq}}
"""


def steady_rate(batch: Path) -> float:
    """Items/s between the first and the last finished_at of results.jsonl."""
    stamps = sorted(
        datetime.fromisoformat(orjson.loads(line)["finished_at"]).timestamp()
        for line in (batch / "results.jsonl").read_bytes().splitlines()
    )
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return float("nan")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--ms", type=float, default=5.0, help="milliseconds each item sleeps")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if importlib.util.find_spec("distributed") is None:
        print("bench_dask: dask is not installed (pip install 'batchtui[dask]'); skipped")
        return 0

    base = workdir("bench_dask_")
    try:
        items = write_lines(base / "items.txt", args.items)
        work = base / "sleep.py"
        work.write_text(WORK.format(seconds=args.ms / 1000))
        steady: dict[str, list[float]] = {"process": [], "dask": []}

        def contender(executor: str) -> float:
            out = base / f"out_{executor}"
            cleanup(out)
            cmd = [
                *BATCHTUI,
                "run",
                str(items),
                "--call",
                f"{work}:work",
                "--executor",
                executor,
                "--workers",
                str(args.workers),
                "--headless",
            ]
            t = check(run_timed(cmd, env=env_for(out), cwd=base, rss_interval=None), f"batchtui --executor {executor}")
            steady[executor].append(steady_rate(only_batch(out)))
            cleanup(out)
            return t.seconds

        walls = interleave(args.reps, {"process": lambda: contender("process"), "dask": lambda: contender("dask")})
    finally:
        cleanup(base)

    n = args.items
    rows: list[tuple[str, ...]] = [("executor", "wall (median, range)", "end to end", "steady", "steady / process")]
    proc_steady = median(steady["process"])
    for name in ("process", "dask"):
        rate = median(steady[name])
        ratio = rate / proc_steady if proc_steady > 0 else float("nan")
        rows.append(
            (
                f"{name} ({args.workers} workers)",
                spread(walls[name]),
                per_s(n, median(walls[name])),
                f"{rate:,.0f}/s",
                f"{ratio:.2f}x",
            )
        )
    wall_ratio = median(walls["process"]) / median(walls["dask"])
    print(machine_line())
    print(
        table(
            f"dask LocalCluster vs process executor: {n:,} items of {args.ms:g} ms, "
            f"{args.workers} workers, {args.reps} rounds",
            rows,
        )
    )
    print(f"\n  end-to-end items/s, dask / process: {wall_ratio:.2f}x")
    print(f"  ideal steady rate ({args.workers} workers x {args.ms:g} ms): {args.workers * 1000 / args.ms:,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
