"""``batchtui watch`` on a big batch, as a whole process on a terminal: time to the first full
screen, page-down latency, RSS.

    python -m bench.bench_watch [--items 300000] [--reps 3] [--presses 30] [--keep] [--work DIR] [--no-live]

Needs pyte, a small pure-Python VT100 emulator: ``pip install -e '.[bench]'`` (or ``pip install pyte``).

The batch is a real one, made by the CLI: ``batchtui run items.txt --call bench/procs.py:fail_every_50
--executor thread -j 2 --headless`` (every 50th item fails, so the errors box has content). Each
round then starts ``python -m batchtui.tui.cli watch BATCH -o OUT`` the way a terminal emulator
does: forked onto a 120x40 pseudo-terminal that is its controlling terminal (TERM=xterm-256color,
COLORTERM=truecolor, an empty XDG_CONFIG_HOME). Everything it writes goes into pyte. Like most
modern terminals, the bench answers Textual's query for synchronized output (mode 2026), so every
frame arrives between ESC[?2026h and ESC[?2026l and the screen is only judged on whole frames; a
frame's time is when the read that ended it returned.

- first full screen: from just before the fork to the first frame that shows, all at once, the
  title line with the batch id and its state badge ([FINISHED] / [RUNNING ...]), the progress
  text "N/<total>", the counts line (pending N processing N, or running N/W · queued N, complete N failed N), the footer's
  "q Quit", and the items table: its header (seq status tries duration key error) with, right
  under it, at least 5 rows that start at seq 0, run on without a gap and carry their own item
  key (item-0000000 on seq 0, ...), so they are rows read from items.db, not placeholders.
- page-down: after that, ``--presses`` times: write ESC[6~ (the key a user's PageDown sends; the
  items table has the focus at start), and time until a frame shows a different first table row.
  Reported per round as median and p90 in ms.
- end: one ESC[F (End), timed until the batch's last item is on screen.
- RSS of the watch process (and any children), sampled every 50 ms from the fork until it exits;
  the peak, and the value at the first full screen.
- terminal output: then, for 10 s with no key pressed, the bytes it writes a second (what an
  SSH link carries while an operator watches; on the running batch, its live figures).
- q: write "q", time until the app leaves the alternate screen (ESC[?1049l: the user's terminal
  is back) and until the process is gone (it must exit 0; then the shell prompt is back).

Unless ``--no-live``, the same is done on a second batch of the same size whose engine is still
running in another process (``--call bench/procs.py:sleepy``, 20 ms an item); after each round the
bench checks that quitting watch left that engine running, then stops it with ``batchtui stop``.

Targets (issue 6, point 4): first full screen <= 2 s, RSS <= 200 MB; page-down latency reported.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import os
import queue
import re
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.common import (
    BATCHTUI,
    PROCS,
    check,
    cleanup,
    du_bytes,
    env_for,
    machine_line,
    median,
    run_timed,
    spread,
    table,
    verdict,
    workdir,
    write_lines,
)

try:
    import pyte
except ImportError:
    sys.exit("bench_watch needs pyte, a terminal emulator: pip install -e '.[bench]'  (or: pip install pyte)")

COLS, ROWS = 120, 40
TARGET_FIRST_SCREEN_S = 2.0
TARGET_RSS_MB = 200.0
#: Seconds the terminal output is measured for, after the keys (a running batch: what its
#: dashboard sends while the operator only watches).
OUTPUT_WINDOW_S = 10.0
MIN_TABLE_ROWS = 5

SYNC_MODE = 2026  # synchronized output: ESC[?2026h ... ESC[?2026l around each frame
SYNC_QUERY = b"\x1b[?2026$p"
SYNC_REPLY = b"\x1b[?2026;2$y"  # "supported, currently reset", as kitty, WezTerm, foot... answer
KEY_PAGE_DOWN = b"\x1b[6~"
KEY_END = b"\x1b[F"
KEY_QUIT = b"q"
ALT_SCREEN_OFF = b"\x1b[?1049l"  # Textual leaves the alternate screen: the user's terminal is back

HEADER = re.compile(r"\bseq\s+status\s+tries\s+duration\s+key\s+error\b")
#: An item row; the focused table has a bar at its left edge (▊, or | with ASCII borders).
ROW = re.compile(r"^[▊|]?\s*(\d+) (?:pending|processing|running|queued|complete|failed|skipped)\b.*?\bitem-(\d{7})\b")
STATE_BADGE = re.compile(r"\[(?:FINISHED|RUNNING)\b[^\]]*\]")
#: The counts row: "processing N" once the batch has ended, "running N/W · queued N" while it runs
#: ("running N" in versions before 2026-12-04, which an A/B against them reads).
COUNTS = re.compile(
    r"pending [\d,]+\s+(?:processing [\d,]+|running [\d,]+(?:/[\d,]+ · queued [\d,]+(?: · retry wait [\d,]+)?)?)"
    r"\s+complete [\d,]+\s+failed [\d,]+"
)

Lines = list[str]


# -- the terminal ----------------------------------------------------------------------------


class _Screen(pyte.Screen):
    """A pyte screen that snapshots its text each time a synchronized frame ends."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.synced = False
        self.in_frame = False
        self.frames: list[Lines] = []

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and SYNC_MODE in modes:
            self.synced = self.in_frame = True
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        super().reset_mode(*modes, **kwargs)
        if kwargs.get("private") and SYNC_MODE in modes and self.in_frame:
            self.in_frame = False
            self.frames.append(list(self.display))


