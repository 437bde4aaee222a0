"""CPU-bound Python items on the process executor against multiprocessing.Pool and
ProcessPoolExecutor (issue 22.2).

    python -m bench.bench_pool [--items 2000] [--ms 5] [--reps 5] [--workers 2]

Each item is --ms milliseconds of pure Python (a loop, calibrated once here, the same turns for
every contender: bench/procs.py:spin). Contenders, interleaved round by round, median of --reps:

  Pool      multiprocessing.Pool(2).imap_unordered(spin, items, chunksize=C)   (default context)
  PPE       ProcessPoolExecutor(2).map(spin, items, chunksize=C)
  batchtui  batchtui run items --call bench/procs.py:spin --executor process --workers 2 --headless

C is the chunk batchtui's dispatcher picks for items of that length (20 ms of work), so every
contender hands out the same chunks. Two times each:
  run     the pool's life: from creating it to its last result (peers, timed inside the script);
          batchtui's run phase (report.json duration_s: workers started, items run, committed)
  first   from the same start to the first result (batchtui: the first finished_at of
          results.jsonl after report.json's started_at)
  from launch   from starting the process (python -c, or the CLI) to the first result: batchtui's
          workers start before its run does (engine/warmstart.py), so this column and the whole
          process's time say what that moves, and what the CLI's start-up costs
Targets: batchtui's run <= 1.05x the better peer, its first result <= 0.15 s.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson

from bench.common import (
    BATCHTUI,
    PROCS,
    check,
    cleanup,
    env_for,
    interleave,
    machine_line,
    median,
    only_batch,
    read_json,
    run_timed,
    spread,
    table,
    verdict,
    workdir,
    write_lines,
)

TARGET_RUN = 1.05
TARGET_FIRST_S = 0.15

PEER = r"""
import os, sys, time
sys.path.insert(0, {bench!r})
from procs import spin
items = list(range({n}))
t0 = time.perf_counter()
first = first_at = None
if {kind!r} == "pool":
    import multiprocessing
    with multiprocessing.Pool({workers}) as pool:
        for _ in pool.imap_unordered(spin, items, chunksize={chunk}):
            if first is None:
                first, first_at = time.perf_counter() - t0, time.time()
else:
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor({workers}) as pool:
        for _ in pool.map(spin, items, chunksize={chunk}):
            if first is None:
                first, first_at = time.perf_counter() - t0, time.time()
