"""In-process items: N no-op Python callables through batchtui against a bare ThreadPoolExecutor.

    python -m bench.bench_inproc [--items 100000] [--reps 3] [--workers 2]

Contenders, on the same items file (N distinct lines), interleaved round by round, median of
--reps rounds:

  bare pool   a fresh `python` that reads the lines and runs
              concurrent.futures.ThreadPoolExecutor(2).map(noop, items) (no persistence at all);
              its own timer gives the map alone, the parent's timer the whole process
              (interpreter start-up + reading the file + map + exit)
  batchtui    batchtui run items --call bench/procs.py:noop --executor thread --workers 2 --headless
              (durable: SQLite group commits, results.jsonl, live progress), end to end; its
              report.json gives the run phase (after the enqueue)
  process     the same with --executor process (items/s reported, no target)

Target (issue 6): batchtui no slower than the bare pool.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

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
    per_s,
    read_json,
    run_timed,
    spread,
    table,
    verdict,
    workdir,
    write_lines,
)

BASELINE = r"""
import sys, time
t_start = time.perf_counter()
sys.path.insert(0, {bench!r})
from concurrent.futures import ThreadPoolExecutor
from procs import noop
with open({items!r}, encoding="utf-8") as fh:
    items = [line.strip() for line in fh if line.strip()]
t0 = time.perf_counter()
with ThreadPoolExecutor({workers}) as pool:
    for _ in pool.map(noop, items):
        pass
t1 = time.perf_counter()
assert len(items) == {n}
print(f"map_s={{t1 - t0:.6f}} load_s={{t0 - t_start:.6f}}", file=sys.stderr)
"""


def ratios(values: list[float]) -> str:
    """``median (min-max, n=K)`` of per-round ratios."""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{median(values):.2f}x ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000, help="no-op items [100000]")
    ap.add_argument("--reps", type=int, default=3, help="rounds; the median is reported [3]")
    ap.add_argument("--workers", type=int, default=2, help="threads / processes [2]")
    ap.add_argument("--no-process", action="store_true", help="skip the process-executor run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (printed) for inspection")
    args = ap.parse_args(argv)
    n, j = args.items, args.workers

    work = workdir("bt-inproc-")
    try:
        items = write_lines(work / "items.txt", n, "https://example.com/item/{i}")
        script = BASELINE.format(bench=str(PROCS.parent), items=str(items), workers=j, n=n)
        map_s: list[float] = []
        engine: dict[str, list[dict[str, float]]] = {"thread": [], "process": []}
        counter = [0]

        pyenv = env_for(work / "py")  # the same environment and bytecode cache as the batchtui runs

        def bare() -> float:
            t = check(run_timed([sys.executable, "-c", script], env=pyenv, cwd=work, rss_interval=None), "bare pool")
            m = re.search(r"map_s=([\d.]+)", t.stderr)
            assert m, t.stderr
            map_s.append(float(m.group(1)))
            return t.seconds

        def batchtui(executor: str, src: Path = items, record: bool = True) -> float:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            cmd = [
                *BATCHTUI, "run", str(src), "--call", f"{PROCS}:noop",
                "--executor", executor, "--workers", str(j), "--headless",
            ]  # fmt: skip
            t = check(
                run_timed(cmd, env=env_for(out), cwd=work, marks={"enqueued": " items -> "}, rss_interval=None),
                "batchtui run",
            )
            rep = read_json(only_batch(out) / "report.json")
            cleanup(out)
            if not record:
                return t.seconds
            assert rep["totals"]["complete"] == n, rep["totals"]
            engine[executor].append(
                {
                    "duration_s": rep["duration_s"],
                    "enqueued_s": t.marks.get("enqueued", float("nan")),
                    "peak_mb": rep["peak_memory_mb"],
                    "cpu_s": t.cpu_s,
                }
            )
            return t.seconds

        runners = {"bare": bare, "thread": lambda: batchtui("thread")}
        if not args.no_process:
            runners["process"] = lambda: batchtui("process")
        # warm-up: page cache, bytecode cache (then forget those figures)
        bare()
        map_s.clear()
        one = write_lines(work / "one.txt", 1)
        batchtui("thread", one, record=False)
        if not args.no_process:
            batchtui("process", one, record=False)
        times = interleave(args.reps, runners)

        def med(executor: str, key: str) -> float:
            return median([s[key] for s in engine[executor]])

        t_bare, t_map = median(times["bare"]), median(map_s)
        t_thr, run_thr = median(times["thread"]), med("thread", "duration_s")
        rows: list[tuple[str, ...]] = [
            ("contender", "time (median, range)", "items/s", "vs target"),
            ("bare ThreadPoolExecutor.map, map only", spread(map_s), per_s(n, t_map), ""),
            ("bare pool, whole process (python -c ...)", spread(times["bare"]), per_s(n, t_bare), ""),
            ("batchtui --executor thread, end to end", spread(times["thread"]), per_s(n, t_thr), ""),
            ("  of which: start-up + enqueue (to 'N items ->')", f"{med('thread', 'enqueued_s'):.2f} s", "", ""),
            ("  of which: run phase (report.json duration_s)", f"{run_thr:.2f} s", per_s(n, run_thr), ""),
        ]
        if "process" in times:
            t_proc, run_proc = median(times["process"]), med("process", "duration_s")
            rows += [
                ("batchtui --executor process, end to end", spread(times["process"]), per_s(n, t_proc), ""),
                ("  of which: run phase (report.json duration_s)", f"{run_proc:.2f} s", per_s(n, run_proc), ""),
                (
                    "process / thread, run phase (per round)",
                    ratios(
                        [
                            p["duration_s"] / t["duration_s"]
                            for t, p in zip(engine["thread"], engine["process"], strict=True)
                        ]
                    ),
                    "",
                    "",
                ),
            ]
        # The ratios are taken round by round (each round runs both, one right after the other),
        # then their median: the bare map alone swings 1.4-3.7 s with the load of a shared
        # machine, so a ratio of two medians taken apart swung 0.7-1.2x between two runs.
        e2e_ratios = [b / a for a, b in zip(times["bare"], times["thread"], strict=True)]
        run_ratios = [s["duration_s"] / m for m, s in zip(map_s, engine["thread"], strict=True)]
        r_e2e, r_run = median(e2e_ratios), median(run_ratios)
        rows += [
            ("batchtui / bare pool, end to end (per round)", ratios(e2e_ratios), "", f"<= 1.0  {verdict(r_e2e, 1.0, at_most=True)}"),
            ("batchtui run phase / bare map only (per round)", ratios(run_ratios), "", f"<= 1.0  {verdict(r_run, 1.0, at_most=True)}"),
            ("batchtui thread: CPU (user+sys)", f"{med('thread', 'cpu_s'):.2f} s", f"{med('thread', 'cpu_s') / n * 1e6:.0f} us/item", ""),
            ("batchtui thread: engine peak RSS", f"{max(s['peak_mb'] for s in engine['thread']):.0f} MB", "", ""),
        ]  # fmt: skip
        print(table(f"In-process: {n:,} no-op callables, {j} workers ({machine_line()})", rows))
        if args.keep:
            print(f"kept {work}")
        return rows
    finally:
        if not args.keep:
            cleanup(work)


if __name__ == "__main__":
    main()
