"""The dask executor on an existing cluster against a bare ``client.map`` + ``as_completed``
(issue 22.3).

    python -m bench.bench_dask_map [--items 2000] [--ms 10] [--reps 3] [--workers 2]

One LocalCluster (--workers processes, one thread each) is started here and left running for
every round; each contender connects to it as a client would, from its own process:

  bare      python -c: Client(addr); for f in as_completed(client.map(work, items, pure=False)):
            f.result()   (each item sleeps --ms, a function importable on the workers)
  batchtui  batchtui run items --call bench/procs.py:nap --executor dask --scheduler addr

Interleaved round by round: the median of --reps, and batchtui / bare as the median of the
per-round ratios. Time: the whole process (connect, run, results). CPU (medians): the client
process, and the cluster's (the scheduler, in this process, and the worker processes), which a
busy 2-core machine shares with the client; it tells where an overhead goes when wall times
drift. Tasks per item: the tasks the scheduler ran (an item is one task of the bare client; a
chunk of items is one task of batchtui's). Target: batchtui <= 1.05x the bare client.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

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
    round_ratios,
    run_timed,
    spread,
    table,
    verdict,
    workdir,
    write_lines,
)

TARGET = 1.05

BARE = r"""
import sys
sys.path.insert(0, {bench!r})
from distributed import Client, as_completed
from procs import nap
with Client({addr!r}) as client:
    done = 0
    for future in as_completed(client.map(nap, range({n}), pure=False)):
        future.result()
        done += 1
assert done == {n}
"""


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000, help="items [2000]")
    ap.add_argument("--ms", type=float, default=10.0, help="milliseconds each item sleeps [10]")
    ap.add_argument("--reps", type=int, default=3, help="rounds; the median is reported [3]")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the cluster [2]")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("distributed") is None:
        print("bench_dask_map: dask is not installed (pip install 'batchtui[dask]'); skipped")
        return []
    from distributed import LocalCluster

    n, j = args.items, args.workers
    work = workdir("bt-daskmap-")
    os.environ["BENCH_NAP_S"] = str(args.ms / 1000)  # the workers inherit it
    sys.path.insert(0, str(PROCS.parent))  # the workers import bench/procs.py as `procs`
    cluster = LocalCluster(n_workers=j, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        addr = cluster.scheduler_address
        items = write_lines(work / "items.txt", n)
        env = env_for(work / "py")
        counter = [0]

        def bare() -> tuple[float, float]:
            code = BARE.format(bench=str(PROCS.parent), addr=addr, n=n)
            t = check(run_timed([sys.executable, "-c", code], env=env, cwd=work, rss_interval=None), "bare")
            return t.seconds, t.cpu_s

        def batchtui() -> tuple[float, float]:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            cmd = [
                *BATCHTUI, "run", str(items), "--call", f"{PROCS}:nap", "--executor", "dask",
                "--scheduler", addr, "--workers", str(j), "--headless",
            ]  # fmt: skip
            t = check(run_timed(cmd, env=env_for(out), cwd=work, rss_interval=None), "batchtui")
            rep = read_json(only_batch(out) / "report.json")
            assert rep["totals"]["complete"] == n, rep["totals"]
            cleanup(out)
            return t.seconds, t.cpu_s

        workers = psutil.Process().children(recursive=True)
        cpu: dict[str, list[tuple[float, float]]] = {"bare": [], "batchtui": []}
        tasks: dict[str, list[int]] = {"bare": [], "batchtui": []}
        ran = _task_counter()
        cluster.scheduler.add_plugin(ran)

        def with_cpu(name: str, run: Callable[[], tuple[float, float]]) -> Callable[[], float]:
            def measured() -> float:
                cluster0, tasks0 = time.process_time() + _cpu(workers), ran.count
                seconds, client_cpu = run()
                cpu[name].append((client_cpu, time.process_time() + _cpu(workers) - cluster0))
                tasks[name].append(ran.count - tasks0)
                return seconds

            return measured

        bare()  # warm-up: the workers import what they need once
        batchtui()
        times = interleave(args.reps, {"bare": with_cpu("bare", bare), "batchtui": with_cpu("batchtui", batchtui)})
        t_bare, t_b = median(times["bare"]), median(times["batchtui"])
        ratio, ratio_text = round_ratios(times["batchtui"], times["bare"])

        def cpu_text(name: str) -> str:
            client, cluster = (median([c[i] for c in cpu[name]]) for i in (0, 1))
            return f"{client:.2f} s + {cluster:.2f} s"

        def per_item(name: str) -> str:
            return f"{median(tasks[name]) / n:.2f}"

        rows: list[tuple[str, ...]] = [
            ("contender", "time (median, range)", "items/s", "CPU client + cluster", "tasks/item", "vs target"),
            (
                "client.map + as_completed (bare)",
                spread(times["bare"]),
                per_s(n, t_bare),
                cpu_text("bare"),
                per_item("bare"),
                "",
            ),
            (
                f"batchtui --executor dask --scheduler -j{j}",
                spread(times["batchtui"]),
                per_s(n, t_b),
                cpu_text("batchtui"),
                per_item("batchtui"),
                "",
            ),
            ("batchtui / bare", ratio_text, "", "", "", f"<= {TARGET}  {verdict(ratio, TARGET, at_most=True)}"),
            ("ideal (items x ms / workers)", f"{n * args.ms / 1000 / j:.2f} s", "", "", "", ""),
        ]
        title = f"Dask, an existing {j}-worker cluster: {n:,} items of {args.ms:g} ms ({machine_line()})"
        print(table(title, rows))
        return rows
    finally:
        cluster.close()
        cleanup(work)


def _task_counter() -> Any:
    """A scheduler plugin (the scheduler runs in this process): ``.count``, the tasks that ran
    to the end."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class TaskCounter(SchedulerPlugin):  # type: ignore[misc]
        name = "bench-task-counter"

        def __init__(self) -> None:
            self.count = 0

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
            if finish == "memory":
                self.count += 1

    return TaskCounter()


def _cpu(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` so far (those gone count nothing)."""
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


if __name__ == "__main__":
    main()