print(f"run_s={{time.perf_counter() - t0:.6f}} first_s={{first:.6f}} first_at={{first_at:.6f}}", file=sys.stderr)
"""


def calibrate(ms: float) -> int:
    """Loop turns of bench/procs.py:spin that take about ``ms`` here (the best of 5 tries)."""
    turns = 100_000
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        x = 0
        for i in range(turns):
            x += i
        best = min(best, time.perf_counter() - t0)
    return max(1, int(turns * ms / 1000 / best))


def first_result_at(batch: Path) -> tuple[float, float]:
    """When the run began (report.json's started_at) and when its first item finished."""
    rep = read_json(batch / "report.json")
    start = datetime.fromisoformat(rep["started_at"]).timestamp()
    first = min(
        datetime.fromisoformat(orjson.loads(line)["finished_at"]).timestamp()
        for line in (batch / "results.jsonl").read_bytes().splitlines()
    )
    return start, first


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000, help="items [2000]")
    ap.add_argument("--ms", type=float, default=5.0, help="milliseconds of pure Python per item [5]")
    ap.add_argument("--reps", type=int, default=5, help="rounds; the median is reported [5]")
    ap.add_argument("--workers", type=int, default=2, help="processes [2]")
    args = ap.parse_args(argv)
    n, j = args.items, args.workers
    chunk = max(1, int(0.02 / (args.ms / 1000)))  # dispatch.CHUNK_TARGET_S of work

    work = workdir("bt-pool-")
    try:
        items = write_lines(work / "items.txt", n)
        env = env_for(work / "py")
        env["BENCH_SPIN"] = str(calibrate(args.ms))
        first: dict[str, list[float]] = {"pool": [], "ppe": [], "batchtui": []}
        from_launch: dict[str, list[float]] = {"pool": [], "ppe": [], "batchtui": []}
        run: dict[str, list[float]] = {"pool": [], "ppe": [], "batchtui": []}
        cpu: dict[str, list[float]] = {"pool": [], "ppe": [], "batchtui": []}  # the whole tree's
        split: dict[str, list[float]] = {"engine": [], "children": []}  # batchtui's report.json
        counter = [0]

        def peer(kind: str) -> float:
            code = PEER.format(bench=str(PROCS.parent), n=n, kind=kind, workers=j, chunk=chunk)
            launched = time.time()
            t = check(run_timed([sys.executable, "-c", code], env=env, cwd=work, rss_interval=None), kind)
            m = re.search(r"run_s=([\d.]+) first_s=([\d.]+) first_at=([\d.]+)", t.stderr)
            assert m, t.stderr
            run[kind].append(float(m.group(1)))
            cpu[kind].append(t.cpu_s)
            first[kind].append(float(m.group(2)))
            from_launch[kind].append(float(m.group(3)) - launched)
            return t.seconds

        def batchtui() -> float:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            cmd = [
                *BATCHTUI, "run", str(items), "--call", f"{PROCS}:spin",
                "--executor", "process", "--workers", str(j), "--headless",
            ]  # fmt: skip
            launched = time.time()
            t = check(run_timed(cmd, env={**env_for(out), "BENCH_SPIN": env["BENCH_SPIN"]}, cwd=work, rss_interval=None), "batchtui")  # fmt: skip
            batch = only_batch(out)
            rep = read_json(batch / "report.json")
            assert rep["totals"]["complete"] == n, rep["totals"]
            run["batchtui"].append(rep["duration_s"])
            cpu["batchtui"].append(t.cpu_s)
            split["engine"].append(rep.get("engine_cpu_s", 0.0))
            split["children"].append(rep.get("children_cpu_s", 0.0))
            began, first_at = first_result_at(batch)
            first["batchtui"].append(first_at - began)
            from_launch["batchtui"].append(first_at - launched)
            cleanup(out)
            return t.seconds

        peer("pool")  # warm-up: page cache, bytecode cache
        batchtui()
        for values in (*first.values(), *run.values(), *from_launch.values(), *cpu.values(), *split.values()):
            values.clear()
        walls = interleave(args.reps, {"pool": lambda: peer("pool"), "ppe": lambda: peer("ppe"), "batchtui": batchtui})
        ideal = n * args.ms / 1000 / j
        best = min(median(run["pool"]), median(run["ppe"]))
        r_run = median(run["batchtui"]) / best
        f_b = median(first["batchtui"])
        names = {
            "pool": f"Pool({j}).imap_unordered, chunksize {chunk}",
            "ppe": f"ProcessPoolExecutor({j}).map, chunksize {chunk}",
            "batchtui": f"batchtui --executor process -j{j}",
        }
        rows: list[tuple[str, ...]] = [
            ("contender", "run (median, range)", "first result", "from launch", "whole process", "vs target")
        ]
        for kind, label in names.items():
            rows.append(
                (
                    label,
                    spread(run[kind]),
                    f"{median(first[kind]):.3f} s",
                    f"{median(from_launch[kind]):.3f} s",
                    spread(walls[kind]),
                    "",
                )
            )
        best_wall = min(median(walls["pool"]), median(walls["ppe"]))
        rows += [
            ("batchtui run / better peer run", f"{r_run:.2f}x", "", "", "", f"<= {TARGET_RUN}  {verdict(r_run, TARGET_RUN, at_most=True)}"),
            ("batchtui / Pool", f"{median(run['batchtui']) / median(run['pool']):.2f}x", "", "", "", ""),
            ("batchtui / ProcessPoolExecutor", f"{median(run['batchtui']) / median(run['ppe']):.2f}x", "", "", "", ""),
            ("batchtui first result", f"{f_b:.3f} s", "", "", "", f"<= {TARGET_FIRST_S}  {verdict(f_b, TARGET_FIRST_S, at_most=True)}"),
            ("whole process / better peer's", f"{median(walls['batchtui']) / best_wall:.2f}x", "", "", "", "(CLI start-up in)"),
            ("ideal (items x ms / workers)", f"{ideal:.2f} s", "", "", "", ""),
            ("CPU, whole process tree: Pool / PPE / batchtui", " / ".join(f"{median(cpu[k]):.2f} s" for k in ("pool", "ppe", "batchtui")), "", "", "", ""),
            ("batchtui CPU over its run: engine / workers", f"{median(split['engine']):.2f} s / {median(split['children']):.2f} s", "", "", "", "(report.json)"),
        ]  # fmt: skip
        title = f"Process executor: {n:,} x {args.ms:g} ms of pure Python, {j} workers ({machine_line()})"
        print(table(title, rows))
        print(f"  (load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
        return rows
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
