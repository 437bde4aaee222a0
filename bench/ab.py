"""A/B: this checkout's batchtui against another commit's, on one run, interleaved round by round.

    python -m bench.ab --base REV [--head REV] [--reps 5] [--lines N] -- RUN-ARGS...

    python -m bench.ab --base 30c1c2f --lines 100000 -- \\
        run {items} --call bench/procs.py:noop --executor thread -j 2 --headless

A ratio against a peer measured in the same run hides a regression of the engine when the peer
drifts as much as the engine moved: on this VM a bare ThreadPoolExecutor.map read 1.47-1.87 s
across runs. The thread executor's run phase on 100,000 no-op calls went from 0.67x to 1.02x the
bare map between 2026-12-02 and 2026-12-06, unseen in every run's noise; run in turn with the
older commit it was 1.50-1.65 s against 0.87-0.96 s, and `git bisect run` over a script like
this one found the commit (a system call per item). This script is that comparison.

REV is checked out into a temporary git worktree (and --head's too, to compare two other commits,
a change against its parent say). Its batchtui is imported instead of this one
through PYTHONPATH: a ``batchtui`` package there whose ``__path__`` is the worktree, so
``batchtui.engine`` and ``batchtui.tui`` come from REV's files, in the CLI and in every process
it starts (pool workers inherit the environment). The installed dependencies are this venv's.
``{items}`` in RUN-ARGS is a file of --lines distinct lines, made once; each run writes to its
own output folder (BATCHTUI_OUTPUT_DIR) and gets a warm-up run first (bytecode, page cache).

For each side: the whole process's wall time, the run phase (report.json's duration_s) and the
CPU (user and system) of the run's processes, the engine's and every one it reaped (its pool
workers, its commands), the median of --reps rounds, and the per-round ratios of this checkout
to REV. On a busy 2-core VM the CPU moves less than the wall time: the items' own CPU is the
same on both sides, so what differs is what the engine adds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench.common import (
    BATCHTUI,
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

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def shim(folder: Path, source: Path) -> Path:
    """A folder for PYTHONPATH whose ``batchtui`` package is the checkout at ``source``."""
    package = folder / "batchtui"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import sys\n"
        f"__path__ = [{str(source)!r}]\n"
        "# This venv's editable install maps batchtui.* to this checkout: a module the other\n"
        "# commit lacks would come from here. Out of this process's finders.\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
    )
    return folder


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the commit to compare against (any git revision)")
    ap.add_argument("--head", help="a commit in place of this checkout (e.g. the change whose parent is --base)")
    ap.add_argument("--reps", type=int, default=5, help="rounds; the median is reported [5]")
    ap.add_argument("--lines", type=int, default=10000, help="distinct lines in {items} [10000]")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="after --: the batchtui arguments (a run)")
    args = ap.parse_args(argv)
    run_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not run_args:
        ap.error("give the batchtui arguments after --, e.g. -- run {items} --cmd true --headless")
    base = _git("rev-parse", "--verify", f"{args.base}^{{commit}}")
    head = _git("rev-parse", "--verify", f"{args.head}^{{commit}}") if args.head else _git("rev-parse", "HEAD")
    dirty = not args.head and bool(_git("status", "--porcelain", "--untracked-files=no"))
    work = workdir("bt-ab-")
    trees = [work / "base"] + ([work / "head"] if args.head else [])
    for tree, rev in zip(trees, (base, head), strict=False):
        _git("worktree", "add", "--detach", str(tree), rev)
    try:
        items = write_lines(work / "items.txt", args.lines)
        command = [a.replace("{items}", str(items)) for a in run_args]
        paths = {"base": str(shim(work / "shim-base", trees[0]))}
        if args.head:
            paths["head"] = str(shim(work / "shim-head", trees[1]))
        counter = [0]
        phases: dict[str, list[float]] = {"base": [], "head": []}
        cpus: dict[str, list[float]] = {"base": [], "head": []}

        def side(name: str, record: bool = True) -> float:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            env = env_for(out)
            if name in paths:
                env["PYTHONPATH"] = paths[name]
            # Exit 1 is a run with failed items (the exit codes' contract): a bench of failures.
            t = check(run_timed([*BATCHTUI, *command], env=env, cwd=ROOT, rss_interval=None), f"{name} run", (0, 1))
            if record:
                phases[name].append(float(read_json(only_batch(out) / "report.json")["duration_s"]))
                cpus[name].append(t.cpu_s)
            cleanup(out)
            return t.seconds

        side("base", record=False)  # warm-up: bytecode, page cache
        side("head", record=False)
        walls = interleave(args.reps, {"base": lambda: side("base"), "head": lambda: side("head")})
        r_wall, wall_text = round_ratios(walls["head"], walls["base"])
        r_run, run_text = round_ratios(phases["head"], phases["base"])
        r_cpu, cpu_text = round_ratios(cpus["head"], cpus["base"])
        label = f"{head[:7]}{' + changes' if dirty else ''}"
        this = f"head {label}" if args.head else f"this checkout {label}"
        rows: list[tuple[str, ...]] = [
            ("contender", "whole process (median, range)", "run phase (median, range)", "CPU, all its processes"),
            (f"base {base[:7]}", spread(walls["base"]), spread(phases["base"]), spread(cpus["base"])),
            (this, spread(walls["head"]), spread(phases["head"]), spread(cpus["head"])),
            ("head / base (per round)", wall_text, run_text, cpu_text),
        ]
        print(table(f"A/B: batchtui {' '.join(run_args)} ({machine_line()})", rows))
        print(f"medians: whole process {median(walls['head']):.3f} / {median(walls['base']):.3f} s ({r_wall:.2f}x), "
              f"run phase {median(phases['head']):.3f} / {median(phases['base']):.3f} s ({r_run:.2f}x), "
              f"CPU {median(cpus['head']):.3f} / {median(cpus['base']):.3f} s ({r_cpu:.2f}x)")  # fmt: skip
        return rows
    finally:
        for tree in trees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        cleanup(work)


if __name__ == "__main__":
    main(sys.argv[1:])
