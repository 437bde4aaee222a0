"""Run every bench script and print all their tables; the combined text also goes to
bench/results/latest.txt (gitignored).

    python -m bench.run_all            # full: scale on 1,000,000 items (about 10 minutes on 2 cores)
    python -m bench.run_all --quick    # scale on 100,000 items, watch on 50,000, fewer rounds elsewhere
    python -m bench.run_all --only shell,inproc

Each bench runs in its own fresh interpreter (python -m bench.<name>), one after the other, so
one bench's memory or threads never weigh on the next. A bench that fails is reported and the
rest still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.common import HERE, ROOT, machine_line

RESULTS = HERE / "results"


def plan(quick: bool) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = [
        ("bench_shell", ["--reps", "3" if quick else "5"]),
        ("bench_shell_designs", ["--reps", "3" if quick else "5"]),
        ("bench_startup", ["--reps", "5" if quick else "9"]),
        ("bench_inproc", ["--reps", "2" if quick else "5"]),
        ("bench_pool", ["--reps", "3" if quick else "5"]),
        ("bench_failures", ["--items", "20000" if quick else "60000", "--reps", "2" if quick else "3"]),
        ("bench_dask_map", ["--items", "1000" if quick else "2000", "--reps", "2" if quick else "3"]),
        ("bench_durability", ["--reps", "2" if quick else "3"]),
        ("bench_scale", ["--items", "100000" if quick else "1000000"]),
    ]
    tui = HERE / "bench_tui_table.py"
    if tui.exists():
        extra: list[str] = []
        if quick:
            try:
                helptext = subprocess.run(
                    [sys.executable, "-m", "bench.bench_tui_table", "--help"],
                    cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                ).stdout  # fmt: skip
            except (OSError, subprocess.TimeoutExpired):
                helptext = ""
            if "--quick" in helptext:
                extra = ["--quick"]
        steps.append(("bench_tui_table", extra))
    steps.append(("bench_watch", ["--items", "50000", "--reps", "2"] if quick else []))
    steps.append(("bench_app", ["--items", "100000", "--reps", "2"] if quick else []))
    steps.append(("bench_browser", ["--idle", "5"] if quick else []))
    return steps


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev}{' (with uncommitted changes)' if dirty else ''}"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="scale on 100,000 items, watch on 50,000, fewer rounds elsewhere"
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma list of benches to run (shell,inproc,pool,dask_map,durability,scale,tui_table,watch,app,browser)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "latest.txt", help="combined text [bench/results/latest.txt]")
    args = ap.parse_args(argv)
    only = {f"bench_{x.strip().removeprefix('bench_')}" for x in args.only.split(",") if x.strip()}

    steps = [s for s in plan(args.quick) if not only or s[0] in only]
    header = [
        f"# batchtui benchmarks ({'quick' if args.quick else 'full'})",
        f"# {machine_line()}",
        f"# git {git_rev()}",
        f"# command: python -m bench.run_all{' --quick' if args.quick else ''}"
        + (f" --only {args.only}" if args.only else ""),
    ]
    text: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        text.append(line)

    for line in header:
        emit(line)
    failed: list[str] = []
    t_all = time.perf_counter()
    for name, extra in steps:
        cmd = [sys.executable, "-m", f"bench.{name}", *extra]
        emit(f"\n# --- {' '.join(['python', '-m', f'bench.{name}', *extra])}")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            emit(line.rstrip("\n"))
        rc = proc.wait()
        emit(f"# {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.0f} s")
        if rc != 0:
            failed.append(name)
    emit(f"\n# all done in {time.perf_counter() - t_all:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text) + "\n")
    print(f"(written to {args.out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
