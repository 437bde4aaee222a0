"""Failing items: what a failure and a retry cost, against the same items succeeding and a bare pool.

    python -m bench.bench_failures [--items 60000] [--reps 3] [--workers 2]

Quick Python calls (bench/procs.py), interleaved round by round, median of --reps:

  fail      fail_most: 60% of the items raise a ValueError naming the item (--max-attempts 1:
            failed for good, no backoff to wait out); batchtui on the thread and the process
            executor, against a bare ThreadPoolExecutor / ProcessPoolExecutor map of the same
            calls that catches each failure and keeps its traceback.format_exc() (what a script
            does to say what failed; it records nothing durably)
  ok        noop: the same items all succeeding, through batchtui (the cost of a failure is
            the difference)
  retries   flaky_once: every 10th item's first attempt fails with a ConnectionError
            (transient), retried after --backoff 0.2; the engine's CPU against the ok run's
            (the run's wall is mostly the backoff waited out, by design)

batchtui's time is its run phase (report.json duration_s: after the enqueue), a peer's its
map, as in bench_pool. Target: a failing run <= 1.5x the bare pool of the same executor kind
(which keeps each traceback in memory, and nothing durably); the ratio to batchtui's own run of
the same items succeeding is shown, what a failure costs over a success.
"""

from __future__ import annotations

import argparse
import re
import sys

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
    round_ratios,
    run_timed,
    spread,
    table,
    verdict,
    workdir,
    write_lines,
)

TARGET_VS_PEER = 1.5

PEER = r"""
import sys, time, traceback
sys.path.insert(0, {bench!r})
from procs import fail_most
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


class Item:  # what the call reads of batchtui's item
    __slots__ = ("seq", "attempt")

    def __init__(self, seq):
        self.seq, self.attempt = seq, 1


def call(seq):
    try:
        return True, fail_most(Item(seq))
    except Exception:
        return False, traceback.format_exc()


if __name__ == "__main__":
    pool = (ThreadPoolExecutor if {kind!r} == "thread" else ProcessPoolExecutor)({workers})
    t0 = time.perf_counter()
    failed = sum(not ok for ok, _ in pool.map(call, range({n}), chunksize={chunk}))
    pool.shutdown()
    print(f"run_s={{time.perf_counter() - t0:.6f}} failed={{failed}}", file=sys.stderr)
"""


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=60_000, help="items [60000]")
    ap.add_argument("--reps", type=int, default=3, help="rounds; the median is reported [3]")
    ap.add_argument("--workers", type=int, default=2, help="workers [2]")
    args = ap.parse_args(argv)
    n, j = args.items, args.workers
    failing = sum(1 for s in range(n) if s % 5 in (1, 2, 3))
    retried = sum(1 for s in range(n) if s % 10 == 4)
    work = workdir("bt-fail-")
    try:
        items = write_lines(work / "items.txt", n)
        script = work / "peer.py"
        runs: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        counter = [0]

        def peer(kind: str) -> float:
            script.write_text(PEER.format(bench=str(PROCS.parent), kind=kind, workers=j, n=n, chunk=256))
            t = check(run_timed([sys.executable, str(script)], cwd=work, rss_interval=None), f"peer {kind}")
            m = re.search(r"run_s=([\d.]+) failed=(\d+)", t.stderr)
            assert m and int(m.group(2)) == failing, t.stderr
            runs.setdefault(f"peer-{kind}", []).append(float(m.group(1)))
            return t.seconds

        def batchtui(name: str, call: str, executor: str, *extra: str) -> float:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            cmd = [
                *BATCHTUI, "run", str(items), "--call", f"{PROCS}:{call}", "--executor", executor,
                "--workers", str(j), "--headless", *extra,
            ]  # fmt: skip
            t = check(run_timed(cmd, env=env_for(out), cwd=work, rss_interval=None), name, ok=(0, 1))
            totals = read_json(only_batch(out) / "report.json")["totals"]
            want_failed = failing if call == "fail_most" else 0
            assert totals["failed"] == want_failed and totals["complete"] == n - want_failed, (name, totals)
            runs.setdefault(name, []).append(read_json(only_batch(out) / "report.json")["duration_s"])
            cpu.setdefault(name, []).append(t.cpu_s)
            cleanup(out)
            return t.seconds

        contenders = {
            "peer-thread": lambda: peer("thread"),
            "peer-process": lambda: peer("process"),
            "fail-thread": lambda: batchtui("fail-thread", "fail_most", "thread", "--max-attempts", "1"),
            "fail-process": lambda: batchtui("fail-process", "fail_most", "process", "--max-attempts", "1"),
            "ok-thread": lambda: batchtui("ok-thread", "noop", "thread"),
            "ok-process": lambda: batchtui("ok-process", "noop", "process"),
            "retry-process": lambda: batchtui("retry-process", "flaky_once", "process", "--backoff", "0.2"),
        }
        for run in contenders.values():  # warm-up: page cache, bytecode cache
            run()
        runs.clear()
        cpu.clear()
        interleave(args.reps, contenders)
        rows: list[tuple[str, ...]] = [("measure", "time (median, range)", "ratio", "vs target")]
        for kind in ("thread", "process"):
            ratio, rng = round_ratios(runs[f"fail-{kind}"], runs[f"peer-{kind}"])
            _, own_rng = round_ratios(runs[f"fail-{kind}"], runs[f"ok-{kind}"])
            rows += [
                (f"bare {kind} pool, 60% failing", spread(runs[f"peer-{kind}"]), "", ""),
                (f"batchtui --executor {kind}, 60% failing", spread(runs[f"fail-{kind}"]), "", ""),
                (f"batchtui --executor {kind}, all succeed", spread(runs[f"ok-{kind}"]), "", ""),
                (f"  failing / bare pool ({kind})", "", rng, f"<= {TARGET_VS_PEER}  {verdict(ratio, TARGET_VS_PEER, at_most=True)}"),
                (f"  failing / succeeding ({kind})", "", own_rng, ""),
            ]  # fmt: skip
        extra_cpu = median(cpu["retry-process"]) - median(cpu["ok-process"])
        rows += [
            (f"retries: {retried:,} transient, --backoff 0.2 (process)", spread(runs["retry-process"]), "", ""),
            (
                "  CPU of the whole run, retries / all succeed",
                f"{median(cpu['retry-process']):.2f} s / {median(cpu['ok-process']):.2f} s",
                f"{max(0.0, extra_cpu) / retried * 1e6:.0f} us a retry",
                "",
            ),
        ]
        title = f"Failures: {n:,} quick calls, {failing:,} failing, {j} workers ({machine_line()})"
        print(table(title, rows))
        return rows
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
