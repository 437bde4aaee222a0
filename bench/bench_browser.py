"""What the batch browser costs at rest, with many batches.

    python -m bench.bench_browser [--batches 300] [--idle 10] [--reps 5]

One real batch is made (``batchtui run`` over 2 lines), then copied to --batches folders with ids
of their own, each ended an hour before the next (an hourly job's history: their ages move
once an hour, not every reading as those of batches made seconds ago do). Then:

  listing   the batches read whole, as the browser did every 2 s (``list_batches``: every
            manifest, live progress and lock), against a reading of the same batches by the
            browser's ``BatchLister`` once it has read them (a batch whose files did not change
            is not read again); in this process, median of --reps of each
  browser   ``batchtui --output-dir OUT`` forked onto a pseudo-terminal of 80x24, then of
            200x60 (bench_app's PtyApp): its CPU time (user + system, all threads) over --idle
            seconds after its first reading, as a share of one core; then ``q``

Targets: a reading again costs <= 0.5x a whole reading; the browser at rest takes <= 5% of a
core (its readings may take 4%: REFRESH_BUDGET; the app itself about 1% more).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psutil

from batchtui.engine.listing import BatchLister, list_batches
from bench.bench_app import PtyApp, cpu_s
from bench.common import (
    BATCHTUI,
    check,
    cleanup,
    env_for,
    machine_line,
    median,
    only_batch,
    run_timed,
    table,
    verdict,
    workdir,
    write_lines,
)

READ_AGAIN_TARGET = 0.5
IDLE_TARGET = 0.05  # of one core: REFRESH_BUDGET (0.04) and the app at rest


def make_batches(work: Path, n: int) -> Path:
    """``n`` batch folders in ``work/out``: one real batch and its copies."""
    made = work / "made"
    made.mkdir()
    env = env_for(made)
    env["BATCHTUI_STATE_DIR"] = str(work / "state")
    items = write_lines(work / "items.txt", 2)
    cmd = [*BATCHTUI, "run", str(items), "--as", "lines", "--cmd", "true {}", "--headless"]
    check(run_timed(cmd, env=env, cwd=work, rss_interval=None), "the batch to copy")
    real = only_batch(made)
    out = work / "out"
    out.mkdir()
    manifest = orjson.loads((real / "manifest.json").read_bytes())
    now = datetime.now(UTC)
    for i in range(n):
        copy = out / f"2026{i // 1000000 % 100:02d}01_{i % 1000000:06d}_{i:08x}"
        shutil.copytree(real, copy)
        manifest["ended_at"] = (now - timedelta(hours=n - i)).isoformat(timespec="milliseconds")
        (copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    return out


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=300, help="batch folders [300]")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds the browser is watched at rest [10]")
    ap.add_argument("--reps", type=int, default=5, help="readings of each kind; the median is reported [5]")
    args = ap.parse_args(argv)

    work = workdir("bt-browser-")
    try:
        out = make_batches(work, args.batches)
        whole: list[float] = []
        again: list[float] = []
        lister = BatchLister(out)
        lister.list()
        for _ in range(args.reps):
            t = time.perf_counter()
            list_batches(out)
            whole.append(time.perf_counter() - t)
            t = time.perf_counter()
            lister.list()
            again.append(time.perf_counter() - t)
            assert lister.read == 0, "a batch nothing touched was read again"

        idle: dict[str, float] = {}
        for cols, rows in ((80, 24), (200, 60)):
            env = env_for(out)
            env["BATCHTUI_STATE_DIR"] = str(work / "state")
            for name in ("COLUMNS", "LINES", "TERM_PROGRAM", "NO_COLOR", "TEXTUAL"):
                env.pop(name, None)
            env.update(TERM="xterm-256color", COLORTERM="truecolor", XDG_CONFIG_HOME=str(work / "xdg"))
            term = PtyApp([*BATCHTUI, "--output-dir", str(out)], env, work, size=(cols, rows))
            try:
                proc = psutil.Process(term.pid)
                time.sleep(5.0)  # started, and the batches read once
                before, t0 = cpu_s(proc), time.monotonic()
                time.sleep(args.idle)
                idle[f"{cols}x{rows}"] = (cpu_s(proc) - before) / (time.monotonic() - t0)
                term.send(b"q")
                term.wait_exit(60)
            finally:
                term.close()
    finally:
        cleanup(work)

    t_whole, t_again = median(whole), median(again)
    ratio = t_again / t_whole
    rows_out: list[tuple[str, ...]] = [
        ("What", "Value", "Ratio", "Target"),
        (
            f"{args.batches:,} batches read whole (list_batches, as every 2 s before)",
            f"{t_whole * 1000:.1f} ms",
            "",
            "",
        ),
        (
            "read again by the browser's BatchLister (nothing changed)",
            f"{t_again * 1000:.1f} ms",
            f"{ratio:.2f}x",
            f"<= {READ_AGAIN_TARGET}: {verdict(ratio, READ_AGAIN_TARGET, at_most=True)}",
        ),
    ]
    for size, share in idle.items():
        rows_out.append(
            (
                f"the browser at rest on a {size} pty ({args.idle:.0f} s)",
                f"{100 * share:.1f}% of a core",
                "",
                f"<= {IDLE_TARGET:.2f}: {verdict(share, IDLE_TARGET, at_most=True)}",
            )
        )
    print(machine_line())
    print(table(f"The batch browser at rest over {args.batches:,} batches", rows_out))
    return rows_out


if __name__ == "__main__":
    main(sys.argv[1:])