class Terminal:
    """A child process on a pseudo-terminal of its own, its output fed into pyte.

    A reader thread only reads (and timestamps) the output, and answers the synchronized-output
    query at once, as a terminal would; pyte parses in the caller's thread, between reads.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.screen = _Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.started = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: a session of its own with the pty as its controlling terminal
            try:
                os.close(master)
                os.chdir(cwd)
                os.login_tty(slave)
                os.execve(argv[0], list(argv), env)
            finally:
                os._exit(127)
        os.close(slave)
        self.pid = pid
        self.master = master
        self.status: int | None = None
        self.eof = False
        self.restored_at: float | None = None
        self._chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()
        self.rss = RssSampler(pid)

    def _read(self) -> None:
        tail = b""
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:  # EIO once the child's side is closed
                data = b""
            if not data:
                self._chunks.put(None)
                return
            now = time.perf_counter()
            seen = tail + data
            if SYNC_QUERY in seen:
                with contextlib.suppress(OSError):
                    os.write(self.master, SYNC_REPLY)
            if self.restored_at is None and ALT_SCREEN_OFF in seen:
                self.restored_at = now
            tail = data[-16:]
            self._chunks.put((now, data))

    def send(self, keys: bytes) -> float:
        """Write ``keys`` as typed; returns the time they went out."""
        t = time.perf_counter()
        os.write(self.master, keys)
        return t

    def wait_for(self, want: Callable[[Lines], bool], timeout: float, what: str) -> tuple[float, Lines]:
        """The time and text of the first whole frame (from now on) for which ``want`` holds."""
        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            try:
                item = self._chunks.get(timeout=max(0.0, left))
            except queue.Empty:
                raise TimeoutError(
                    f"{what}: not on screen after {timeout:.0f} s:\n" + "\n".join(self.screen.display)
                ) from None
            if item is None:
                self.eof = True
                raise RuntimeError(f"{what}: watch exited first:\n" + "\n".join(self.screen.display))
            t, data = item
            self.screen.frames.clear()
            self.stream.feed(data)
            candidates = list(self.screen.frames)
            if not self.screen.synced and not self.screen.in_frame:
                candidates.append(list(self.screen.display))  # a terminal without sync: every read
            for lines in candidates:
                if want(lines):
                    return t, lines

    def output_rate(self, seconds: float) -> float:
        """Bytes a second the child writes to its terminal over ``seconds`` while no key is
        pressed: what an SSH link carries to watch it (fed to pyte as the rest)."""
        got = 0
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            try:
                item = self._chunks.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                self.eof = True
                raise RuntimeError("watch exited while its output was measured")
            got += len(item[1])
            self.stream.feed(item[1])
        return got / seconds

    def wait_exit(self, timeout: float) -> tuple[float, int]:
        """Wait for the child to end: (time it was reaped, exit code)."""
        deadline = time.perf_counter() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                t = time.perf_counter()
                self.status = os.waitstatus_to_exitcode(status)
                return t, self.status
            if time.perf_counter() > deadline:
                raise TimeoutError(f"watch did not exit within {timeout:.0f} s")
            time.sleep(0.002)

    def close(self) -> None:
        """Kill the child's whole process group if it still runs; release the pty."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                _pid, status = os.waitpid(self.pid, 0)
                self.status = os.waitstatus_to_exitcode(status)
        self.rss.stop()
        self._reader.join(timeout=5)  # it ends on EIO once the child is gone; then the fd can go
        with contextlib.suppress(OSError):
            os.close(self.master)


