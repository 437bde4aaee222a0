"""Helpers shared by the bench scripts: timing commands, peak RSS, tables of ratios."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BATCHTUI = [sys.executable, "-m", "batchtui.tui.cli"]
HERE = Path(__file__).resolve().parent


@dataclass
class Timed:
    seconds: float
    returncode: int
    peak_rss_mb: float
    stderr: str = ""
    marks: dict[str, float] = field(default_factory=dict)


def env_for(out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_")}
    env["BATCHTUI_OUTPUT_DIR"] = str(out)
    return env


def run_timed(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = None,
    marks: dict[str, str] | None = None,
    shell: bool = False,
    timeout: float = 3600,
) -> Timed:
    """Run a command, timing it and sampling the peak RSS of its whole process tree.

    ``marks`` maps a name to a substring of a stderr line; the time that line appeared is kept.
    """
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
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
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
    done.set()
    sampler.join()
    return Timed(elapsed, proc.returncode, peak[0], "".join(lines[-20:]), got)


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


def table(title: str, rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = [f"\n## {title}\n"]
    for n, row in enumerate(rows):
        out.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(out)
