"""Where the time of a shell item goes: the engine's way of running commands against other designs.

    python -m bench.bench_shell_designs [--items 3000] [--workers 2] [--reps 5]

Issue 22 asks for batchtui at or under xargs on `true` items. This bench separates the parts of
batchtui's time, each measured in this process (no interpreter start-up, no batch files), on N
`true` commands (a dash builtin: each item is one `/bin/sh -c true`), interleaved round by round
with the peers:

  xargs         xargs -P J -n1 true (issue 22's peer: it execs /usr/bin/true)
  xargs-sh      xargs -P J -n1 sh -c true (one shell per item, as batchtui runs them)
  threads       J threads taking items from one queue, each calling ShellProcessor.run: what
                the thread executor's workers do, without the runner, the store or the outbox
  event loop    ONE thread keeping J commands running: started with the same glibc spawner,
                their exits seen through pidfds and their pipes read in one epoll. No thread per
                worker and no GIL hand-off, the design the issue 22 note of 2026-12-03 proposed
  floor         a fresh interpreter that imports what any CLI on batchtui's stack imports (click,
                pydantic's BaseModel) and then runs the threads design: a Python tool that runs
                commands as batchtui does and records nothing. What no bookkeeping and no
                start-up work of batchtui's own could beat: if the floor is over xargs, so is
                every design in this interpreter
  engine        `batchtui run --cmd true --headless -j J`, end to end (start-up included); its
                report.json gives the run phase alone ("engine run phase")

What it showed on this machine (2 cores, 2026-12-03, quiet, 3,000 items, medians of 5): threads
0.96x xargs-sh, the event loop 0.99x, the engine's run phase 1.19x, the engine end to end 1.62x.
The event loop saves nothing: a start through posix_spawn keeps its caller until the child has
exec'd, so one thread keeps only as many commands going as it can start one after the other,
while threads start them side by side (the glibc spawner releases the GIL); under load it fell
further behind than the threads. What separates batchtui from xargs is not how commands are run
but the durable bookkeeping of the run phase (about 0.06 ms an item) and the interpreter's
start-up (about 0.35 s).

The floor, added 2026-12-06 (quiet, 3,000 items, medians of 5): see bench/HISTORY.md. It is the
answer to issue 22's point 1 on `true`: whether <= 1.0x xargs is reachable at all here.
"""

from __future__ import annotations

import argparse
import collections
import os
import select
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from batchtui.engine.shell import spawn
from batchtui.engine.shell.item import Item
from batchtui.engine.shell.itemfiles import ITEM_VARS
from batchtui.engine.shell.processor import ShellProcessor
from bench.common import (
    BATCHTUI,
    ROOT,
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
    workdir,
    write_lines,
)


def threads_design(items: list[Item], workers: int) -> float:
    """J threads calling ShellProcessor.run on items from one queue; the seconds it took."""
    processor = ShellProcessor("true")
    todo = collections.deque(items)
    failed: list[BaseException] = []

    def work() -> None:
        while True:
            try:
                item = todo.popleft()
            except IndexError:
                return
            try:
                processor.run(item)
            except BaseException as exc:  # a failed `true` would make the figure meaningless
                failed.append(exc)
                return

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - t0
    assert not failed, failed[:3]
    return seconds


def floor_main(n: int, workers: int, scratch: str) -> None:
    """The ``floor`` contender, in its own fresh interpreter: the stack's imports, then the
    threads design on ``n`` items (see the module's text)."""
    import click  # noqa: F401  (what the floor pays for)
    from pydantic import BaseModel  # noqa: F401

    threads_design([Item(i, str(i), f"item-{i}", 1, scratch) for i in range(n)], workers)


