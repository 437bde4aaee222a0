"""The cost of durability: the same batchtui runs with group fsync (--fsync, the default) and
with none (--no-fsync).

    python -m bench.bench_durability [--items 100000] [--shell-items 3000] [--reps 3]

Workloads: N no-op Python callables (--executor thread) and M shell `true` commands, each with
--fsync and --no-fsync, interleaved round by round, median of --reps rounds. Reported: end-to-end
time, run phase (report.json duration_s), the number of group commits (commit_seq: each one
fsyncs results.jsonl and commits one SQLite transaction, which fsyncs the WAL), and the ratio.
"""

from __future__ import annotations

import argparse

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
    workdir,
    write_lines,
)


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000, help="no-op callable items [100000]; 0 skips")
    ap.add_argument("--shell-items", type=int, default=3000, help="shell `true` items [3000]; 0 skips")
    ap.add_argument("--reps", type=int, default=3, help="rounds; the median is reported [3]")
    ap.add_argument("--workers", type=int, default=2, help="workers [2]")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (printed) for inspection")
    args = ap.parse_args(argv)
    j = str(args.workers)

    work = workdir("bt-durable-")
    try:
        workloads: dict[str, tuple[int, list[str]]] = {}
        if args.items:
            src = write_lines(work / "calls.txt", args.items, "https://example.com/item/{i}")
            workloads["no-op callable, thread"] = (
                args.items,
                [str(src), "--call", f"{PROCS}:noop", "--executor", "thread"],
            )
        if args.shell_items:
            src = write_lines(work / "shell.txt", args.shell_items)
            workloads["shell `true`"] = (args.shell_items, [str(src), "--cmd", "true"])

        stats: dict[tuple[str, str], list[dict[str, float]]] = {}
        counter = [0]

        def run(name: str, mode: str) -> float:
            n, source = workloads[name]
            counter[0] += 1
            out = work / f"out{counter[0]}"
            cmd = [*BATCHTUI, "run", *source, "--workers", j, "--headless", mode]
            t = check(run_timed(cmd, env=env_for(out), cwd=work, rss_interval=None), f"batchtui run {mode}")
            batch = only_batch(out)
            rep = read_json(batch / "report.json")
            live = read_json(batch / "live_progress.json")
            assert rep["totals"]["complete"] == n, rep["totals"]
            stats.setdefault((name, mode), []).append(
                {"total": t.seconds, "run": rep["duration_s"], "commits": live["commit_seq"]}
            )
            cleanup(out)
            return t.seconds

        runners = {
            f"{name}|{mode}": (lambda name=name, mode=mode: run(name, mode))
            for name in workloads
            for mode in ("--fsync", "--no-fsync")
        }
        first = next(iter(runners))
        runners[first]()  # warm-up: page cache, bytecode cache (then forget its figures)
        stats.clear()
        times = interleave(args.reps, runners)

        rows: list[tuple[str, ...]] = [
            ("workload", "mode", "end to end (median, range)", "run phase", "items/s (run)", "group commits"),
        ]
        for name, (n, _src) in workloads.items():
            med: dict[str, dict[str, float]] = {}
            for mode in ("--fsync", "--no-fsync"):
                s = stats[(name, mode)]
                med[mode] = {k: median([x[k] for x in s]) for k in ("total", "run", "commits")}
                rows.append(
                    (
                        f"{n:,} x {name}",
                        mode,
                        spread(times[f"{name}|{mode}"]),
                        f"{med[mode]['run']:.2f} s",
                        per_s(n, med[mode]["run"]),
                        f"{med[mode]['commits']:.0f}",
                    )
                )
            on, off = med["--fsync"], med["--no-fsync"]
            per_commit = (on["run"] - off["run"]) / max(1.0, on["commits"]) * 1000
            rows.append(
                (
                    f"{n:,} x {name}",
                    "fsync / no-fsync",
                    f"{on['total'] / off['total']:.2f}x",
                    f"{on['run'] / off['run']:.2f}x",
                    "",
                    f"~{per_commit:.1f} ms/commit" if per_commit > 0 else "within noise",
                )
            )
        print(table(f"Durability: --fsync vs --no-fsync, {j} workers ({machine_line()})", rows))
        if args.keep:
            print(f"kept {work}")
        return rows
    finally:
        if not args.keep:
            cleanup(work)


if __name__ == "__main__":
    main()