class RssSampler:
    """Samples the RSS of a process and its children every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def now_mb(self) -> float:
        try:
            proc = psutil.Process(self.pid)
            rss = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
        except psutil.Error:
            return float("nan")
        mb = rss / 1048576
        self.peak_mb = max(self.peak_mb, mb)
        return mb

    def _run(self) -> None:
        while not self._done.is_set():
            self.now_mb()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


# -- reading the dashboard --------------------------------------------------------------------


def table_rows(lines: Lines) -> list[int] | None:
    """The seqs of the item rows right under the items table's header, or None without a header.

    Only rows that carry their own key (seq N shows item-N) and follow each other without a gap.
    """
    for i, line in enumerate(lines):
        if HEADER.search(line):
            seqs: list[int] = []
            for row in lines[i + 1 :]:
                m = ROW.match(row)
                if m is None or int(m[1]) != int(m[2]) or (seqs and int(m[1]) != seqs[-1] + 1):
                    break
                seqs.append(int(m[1]))
            return seqs
    return None


def full_screen(batch_id: str, total: int) -> Callable[[Lines], bool]:
    progress = re.compile(rf"[\d,]+/{total:,}\b")

    def want(lines: Lines) -> bool:
        text = "\n".join(lines)
        rows = table_rows(lines)
        return (
            any(batch_id in line and STATE_BADGE.search(line) for line in lines)
            and progress.search(text) is not None
            and COUNTS.search(text) is not None
            and "q Quit" in text
            and rows is not None
            and len(rows) >= MIN_TABLE_ROWS
            and rows[0] == 0
        )

    return want


# -- one round --------------------------------------------------------------------------------


@dataclass
class Round:
    first_screen_s: float = float("nan")
    rss_first_mb: float = float("nan")
    rss_after_keys_mb: float = float("nan")
    peak_rss_mb: float = float("nan")
    page_down_ms: list[float] = field(default_factory=list)
    end_ms: float = float("nan")
    quit_s: float = float("nan")
    restore_s: float = float("nan")
    rows_on_screen: int = 0
    first_row_after: int = -1
    output_kb_s: float = float("nan")


def watch_round(batch: Path, out: Path, env: dict[str, str], total: int, presses: int, cwd: Path) -> Round:
    r = Round()
    term = Terminal([*BATCHTUI, "watch", batch.name, "-o", str(out)], env, cwd)
    try:
        t, lines = term.wait_for(full_screen(batch.name, total), 60, "first full screen")
        r.first_screen_s = t - term.started
        r.rss_first_mb = term.rss.now_mb()
        rows = table_rows(lines) or []
        r.rows_on_screen = len(rows)
        first = rows[0]
        for n in range(presses):
            sent = term.send(KEY_PAGE_DOWN)

            def moved(lines: Lines, before: int = first) -> bool:
                seqs = table_rows(lines)
                return bool(seqs) and seqs is not None and seqs[0] != before

            t, lines = term.wait_for(moved, 10, f"page-down {n + 1}")
            r.page_down_ms.append((t - sent) * 1000)
            first = (table_rows(lines) or [first])[0]
        r.first_row_after = first
        sent = term.send(KEY_END)
        t, _ = term.wait_for(lambda lines: (total - 1) in (table_rows(lines) or []), 10, "end key")
        r.end_ms = (t - sent) * 1000
        r.rss_after_keys_mb = term.rss.now_mb()
        r.output_kb_s = term.output_rate(OUTPUT_WINDOW_S) / 1000
        sent = term.send(KEY_QUIT)
        t, code = term.wait_exit(15)
        r.quit_s = t - sent
        if term.restored_at is not None:
            r.restore_s = term.restored_at - sent
        if code != 0:
            raise RuntimeError(f"watch exited {code} on q:\n" + "\n".join(term.screen.display))
    finally:
        term.close()
    r.peak_rss_mb = term.rss.peak_mb
    return r


# -- batches ----------------------------------------------------------------------------------


def live_state(batch: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads((batch / "live_progress.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def finished_batch(work: Path, n: int) -> tuple[Path, Path, str]:
    """A finished batch of ``n`` items in work/finished (reused when one is there): (out, batch, how built)."""
    out = work / "finished"
    dirs = sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []
    for d in dirs:
        live = live_state(d)
        if live is not None and live.get("total") == n and live.get("state") == "finished":
            return out, d, "reused"
    src = write_lines(work / f"items-{n}.txt", n)
    cmd = [*BATCHTUI, "run", str(src), "--call", f"{PROCS}:fail_every_50", "--executor", "thread", "-j", "2"]
    t = check(run_timed([*cmd, "--headless", "-o", str(out)], env=env_for(out), cwd=work), "run", ok=(0, 1))
    new = [p for p in out.iterdir() if p.is_dir() and p not in dirs]
    if len(new) != 1:
        raise RuntimeError(f"expected one new batch in {out}, found {len(new)}")
    return out, new[0], f"{t.seconds:.1f} s"


class LiveBatch:
    """A batch of ``n`` items whose engine runs in a background process (its own session)."""

    def __init__(self, work: Path, n: int) -> None:
        self.out = work / "live"
        cleanup(self.out)  # a batch left by an earlier --work run is not this one
        self.out.mkdir(parents=True)
        self.env = env_for(self.out)
        src = work / f"items-{n}.txt"
        if not src.exists():
            write_lines(src, n)
        cmd = [*BATCHTUI, "run", str(src), "--call", f"{PROCS}:sleepy", "--executor", "thread", "-j", "2"]
        self.log = (work / "live-engine.log").open("wb")
        self.proc = subprocess.Popen(
            [*cmd, "--headless", "-o", str(self.out)],
            env=self.env,
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.batch: Path | None = None

    def wait_running(self, timeout: float = 300) -> Path:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the live batch's engine exited {self.proc.returncode}")
            dirs = [p for p in self.out.iterdir() if p.is_dir()]
            if dirs:
                live = live_state(dirs[0])
                if live is not None and live.get("state") == "running" and live["counts"]["complete"] > 0:
                    self.batch = dirs[0]
                    return dirs[0]
            time.sleep(0.1)
        raise TimeoutError("the live batch did not start running")

    def still_running(self) -> bool:
        live = live_state(self.batch) if self.batch is not None else None
        return self.proc.poll() is None and live is not None and live.get("state") == "running"

    def stop(self) -> None:
        try:
            if self.proc.poll() is None and self.batch is not None:
                subprocess.run(
                    [*BATCHTUI, "stop", self.batch.name, "-o", str(self.out), "--wait", "30"],
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=60,
                    check=False,
                )
                self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.log.close()


# -- reporting --------------------------------------------------------------------------------


def p90(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def spread_unit(values: Sequence[float], unit: str, digits: int = 1) -> str:
    """``median unit (min-max, n=K)``."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} {unit}"
    return f"{median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f}, n={len(values)})"