def loop_design(n: int, workers: int) -> float:
    """One thread keeping ``workers`` `sh -c true` running (pidfd + epoll); the seconds it took."""
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    launcher = spawn.launcher("/bin/sh", env, ITEM_VARS, None)
    values = tuple(b"x" for _ in ITEM_VARS)
    poller = select.epoll()
    owner: dict[int, spawn.Child] = {}  # descriptor -> its child
    open_fds: dict[int, set[int]] = {}  # child pid -> descriptors not yet at their end
    started = done = 0
    t0 = time.perf_counter()
    while done < n:
        while started < n and len(open_fds) < workers:
            child = launcher.start("true", values)
            pidfd = os.pidfd_open(child.pid)
            fds = {pidfd, child.stdout, child.stderr}
            for fd in fds:
                poller.register(fd, select.EPOLLIN)
                owner[fd] = child
            open_fds[child.pid] = fds
            started += 1
        for fd, _event in poller.poll():
            child = owner[fd]
            if fd in (child.stdout, child.stderr) and os.read(fd, 1 << 16):
                continue
            poller.unregister(fd)
            del owner[fd]
            left = open_fds[child.pid]
            left.discard(fd)
            if fd not in (child.stdout, child.stderr):
                os.close(fd)  # the pidfd; the pipes are closed by reap()
            if not left:
                del open_fds[child.pid]
                code = child.reap()
                assert code == 0, code
                done += 1
    poller.close()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    if not shutil.which("xargs"):
        sys.exit("xargs is needed")
    if not hasattr(os, "pidfd_open") or not hasattr(select, "epoll"):
        sys.exit("the event-loop design needs Linux (pidfd_open, epoll)")
    n, j = args.items, args.workers
    work = workdir("bench-shell-designs-")
    scratch = Path(tempfile.mkdtemp(dir=work))
    try:
        src = write_lines(work / "items.txt", n)
        items = [Item(i, str(i), f"item-{i}", 1, str(scratch)) for i in range(n)]
        run_phase: list[float] = []
        counter = [0]

        def xargs_sh() -> float:
            with src.open("rb") as fh:
                return check(
                    run_timed(["xargs", "-P", str(j), "-n1", "sh", "-c", "true"], stdin=fh, rss_interval=None), "xargs"
                ).seconds

        def xargs_true() -> float:
            with src.open("rb") as fh:
                return check(
                    run_timed(["xargs", "-P", str(j), "-n1", "true"], stdin=fh, rss_interval=None), "xargs"
                ).seconds

        floor_code = (
            "import sys; from bench.bench_shell_designs import floor_main; "
            "floor_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])"
        )
        floor_env = env_for(work / "floor")

        def floor() -> float:
            cmd = [sys.executable, "-c", floor_code, str(n), str(j), str(scratch)]
            return check(run_timed(cmd, env=floor_env, cwd=ROOT, rss_interval=None), "floor").seconds

        def engine() -> float:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            cmd = [*BATCHTUI, "run", str(src), "--cmd", "true", "--headless", "--workers", str(j)]
            t = check(run_timed(cmd, env=env_for(out), cwd=work, rss_interval=None), "batchtui run")
            report = read_json(only_batch(out) / "report.json")
            assert report["totals"]["complete"] == n, report["totals"]
            run_phase.append(float(report["duration_s"]))
            cleanup(out)
            return t.seconds

        runners = {
            "xargs": xargs_true,
            "xargs-sh": xargs_sh,
            "threads": lambda: threads_design(items, j),
            "event loop": lambda: loop_design(n, j),
            "floor": floor,
            "engine": engine,
        }
        engine()  # warm the bytecode cache and the page cache
        floor()
        run_phase.clear()
        times = interleave(args.reps, runners)
        base = median(times["xargs-sh"])
        rows: list[tuple[str, ...]] = [
            ("design", "seconds (rounds)", "per item", f"/ xargs-sh -P{j}", f"/ xargs -P{j} (per round)")
        ]
        for name, values in times.items():
            ratio, _ = round_ratios(values, times["xargs"])
            per_item = f"{median(values) / n * 1000:.3f} ms"
            rows.append((name, spread(values), per_item, f"{median(values) / base:.2f}x", f"{ratio:.2f}x"))
        phase = median(run_phase)
        rows.append(("engine run phase", f"{phase:.3f}", f"{phase / n * 1000:.3f} ms", f"{phase / base:.2f}x", ""))
        print(machine_line())
        print(table(f"{n} x `sh -c true`, {j} at a time, medians of {args.reps} interleaved rounds", rows))
        return rows
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
