"""report.json says what CPU a run used: the engine's process, and its child processes.

An operator whose run is slow asks whether batchtui or the commands use the machine; the bench
of issue 22 splits the same way (engine/monitor.py). ``engine_cpu_s`` is this run's CPU in the
engine's process; ``children_cpu_s`` is its children's: those it waited for (each with what it
waited for) and those still running when the report is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchtui.tui.cli.summary import _cpu_text

from .conftest import only_batch, read_json, read_jsonl

#: Each part of the script burns this much CPU (seconds of its own process_time).
BURN = 0.3

# In a fresh interpreter, so that nothing of pytest's process counts.
MONITOR_SCRIPT = f"""
import json, subprocess, sys, time
from batchtui.engine.monitor import MemoryMonitor

BURN = {BURN}
burn = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < %s: pass\\n" % BURN

monitor = MemoryMonitor()
if sys.argv[1:] == ["psutil"]:  # as on a kernel without /proc/PID/task/TID/children, or not Linux
    import os, psutil
    monitor._proc = psutil.Process(os.getpid())
start = time.process_time()
while time.process_time() - start < BURN:  # the engine's own
    pass
own, before = monitor.run_cpu_s()
subprocess.run([sys.executable, "-c", burn], check=True)  # a child, waited for
_, waited = monitor.run_cpu_s()
# A child still running, whose own child burned and was waited for, then that child burning on.
alive = subprocess.Popen(
    [sys.executable, "-c", "import subprocess, sys\\nsubprocess.run([sys.executable, '-c', %r])\\n%s"
     "sys.stdout.write('burned\\\\n'); sys.stdout.flush(); sys.stdin.read()" % (burn, burn)],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
assert alive.stdout.readline() == "burned\\n"
_, with_alive = monitor.run_cpu_s()
alive.stdin.close()
alive.wait()
print(json.dumps({{"own": own, "before": before, "waited": waited, "with_alive": with_alive}}))
"""


#: A runner made, then (``HOST``) CPU burned on its thread before it runs, or by the main
#: thread while it runs on another (the app's way: the dashboard's loop on the main thread).
HOST_SCRIPT = f"""
import json, sys, threading, time
from pathlib import Path
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

BURN = {BURN * 2}
def burn():
    t = time.thread_time()
    while time.thread_time() - t < BURN:
        pass

where = Path(sys.argv[2])
(where / "items.txt").write_text("".join(f"{{i}}\\n" for i in range(20)))
config = load_config({{"output_dir": str(where / "out"), "workers": 2}}, environ={{}})
batch = create_batch(config, build_spec([str(where / "items.txt")]), shell_spec("sleep 0.05"))
runner = BatchRunner(batch, config=config)
if sys.argv[1] == "before":  # made, then its host starts (the app's start) before it runs
    burn()
    runner.run()
else:  # it runs on another thread while the main thread works (the dashboard's loop)
    done = threading.Event()
    def run():
        runner.run()
        done.set()
    thread = threading.Thread(target=run)
    thread.start()
    burn()
    thread.join()
print(json.dumps(json.loads((batch.path / "report.json").read_text())["engine_cpu_s"]))
"""


@pytest.mark.parametrize("host", ["before", "beside"])
def test_the_engines_cpu_leaves_out_its_hosts(host: str, tmp_path: Path) -> None:
    """In the app the engine shares its process with the dashboard: the app's start (before the
    run) and the dashboard's loop (the main thread, while the run is on another) are not the
    engine's CPU. The run itself (20 x sleep 0.05 on 2 workers) uses far less than the host's
    burn (twice BURN)."""
    proc = subprocess.run(
        [sys.executable, "-c", HOST_SCRIPT, host, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    engine_cpu = json.loads(proc.stdout.splitlines()[-1])
    assert 0 < engine_cpu < BURN, engine_cpu


@pytest.mark.parametrize("way", ["proc", "psutil"])
def test_the_monitor_counts_its_own_cpu_and_its_childrens_waited_for_and_alive(way: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", MONITOR_SCRIPT, way], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["own"] >= BURN * 0.95, got  # the loop in the process itself
    assert got["before"] < BURN / 2, got  # no child had run yet
    assert got["waited"] >= got["before"] + BURN * 0.95, got  # the child it waited for
    # The running child's own burn, and its child's that it waited for: two more.
    assert got["with_alive"] >= got["waited"] + 2 * BURN * 0.95, got


def test_a_runs_report_and_summary_hold_the_cpu_of_its_commands(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], out_dir: Path, tmp_path: Path
) -> None:
    """Each command burns CPU and prints what it used: the report's children's CPU holds at
    least their sum, and the engine's is counted apart."""
    script = tmp_path / "burn.py"
    script.write_text(
        "import json, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.2: pass\n"
        "print(json.dumps({'cpu': time.process_time()}))\n"
    )
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(4)))
    proc = run_cli(["run", str(items), "--cmd", f"{sys.executable} {script}", "--headless", "-j", "2"])
    assert proc.returncode == 0, proc.stderr
    batch = only_batch(out_dir)
    report: dict[str, Any] = read_json(batch / "report.json")
    used = sum(float(line["result"]["cpu"]) for line in read_jsonl(batch / "results.jsonl"))  # type: ignore[index]
    assert used >= 4 * 0.2
    assert report["children_cpu_s"] >= used, (report["children_cpu_s"], used)
    assert 0 < report["engine_cpu_s"] < report["children_cpu_s"], report
    cpu_line = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("CPU:"))
    assert "child processes" in cpu_line and "(last run)" in cpu_line, cpu_line


@pytest.mark.parametrize(
    ("report", "text"),
    [
        ({"engine_cpu_s": 1.84, "children_cpu_s": 4.86}, "engine process 1.8s, child processes 4.9s (last run)"),
        ({"engine_cpu_s": 0.25, "children_cpu_s": 125}, "engine process 250ms, child processes 2m05s (last run)"),
        ({"engine_cpu_s": 0.0, "children_cpu_s": 0.0}, ""),  # an older engine's defaults
        ({}, ""),  # an older engine's report
        (None, ""),  # no report
        ({"engine_cpu_s": "1", "children_cpu_s": 2}, ""),  # damaged
        ({"engine_cpu_s": True, "children_cpu_s": 2}, ""),
        ({"engine_cpu_s": -1, "children_cpu_s": 2}, ""),
        ({"engine_cpu_s": float("nan"), "children_cpu_s": 2}, ""),
        ({"engine_cpu_s": 1, "children_cpu_s": float("inf")}, ""),
        ({"engine_cpu_s": 10**400, "children_cpu_s": 2}, ""),  # json.loads reads such an integer
    ],
)
def test_the_summarys_cpu_line(report: dict[str, Any] | None, text: str) -> None:
    assert _cpu_text(report) == text
