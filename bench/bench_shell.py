"""Shell items: N trivial commands (`true`) through batchtui against xargs and GNU parallel.

    python -m bench.bench_shell [--items 3000] [--reps 5] [--workers 2]

Contenders, on the same items file (N distinct lines), interleaved round by round (the order
rotates), median of --reps rounds:

  xargs     xargs -P2 -n1 true < items
  xargs-sh  xargs -P2 -n1 sh -c true < items   (reference: one /bin/sh per item, as batchtui)
  parallel  parallel --will-cite -j2 --joblog LOG true :::: items
  batchtui  batchtui run items --cmd true --headless --workers 2

A real workload follows (--gzip-files, default all): gzip -n of the standard library's .py files
(1,790 files, about 34 MB on CPython 3.11), each output to its own file, by xargs -P2, GNU
parallel and batchtui; the outputs of every round are checked byte for byte against xargs'.
xargs needs `sh -c` for the redirection; batchtui's template is one command with one
redirection, which it starts without dash where /bin/sh is dash (engine/shell/direct.py: the
same outcome as through dash), so it pays one process per item there, xargs two. `true` is a
dash builtin: batchtui runs it through dash, xargs execs /usr/bin/true.

Targets (issue 6): batchtui <= 1.25x xargs' time; GNU parallel >= 3x batchtui's time.
Targets (issue 22): batchtui <= 1.0x xargs on both workloads, while durable.
Start-up is measured on its own (bare interpreter, the CLI's imports, a 1-item run) so the
per-item cost can be told apart from the fixed cost. No RSS sampler runs during the timed
rounds (it would steal CPU on a 2-core machine); batchtui's peak RSS comes from its report.
CPU is user+system of the whole process tree (every reaped child included). After the timed
rounds, one more run of batchtui and of xargs each, with /proc/stat sampled every 10 ms, says how
much of the machine stayed idle in the first 0.25 s (batchtui's start-up, on one core) and after
(a run bound by CPU leaves little: its time then follows its CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import (
    BATCHTUI,
    check,
    cleanup,
    env_for,
    have,
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

TARGET_VS_XARGS = 1.25  # issue 6
TARGET_VS_XARGS_NOW = 1.0  # issue 22: the target this bench is judged by
TARGET_PARALLEL_VS_US = 3.0


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=3000, help="commands to run [3000]")
    ap.add_argument("--reps", type=int, default=5, help="rounds; the median is reported [5]")
    ap.add_argument("--workers", type=int, default=2, help="parallel jobs for every tool [2]")
    ap.add_argument("--no-parallel", action="store_true", help="skip GNU parallel (the slowest contender)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (printed) for inspection")
    ap.add_argument("--gzip-files", type=int, default=-1, help="stdlib files to gzip (0: skip; -1: all) [-1]")
    args = ap.parse_args(argv)
    n, j = args.items, str(args.workers)

    work = workdir("bt-shell-")
    try:
        items = write_lines(work / "items.txt", n)
        one = write_lines(work / "one.txt", 1)
        engine_stats: list[dict[str, float]] = []
        cpu: dict[str, list[float]] = {}
        counter = [0]
        pyenv = env_for(work / "py")  # the same environment and bytecode cache as the batchtui runs

        def batchtui(src: Path, record: bool) -> float:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            cmd = [*BATCHTUI, "run", str(src), "--cmd", "true", "--headless", "--workers", j]
            t = check(run_timed(cmd, env=env_for(out), cwd=work, rss_interval=None), "batchtui run")
            if record:
                rep = read_json(only_batch(out) / "report.json")
                assert rep["totals"]["complete"] == n, rep["totals"]
                engine_stats.append(
                    {
                        "duration_s": rep["duration_s"],
                        "peak_mb": rep["peak_memory_mb"],
                        "engine_cpu_s": rep.get("engine_cpu_s", 0.0),
                        "children_cpu_s": rep.get("children_cpu_s", 0.0),
                    }
                )
                cpu.setdefault("batchtui", []).append(t.cpu_s)
            cleanup(out)
            return t.seconds

        def xargs(name: str, *command: str) -> float:
            with items.open("rb") as fh:
                t = run_timed(["xargs", "-P", j, "-n1", *command], stdin=fh, cwd=work, rss_interval=None)
            cpu.setdefault(name, []).append(check(t, "xargs").cpu_s)
            return t.seconds

        def parallel() -> float:
            log = work / "parallel.log"
            t = run_timed(
                ["parallel", "--will-cite", "-j", j, "--joblog", str(log), "true", "::::", str(items)],
                cwd=work,
                rss_interval=None,
            )
            cpu.setdefault("parallel", []).append(check(t, "parallel").cpu_s)
            jobs = log.read_text().count("\n") - 1  # a header line, then one line a job
            assert jobs == n, f"parallel joblog has {jobs} jobs, expected {n}"
            log.unlink()
            return t.seconds

        def python(code: str) -> float:
            return check(run_timed([sys.executable, "-c", code], env=pyenv, rss_interval=None), "python").seconds

        runners = {
            "xargs": lambda: xargs("xargs", "true"),
            "xargs-sh": lambda: xargs("xargs-sh", "sh", "-c", "true"),
            "batchtui": lambda: batchtui(items, True),
        }
        use_parallel = not args.no_parallel and have("parallel")
        if use_parallel:
            runners["parallel"] = parallel
        else:
            print("note: GNU parallel skipped" + ("" if args.no_parallel else " (not installed)"), file=sys.stderr)

        # warm-up: page cache, bytecode cache
        xargs("warm-up", "true")
        batchtui(one, False)
        python("import batchtui.tui.cli")
        times = interleave(args.reps, runners)

        # start-up: the fixed costs, measured alone
        start = interleave(
            args.reps,
            {
                "python -c pass": lambda: python("pass"),
                "imports": lambda: python("import batchtui.tui.cli"),
                "one item": lambda: batchtui(one, False),
            },
        )

        def cpu_ms(name: str) -> str:
            return f"{median(cpu[name]) / n * 1000:.2f}" if cpu.get(name) else ""

        t_x, t_xs, t_b = median(times["xargs"]), median(times["xargs-sh"]), median(times["batchtui"])
        t_p = median(times["parallel"]) if use_parallel else float("nan")
        t_one, t_imp, t_py = median(start["one item"]), median(start["imports"]), median(start["python -c pass"])
        eng_dur = median([s["duration_s"] for s in engine_stats])
        peak = max(s["peak_mb"] for s in engine_stats)

        r_x, r_x_text = round_ratios(times["batchtui"], times["xargs"])
        rows: list[tuple[str, ...]] = [
            ("contender", "time (median, range)", "items/s", "CPU ms/item", "vs target"),
            (f"xargs -P{j} -n1 true", spread(times["xargs"]), per_s(n, t_x), cpu_ms("xargs"), ""),
            (f"xargs -P{j} -n1 sh -c true (ref)", spread(times["xargs-sh"]), per_s(n, t_xs), cpu_ms("xargs-sh"), ""),
        ]
        if use_parallel:
            rows.append((f"parallel -j{j} --joblog", spread(times["parallel"]), per_s(n, t_p), cpu_ms("parallel"), ""))
        rows += [
            (f"batchtui run --cmd true -j{j}", spread(times["batchtui"]), per_s(n, t_b), cpu_ms("batchtui"), ""),
            ("batchtui / xargs (per round)", r_x_text, "", "", f"<= {TARGET_VS_XARGS_NOW}  {verdict(r_x, TARGET_VS_XARGS_NOW, at_most=True)}"),
            ("  (issue 6's target)", "", "", "", f"<= {TARGET_VS_XARGS}  {verdict(r_x, TARGET_VS_XARGS, at_most=True)}"),
        ]  # fmt: skip
        if use_parallel:
            r_p = t_p / t_b
            ok = verdict(r_p, TARGET_PARALLEL_VS_US, at_most=False)
            rows.append(("parallel / batchtui", f"{r_p:.2f}x", "", "", f">= {TARGET_PARALLEL_VS_US}  {ok}"))
        rows.append(("batchtui / xargs-sh (same exec path)", f"{t_b / t_xs:.2f}x", "", "", ""))
        print(table(f"Shell: {n:,} x `true`, {j} workers ({machine_line()})", rows))

        steady = (t_b - t_one) / max(1, n - 1)
        srows: list[tuple[str, ...]] = [
            ("measure", "value", "share of batchtui's run"),
            ("python -c pass (bare interpreter)", f"{t_py * 1000:.0f} ms", f"{t_py / t_b:.0%}"),
            ("python -c 'import batchtui.tui.cli'", f"{t_imp * 1000:.0f} ms", f"{t_imp / t_b:.0%}"),
            ("batchtui run on 1 item (all fixed costs)", f"{t_one * 1000:.0f} ms", f"{t_one / t_b:.0%}"),
            ("engine run phase (report.json duration_s)", f"{eng_dur:.2f} s", f"{eng_dur / t_b:.0%}"),
            (
                "batchtui per item after start-up",
                f"{steady * 1000:.3f} ms  ({1 / steady:,.0f}/s)" if steady > 0 else "n/a",
                "",
            ),
            ("xargs per item", f"{t_x / n * 1000:.3f} ms", ""),
            ("batchtui / xargs without start-up", f"{(t_b - t_one) / t_x:.2f}x" if steady > 0 else "n/a", ""),
            ("batchtui engine peak RSS (report.json)", f"{peak:.0f} MB", ""),
        ]
        srows += cpu_rows(engine_stats, cpu, times, n)
        if os.path.exists("/proc/stat"):
            idle_out = work / "idle-out"
            batchtui_cmd = [*BATCHTUI, "run", str(items), "--cmd", "true", "--headless", "--workers", j]
            srows.append(idle_row("batchtui", batchtui_cmd, env_for(idle_out), work))
            srows.append(idle_row("xargs", ["xargs", "-P", j, "-n1", "true"], None, work, stdin=items))
            cleanup(idle_out)
        print(table("Shell: batchtui start-up and per-item cost", srows))
        if args.gzip_files:
            srows += gzip_bench(work, args, use_parallel)
        if args.keep:
            print(f"kept {work}")
        return rows + srows
    finally:
        if not args.keep:
            cleanup(work)


def cpu_rows(
    engine_stats: list[dict[str, float]], cpu: dict[str, list[float]], times: dict[str, list[float]], n: int
) -> list[tuple[str, ...]]:
    """Where batchtui's CPU goes (report.json: the engine's run phase, its commands; the rest is
    the start-up and the end), against xargs' whole tree, and how busy each kept the cores. With
    the cores full, the time follows the CPU: batchtui's start-up and engine have to fit in what
    its commands save against xargs' (dash here costs less than xargs' /usr/bin/true)."""
    if not engine_stats or not cpu.get("batchtui") or not cpu.get("xargs"):
        return []
    engine = median([s["engine_cpu_s"] for s in engine_stats])
    children = median([s["children_cpu_s"] for s in engine_stats])
    tree = median(cpu["batchtui"])
    cores = os.cpu_count() or 1

    def busy(name: str) -> str:
        return f"{median(cpu[name]) / median(times[name]):.2f} of {cores}"

    return [
        ("batchtui CPU: the engine's run phase, per item", f"{engine / n * 1000:.3f} ms", ""),
        ("batchtui CPU: its commands (sh -c true), per item", f"{children / n * 1000:.3f} ms", ""),
        ("batchtui CPU: start-up and end (the rest)", f"{max(tree - engine - children, 0.0) * 1000:.0f} ms", ""),
        ("batchtui CPU, all / xargs' tree CPU", f"{tree / median(cpu['xargs']):.2f}x", ""),
        ("cores busy: batchtui, xargs", f"{busy('batchtui')}; {busy('xargs')}", ""),
    ]


#: How long the start of a run is (the idle share is given for it and for the rest apart).
IDLE_HEAD_S = 0.25


def idle_row(
    name: str, cmd: list[str], env: dict[str, str] | None, cwd: Path, stdin: Path | None = None
) -> tuple[str, ...]:
    """How much of the machine stays idle while ``cmd`` runs once more (an extra round, not
    timed): /proc/stat's idle and iowait time over all cores, sampled every 10 ms, over the
    first IDLE_HEAD_S seconds (batchtui's start-up runs on one core) and over the rest. A run
    bound by CPU leaves little idle: its time then follows its CPU. The whole machine's: other
    load shows too."""
    samples: list[tuple[float, int, int]] = []
    with open(stdin or os.devnull, "rb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=fh, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        while proc.poll() is None:
            samples.append((time.perf_counter(), *_cpu_idle_total()))
            time.sleep(0.01)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited {proc.returncode} in the idle round")
    end = samples[-1][0] if samples else t0
    head, rest = _idle_share(samples, t0, t0 + IDLE_HEAD_S), _idle_share(samples, t0 + IDLE_HEAD_S, end)
    return (f"machine idle while {name} runs: first {IDLE_HEAD_S} s / after", f"{head} / {rest}", "")


def _idle_share(samples: list[tuple[float, int, int]], start: float, end: float) -> str:
    inside = [x for x in samples if start <= x[0] <= end]
    if len(inside) < 2:
        return "n/a"
    return f"{(inside[-1][1] - inside[0][1]) / max(1, inside[-1][2] - inside[0][2]):.0%}"


def _cpu_idle_total() -> tuple[int, int]:
    """(idle + iowait, all) jiffies of every core since boot, from /proc/stat's first line."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def stdlib_files(limit: int) -> list[Path]:
    """The standard library's .py files (site-packages left out), in a stable order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.rglob("*.py") if "site-packages" not in p.parts and p.is_file())
    return files if limit < 0 else files[:limit]


def digests(folder: Path) -> list[str]:
    """The sorted sha256 of every file in ``folder`` (the outputs, whatever their names)."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir())


def gzip_bench(work: Path, args: argparse.Namespace, use_parallel: bool) -> list[tuple[str, ...]]:
    """gzip -n of stdlib files: xargs -P2, GNU parallel and batchtui, outputs checked alike."""
    files = stdlib_files(args.gzip_files)
    n, j = len(files), str(args.workers)
    size = sum(p.stat().st_size for p in files)
    paths = work / "gzip-items.txt"
    paths.write_text("".join(f"{p}\n" for p in files))
    numbered = work / "gzip-numbered.txt"  # "SEQ PATH" per line, for xargs -n2
    numbered.write_text("".join(f"{i} {p}\n" for i, p in enumerate(files)))
    expected: list[list[str]] = []
    counter = [0]

    def fresh(name: str) -> Path:
        counter[0] += 1
        folder = work / f"gz-{name}-{counter[0]}"
        folder.mkdir()
        return folder

    def verify(folder: Path, name: str) -> None:
        got = digests(folder)
        if not expected:
            expected.append(got)
        assert len(got) == n and got == expected[0], f"{name}: outputs differ from xargs'"
        cleanup(folder)

    def xargs() -> float:
        out = fresh("xargs")
        script = f'gzip -n -c "$1" > {out}/"$0".gz'
        with numbered.open("rb") as fh:
            t = run_timed(["xargs", "-P", j, "-n2", "sh", "-c", script], stdin=fh, cwd=work, rss_interval=None)
        check(t, "xargs gzip")
        verify(out, "xargs")
        return t.seconds

    def parallel() -> float:
        out = fresh("parallel")
        log = work / "gz-parallel.log"
        cmd = ["parallel", "--will-cite", "-j", j, "--joblog", str(log), f"gzip -n -c {{}} > {out}/{{#}}.gz"]
        t = check(run_timed([*cmd, "::::", str(paths)], cwd=work, rss_interval=None), "parallel gzip")
        log.unlink()
        verify(out, "parallel")
        return t.seconds

    def batchtui() -> float:
        out, runs = fresh("batchtui"), work / f"gz-runs-{counter[0]}"
        cmd = [
            *BATCHTUI,
            "run",
            str(paths),
            "--cmd",
            f"gzip -n -c {{}} > {out}/{{seq}}.gz",
            "--headless",
            "--workers",
            j,
        ]
        t = check(run_timed(cmd, env=env_for(runs), cwd=work, rss_interval=None), "batchtui gzip")
        rep = read_json(only_batch(runs) / "report.json")
        assert rep["totals"]["complete"] == n, rep["totals"]
        cleanup(runs)
        verify(out, "batchtui")
        return t.seconds

    xargs()  # warm-up (page cache) and the reference outputs
    runners: dict[str, Callable[[], float]] = {"xargs": xargs, "batchtui": batchtui}
    if use_parallel:
        runners["parallel"] = parallel
    times = interleave(args.reps, runners)
    t_x, t_b = median(times["xargs"]), median(times["batchtui"])
    r_x, r_x_text = round_ratios(times["batchtui"], times["xargs"])
    rows: list[tuple[str, ...]] = [
        ("contender", "time (median, range)", "items/s", "vs target"),
        (f"xargs -P{j} -n2 sh -c 'gzip -n -c ...'", spread(times["xargs"]), per_s(n, t_x), ""),
    ]
    if use_parallel:
        t_p = median(times["parallel"])
        rows.append((f"parallel -j{j} --joblog 'gzip ...'", spread(times["parallel"]), per_s(n, t_p), ""))
    rows += [
        (f"batchtui run --cmd 'gzip ...' -j{j}", spread(times["batchtui"]), per_s(n, t_b), ""),
        ("batchtui / xargs (per round)", r_x_text, "", f"<= 1.0  {verdict(r_x, 1.0, at_most=True)}"),
    ]
    if use_parallel:
        rows.append(("parallel / batchtui", f"{median(times['parallel']) / t_b:.2f}x", "", ""))
    title = f"Shell: gzip -n of {n:,} stdlib .py files ({size / 1e6:.1f} MB), outputs identical ({machine_line()})"
    print(table(title, rows))
    return rows


if __name__ == "__main__":
    main()