def report(title: str, rounds: list[Round], presses: int, extra: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    first = [r.first_screen_s for r in rounds]
    peak = [r.peak_rss_mb for r in rounds]
    pd_med = [median(r.page_down_ms) for r in rounds if r.page_down_ms]
    pd_p90 = [p90(r.page_down_ms) for r in rounds if r.page_down_ms]
    pooled = [ms for r in rounds for ms in r.page_down_ms]
    first_press = [r.page_down_ms[0] for r in rounds if r.page_down_ms]
    rows: list[tuple[str, ...]] = [
        ("measure", "median (range, rounds)", "target"),
        (
            "process start -> first full screen",
            spread(first),
            f"<= {TARGET_FIRST_SCREEN_S:g} s  {verdict(median(first), TARGET_FIRST_SCREEN_S, at_most=True)}",
        ),
        (
            "peak RSS of watch (fork -> exit)",
            spread_unit(peak, "MB", 0),
            f"<= {TARGET_RSS_MB:g} MB  {verdict(max(peak), TARGET_RSS_MB, at_most=True)}",
        ),
        ("RSS at the first full screen", spread_unit([r.rss_first_mb for r in rounds], "MB", 0), ""),
        ("RSS after the keys", spread_unit([r.rss_after_keys_mb for r in rounds], "MB", 0), ""),
        (f"page-down -> new first row, median of {presses}", spread_unit(pd_med, "ms"), "reported"),
        (f"page-down -> new first row, p90 of {presses}", spread_unit(pd_p90, "ms"), "reported"),
        ("page-down, the first one (right after the first screen)", spread_unit(first_press, "ms"), ""),
        ("page-down, slowest of all rounds", f"{max(pooled):.1f} ms" if pooled else "n/a", ""),
        ("end -> last item on screen", spread_unit([r.end_ms for r in rounds], "ms"), ""),
        (
            "q -> terminal restored (alternate screen left)",
            spread_unit([r.restore_s * 1000 for r in rounds], "ms", 0),
            "",
        ),
        (
            "q -> process gone (exit 0: the shell prompt is back)",
            spread_unit([r.quit_s * 1000 for r in rounds], "ms", 0),
            "",
        ),
        (
            f"terminal output, {OUTPUT_WINDOW_S:g} s with no key pressed (what SSH carries)",
            spread_unit([r.output_kb_s for r in rounds], "KB/s"),
            "reported",
        ),
        ("table rows on screen", str(rounds[0].rows_on_screen), ""),
        (
            f"first table row after {presses} page-downs",
            ", ".join(sorted({f"{r.first_row_after:,}" for r in rounds})),
            "",
        ),
        *extra,
    ]
    print(table(title, rows), flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300_000, help="items in the batch [300000]")
    ap.add_argument("--reps", type=int, default=3, help="rounds of each measurement [3]")
    ap.add_argument("--presses", type=int, default=30, help="page-downs per round [30]")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (its path is printed)")
    ap.add_argument(
        "--work", type=Path, help="work in DIR (kept); a finished batch of --items there from an earlier run is reused"
    )
    ap.add_argument("--no-live", action="store_true", help="skip the batch whose engine is still running")
    args = ap.parse_args(argv)
    n = args.items
    keep = args.keep or args.work is not None
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        work: Path = args.work.resolve()
    else:
        work = workdir("bt-watch-")
    live: LiveBatch | None = None
    all_rows: list[tuple[str, ...]] = []
    try:
        (work / "xdg").mkdir(exist_ok=True)  # no user keymap or themes

        def watch_env(out: Path) -> dict[str, str]:
            env = env_for(out)
            for name in ("COLUMNS", "LINES", "TERM_PROGRAM", "NO_COLOR", "TEXTUAL"):
                env.pop(name, None)
            env.update(TERM="xterm-256color", COLORTERM="truecolor", XDG_CONFIG_HOME=str(work / "xdg"))
            return env

        out, batch, built = finished_batch(work, n)
        env = watch_env(out)
        # One round unmeasured: fills the bytecode cache (env_for's PYTHONPYCACHEPREFIX is new).
        cold = watch_round(batch, out, env, n, 1, work)
        rounds = [watch_round(batch, out, env, n, args.presses, work) for _ in range(args.reps)]
        db = batch / "items.db"
        extra = [
            ("batch build (batchtui run, every 50th item fails)", built, ""),
            (
                "items.db / whole batch dir",
                f"{db.stat().st_size / 2**20:.0f} MB / {du_bytes(batch) / 2**20:.0f} MB",
                "",
            ),
            ("first start, empty bytecode cache (not timed above)", f"{cold.first_screen_s:.2f} s", ""),
        ]
        all_rows += report(
            f"watch: finished batch of {n:,} items, {COLS}x{ROWS} pty ({machine_line()})", rounds, args.presses, extra
        )

        if not args.no_live:
            started = time.perf_counter()
            live = LiveBatch(work, n)
            lbatch = live.wait_running()
            ready = time.perf_counter() - started
            lenv = watch_env(live.out)
            lrounds: list[Round] = []
            survived = 0
            for _ in range(args.reps):
                lrounds.append(watch_round(lbatch, live.out, lenv, n, args.presses, work))
                time.sleep(0.5)  # the engine would notice a stop request well within this
                survived += live.still_running()
            state = live_state(lbatch) or {}
            done = state.get("counts", {}).get("complete", 0)
            extra = [
                ("batch start (run to its first items complete)", f"{ready:.1f} s", ""),
                ("engine still running after each q", f"{survived}/{args.reps}", f"{args.reps}/{args.reps}"),
                ("items complete when measured", f"{done:,}", ""),
            ]
            all_rows += report(
                f"watch: running batch of {n:,} items (engine in another process, sleepy 20 ms, 2 workers)",
                lrounds,
                args.presses,
                extra,
            )
            if survived != args.reps:
                raise RuntimeError("quitting watch stopped the running engine")
        if keep:
            print(f"kept {work}")
        return all_rows
    finally:
        if live is not None:
            live.stop()
        if not keep:
            cleanup(work)


if __name__ == "__main__":
    main()
