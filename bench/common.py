"""Helpers shared by the bench scripts: timing commands, peak RSS, CPU time, medians, tables.

Every bench script is runnable on its own (``python -m bench.<name> --help``) from the repo root
and uses only the standard library, psutil and orjson, except bench_watch, which reads the
terminal through pyte (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

BATCHTUI = [sys.executable, "-m", "batchtui.tui.cli"]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROCS = HERE / "procs.py"
#: Benchmark batches are scratch: they go to a registry of their own, never the user's (the
#: per-user list of batches that `batchtui ls` shows from anywhere).
STATE_DIR = os.environ.setdefault("BATCHTUI_STATE_DIR", tempfile.mkdtemp(prefix="batchtui-bench-state-"))


@dataclass
class Timed:
    seconds: float
    returncode: int
    peak_rss_mb: float
    stderr: str = ""
    marks: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0  # user + system CPU of the whole (reaped) process tree


def env_for(out: Path) -> dict[str, str]:
    """The environment of a measured Python process: output under ``out``, no BATCHTUI_* settings
    leaking in, and a bytecode cache next to ``out`` (in the bench's temp dir, removed with it).

    The cache matters: with PYTHONDONTWRITEBYTECODE set (as in some sandboxes) every start would
    recompile the engine's sources, about 0.1 s that no installed copy pays. The bench scripts
    warm the cache with one run before timing.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_")}
    env["BATCHTUI_OUTPUT_DIR"] = str(out)
    env["BATCHTUI_STATE_DIR"] = STATE_DIR
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(out.parent / ".pycache")
    return env


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_timed(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: Any = None,
    marks: dict[str, str] | None = None,
    shell: bool = False,
    timeout: float = 3600,
    rss_interval: float | None = 0.05,
) -> Timed:
    """Run a command, timing it and sampling the peak RSS of its whole process tree.

    ``marks`` maps a name to a substring of a stderr line; the time that line appeared is kept.
    ``rss_interval=None`` turns the RSS sampler off: walking /proc for the process tree every
    50 ms costs CPU that, on a 2-core machine, the measured command would otherwise have (use it
    for throughput comparisons, where every contender must be treated alike).
    ``cpu_s`` is the user+system CPU of the command and every descendant it reaped.
    """
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd if not shell else cmd[0],
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        shell=shell,
    )
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            try:
                rss = p.memory_info().rss
                for c in p.children(recursive=True):
                    try:
                        rss += c.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss / 1048576)
            except psutil.Error:
                return
            time.sleep(rss_interval or 0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    if rss_interval is not None:
        sampler.start()
    got: dict[str, float] = {}
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        for name, needle in (marks or {}).items():
            if name not in got and needle in line:
                got[name] = time.perf_counter() - t0
    proc.wait(timeout)
    elapsed = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    done.set()
    if rss_interval is not None:
        sampler.join()
    return Timed(elapsed, proc.returncode, peak[0], "".join(lines[-20:]), got, cpu)


def check(t: Timed, what: str, ok: Sequence[int] = (0,)) -> Timed:
    """Raise with the command's stderr tail when it did not exit as expected."""
    if t.returncode not in ok:
        raise RuntimeError(f"{what} exited {t.returncode}:\n{t.stderr}")
    return t


def max_rss_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def du_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def workdir(prefix: str) -> Path:
    base = os.environ.get("BATCHTUI_BENCH_DIR")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def write_lines(path: Path, n: int, fmt: str = "item-{i:07d}") -> Path:
    """A text file of ``n`` distinct lines (one item each)."""
    with path.open("w") as fh:
        fh.write("".join(fmt.format(i=i) + "\n" for i in range(n)))
    return path


def batch_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def only_batch(out: Path) -> Path:
    dirs = batch_dirs(out)
    if len(dirs) != 1:
        raise RuntimeError(f"expected one batch in {out}, found {len(dirs)}")
    return dirs[0]


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


# -- repetitions and formatting ------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``median (min-max, n=K)`` in seconds."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return f"{median(values):.2f} s ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def round_ratios(num: Sequence[float], den: Sequence[float]) -> tuple[float, str]:
    """The ratios ``num[i] / den[i]`` of two contenders measured in the same round of
    :func:`interleave`: their median, and ``1.02x (0.91-1.15, n=5)``. On a shared machine the
    load drifts between rounds; a ratio of two medians taken apart mixes rounds of different
    loads (the same code read 0.68x and 1.22x a bare thread pool an hour apart)."""
    values = [a / b for a, b in zip(num, den, strict=True)]
    mid = median(values)
    if len(values) == 1:
        return mid, f"{mid:.2f}x"
    return mid, f"{mid:.2f}x ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def interleave(reps: int, runners: Mapping[str, Callable[..., float]]) -> dict[str, list[float]]:
    """Run every contender once per round, ``reps`` rounds, so drifting machine load hits all alike.

    The order rotates each round, so no contender always runs right after the same other one.
    """
    out: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(runners[name]())
    return out


def per_s(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s" if seconds > 0 else "n/a"


def verdict(value: float, target: float, *, at_most: bool) -> str:
    if math.isnan(value):
        return "n/a"
    ok = value <= target if at_most else value >= target
    return "ok" if ok else "MISS"


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node()} | {os.cpu_count()} cores | Python {platform.python_version()} | "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )


def table(title: str, rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = [f"\n## {title}\n"]
    for n, row in enumerate(rows):
        out.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(out)
