"""What the dashboard costs an engine that runs inside the app, and what the app costs at rest.

    python -m bench.bench_app [--items 200000] [--reps 3] [--executor thread] [--workers 2] [--idle 5]

The same batch (N distinct lines through ``--call bench/procs.py:noop``), interleaved round by
round, median of --reps rounds:

  headless  batchtui run items --call bench/procs.py:noop --executor E -j W --headless
  app       the same without --headless, forked onto a 120x40 pseudo-terminal that is its
            controlling terminal (TERM=xterm-256color), so the dashboard opens with the engine in
            its worker thread and draws every frame into the pty, as on a real terminal (a reader
            thread drains it and answers the synchronized-output query, as terminals do)

Each one's run phase (after the enqueue) is report.json's duration of this run; its rate is N
over it. Then, once the app's batch has finished, the app's CPU time (user + system, all its
threads) over --idle seconds of watching the finished batch, as a share of one core; then ``q``.

Targets (issue 19, point 6): the app's run-phase rate >= 0.85x the headless one; its idle CPU
near 0 (reported against 2% of a core).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios
import threading
import time
from pathlib import Path
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
    read_json,
    run_timed,
    table,
    verdict,
    workdir,
    write_lines,
)

COLS, ROWS = 120, 40
SYNC_QUERY = b"\x1b[?2026$p"
SYNC_REPLY = b"\x1b[?2026;2$y"  # "supported, currently reset", as kitty, WezTerm, foot... answer
IDLE_TARGET = 0.02  # of one core


def run_phase(batch: Path) -> float:
    """This run's time after the enqueue, from report.json."""
    rep: dict[str, Any] = read_json(batch / "report.json")
    return float(rep.get("run_duration_s") or rep["duration_s"])


class PtyApp:
    """A child process on a pseudo-terminal of its own; its output is read and dropped."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, size: tuple[int, int] = (COLS, ROWS)) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        pid = os.fork()
        if pid == 0:  # the child: a session of its own with the pty as its controlling terminal
            try:
                os.close(master)
                os.chdir(cwd)
                os.login_tty(slave)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        os.close(slave)
        self.pid, self.master = pid, master
        self.bytes = 0
        self.status: int | None = None
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        tail = b""
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:  # EIO once the child's side is closed
                return
            if not data:
                return
            self.bytes += len(data)
            if SYNC_QUERY in tail + data:
                with contextlib.suppress(OSError):
                    os.write(self.master, SYNC_REPLY)
            tail = data[-16:]

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            time.sleep(0.05)
        raise TimeoutError(f"the app did not exit within {timeout:.0f} s")

    def close(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        self._reader.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self.master)


def wait_for_file(path: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: no {path.name} after {timeout:.0f} s")
        time.sleep(0.05)


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000, help="items a batch [200000]")
    ap.add_argument("--reps", type=int, default=3, help="rounds; the median is reported [3]")
    ap.add_argument("--executor", default="thread", choices=["thread", "process"], help="[thread]")
    ap.add_argument("--workers", type=int, default=2, help="[2]")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of watching a finished batch [5]")
    args = ap.parse_args(argv)
    n = args.items
    work = workdir("bt-app-")
    try:
        (work / "xdg").mkdir()
        items = write_lines(work / "items.txt", n)
        call = ["--call", f"{PROCS}:noop", "--executor", args.executor, "--workers", str(args.workers)]
        idle: list[float] = []
        frames: list[int] = []
        counter = [0]

        def out_dir(kind: str) -> Path:
            counter[0] += 1
            return work / f"{kind}-{counter[0]}" / "out"

        def headless() -> float:
            out = out_dir("headless")
            out.mkdir(parents=True)
            cmd = [*BATCHTUI, "run", str(items), *call, "--headless"]
            env = env_for(out)
            env["XDG_STATE_HOME"] = str(work / "state")  # the batch registry: not the user's
            check(run_timed(cmd, env=env, cwd=work, rss_interval=None), "headless run", ok=(0,))
            seconds = run_phase(only_batch(out))
            cleanup(out.parent)
            return seconds

        def app() -> float:
            out = out_dir("app")
            out.mkdir(parents=True)
            env = env_for(out)
            for name in ("COLUMNS", "LINES", "TERM_PROGRAM", "NO_COLOR", "TEXTUAL"):
                env.pop(name, None)
            env.update(TERM="xterm-256color", COLORTERM="truecolor", XDG_CONFIG_HOME=str(work / "xdg"))
            env["XDG_STATE_HOME"] = str(work / "state")
            term = PtyApp([*BATCHTUI, "run", str(items), *call], env, work)
            try:
                deadline = time.monotonic() + 600
                while not list(out.glob("*/report.json")):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the app's batch did not finish in 600 s")
                    if os.waitpid(term.pid, os.WNOHANG)[0]:
                        raise RuntimeError("the app exited before its batch finished")
                    time.sleep(0.05)
                batch = only_batch(out)
                seconds = run_phase(batch)
                proc = psutil.Process(term.pid)
                time.sleep(1.0)  # the last frames of the run and the "finished" notification
                before, t0, bytes0 = cpu_s(proc), time.monotonic(), term.bytes
                time.sleep(args.idle)
                idle.append((cpu_s(proc) - before) / (time.monotonic() - t0))
                frames.append(term.bytes - bytes0)
                term.send(b"q")
                code = term.wait_exit(60)
                if code not in (0, 1):
                    raise RuntimeError(f"the app exited {code}")
            finally:
                term.close()
            cleanup(out.parent)
            return seconds

        headless()  # one round unmeasured: the bytecode cache (env_for's PYTHONPYCACHEPREFIX is new)
        times = interleave(args.reps, {"headless": headless, "app": app})
    finally:
        cleanup(work)

    rate_h = [n / s for s in times["headless"]]
    rate_a = [n / s for s in times["app"]]
    ratios = [a / h for a, h in zip(rate_a, rate_h, strict=True)]  # round by round

    def rates(values: list[float]) -> str:
        return f"{median(values):,.0f}/s ({min(values):,.0f}-{max(values):,.0f})"

    ratio = median(ratios)
    idle_share = median(idle)
    rows: list[tuple[str, ...]] = [
        ("What", "Value", "Ratio", "Target"),
        (
            f"{n:,} no-op --call items, --executor {args.executor} -j {args.workers}: run phase, headless",
            rates(rate_h),
            "",
            "",
        ),
        ("same, in the app on a 120x40 pty", rates(rate_a), "", ""),
        (
            "app / headless run-phase rate (per round)",
            ", ".join(f"{r:.2f}" for r in ratios),
            f"{ratio:.2f}x (median)",
            f">= 0.85x: {verdict(ratio, 0.85, at_most=False)}",
        ),
        (
            f"app's CPU watching the finished batch ({args.idle:.0f} s)",
            ", ".join(f"{100 * v:.1f}%" for v in idle) + " of a core",
            f"{idle_share:.3f} cores",
            f"<= {IDLE_TARGET:.2f}: {verdict(idle_share, IDLE_TARGET, at_most=True)}",
        ),
        ("bytes written to the terminal meanwhile", ", ".join(f"{b:,}" for b in frames), "", ""),
    ]
    print(machine_line())
    print(table("The engine inside the app vs headless", rows))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
