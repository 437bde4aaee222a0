"""Figures that agree across resumes (issue 19, point 4): a batch's duration is the sum of its
runs, its rate is its items over that time, a run killed -9 ends at its last heartbeat, and
report.json, `show`, `show --json`, `ls --json` and the end summary say the same, as do `ls` and
`show` of a batch an engine runs or one whose engine was killed -9.

How right the figures must be: each run's span is checked against the wall clock the test reads
just before the run starts and just after it ends (every timestamp of the batch files has
millisecond precision and the figures are rounded to 3 decimals: 0.01 s of slack); between the
views the figures must be equal, not near (one function computes them from the same files)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from batchtui.engine.batchdir import BatchDir, BatchLock, engine_alive, parse_iso
from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.files import write_model
from batchtui.engine.fmt import fmt_duration
from batchtui.engine.models import BatchState, Counts, HistoryEntry, LiveCounts, LiveProgress
from batchtui.engine.processors import python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.summary import INTERRUPTED, summarize
from batchtui.engine.timing import KILLED, batch_timing, close_dead_runs

from .conftest import CLI, cli_env, read_json, wait_until

PROCS = Path(__file__).with_name("procs.py")
SLACK = 0.01  # see the module docstring
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _entry(start: float, end: float | None, pid: int = 100, outcome: str | None = "stopped") -> HistoryEntry:
    return HistoryEntry(
        action="run",
        at=_at(start),
        pid=pid,
        host="h",
        ended_at=None if end is None else _at(end),
        outcome=None if end is None else outcome,
    )


def _live(pid: int, updated: float) -> LiveProgress:
    return LiveProgress(batch_id="b", state=BatchState.RUNNING, updated_at=_at(updated), pid=pid, host="h")


# -- the arithmetic, on hand-made histories --------------------------------------------------


def test_the_duration_is_the_sum_of_the_runs_not_the_last_end_minus_the_first_start() -> None:
    # 100 s, then a day stopped, then 20 s, then an hour stopped, then 30 s.
    history = [_entry(0, 100), _entry(86_500, 86_520), _entry(90_120, 90_150, outcome="finished")]
    timing = batch_timing(history, Counts(total=500, complete=480, failed=10, skipped=10))
    assert timing.active_s == 150.0
    assert timing.runs == 3 and timing.run_s == 30.0 and not timing.running
    assert timing.items_per_s == round(490 / 150, 3)  # skipped items never ran: not counted


def test_a_run_killed_minus_9_ends_at_its_last_heartbeat_and_the_next_engine_records_it() -> None:
    history = [_entry(0, 10), _entry(100, None, pid=7)]  # pid 7 died without writing its end
    live = _live(7, 142.5)  # the last live_progress.json it wrote
    timing = batch_timing(history, Counts(total=10, complete=5), live=live)
    assert timing.active_s == 52.5 and timing.spans[1].outcome == KILLED and not timing.running
    closed = close_dead_runs(history, live)
    assert closed[1].ended_at == _at(142.5) and closed[1].outcome == KILLED
    assert closed[0] == history[0]
    # A heartbeat of another engine (it wrote the file after): the dead run's time is unknown,
    # counted as none rather than guessed.
    other = _live(8, 300.0)
    assert batch_timing(history, Counts(), live=other).active_s == 10.0
    assert close_dead_runs(history, other)[1].ended_at == _at(100)


def test_a_running_engine_counts_up_to_its_last_write() -> None:
    history = [_entry(0, 40), _entry(100, None, pid=7)]
    timing = batch_timing(history, Counts(total=100, complete=30), live=_live(7, 110.0), running_pid=7, now=_at(999))
    assert timing.running and timing.run_s == 10.0 and timing.active_s == 50.0
    assert timing.spans[1].ended_at is None and timing.spans[1].outcome is None
    # Before its first write: up to now.
    timing = batch_timing(history, Counts(), live=_live(6, 50.0), running_pid=7, now=_at(105))
    assert timing.run_s == 5.0 and timing.active_s == 45.0


# -- real runs: stopped, killed -9, stopped, finished ----------------------------------------


def _run_in_thread_until(runner: BatchRunner, batch: Path, done_at_least: int) -> None:
    """Run ``runner`` on a thread until ``done_at_least`` items are done, then stop it."""
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: _finished(batch) >= done_at_least, what=f"{done_at_least} items done")
    finally:
        runner.request_stop("test")
        thread.join(30)
    assert not thread.is_alive()


def _finished(batch: Path) -> int:
    try:
        live = orjson.loads((batch / "live_progress.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return 0
    c = live["counts"]
    return int(c["complete"] + c["failed"] + c["skipped"])


def _cli(args: list[str], out: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    from .conftest import invoke_in_process

    got = invoke_in_process(args, out=out, cwd=cwd)
    assert "Traceback" not in got.stderr, got.stderr
    return got


def _move_back(batch: BatchDir, seconds: float) -> None:
    """The batch's first run took place ``seconds`` earlier (a batch stopped yesterday): its
    history and times move back, its span stays what it was."""
    manifest = batch.read_manifest()

    def back(iso: str | None) -> str | None:
        return None if iso is None else datetime.fromtimestamp(parse_iso(iso) - seconds, UTC).isoformat()

    history = [e.model_copy(update={"at": back(e.at), "ended_at": back(e.ended_at)}) for e in manifest.history]
    moved = manifest.model_copy(
        update={"created_at": back(manifest.created_at), "started_at": back(manifest.started_at), "history": history}
    )
    write_model(batch.manifest, moved, durable=False, backup=True)


def test_duration_and_rate_agree_and_are_right_after_resumes_and_a_kill_minus_9(tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(100)))
    config = BatchConfig(output_dir=str(out), workers=2, executor="thread", max_attempts=1)
    # 50 ms an item, 2 at once: the whole batch is 2.5 s of work.
    batch = create_batch(config, build_spec([str(items)]), python_spec(f"{PROCS}:slow_switch"))
    brackets: list[tuple[float, float]] = []  # the wall clock around each run

    # Run 1: stopped after 10 items; then it "was yesterday" (a day between it and the resume).
    before = time.time()
    _run_in_thread_until(BatchRunner(batch, config=config), batch.path, 10)
    brackets.append((before - 86_400, time.time() - 86_400))
    _move_back(batch, 86_400)

    # Run 2: a real engine process, killed -9 once it has done 20 more.
    before = time.time()
    engine = subprocess.Popen(
        [*CLI, "resume", batch.batch_id, "--headless", "-o", str(out)],
        env=cli_env(out),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: read_json(batch.live_progress).get("pid") == engine.pid and _finished(batch.path) >= 30,
            what="the resumed engine at 30 items",
        )
    finally:
        engine.kill()
        engine.wait(30)
    brackets.append((before, time.time()))
    heartbeat = str(read_json(batch.live_progress)["updated_at"])  # its last sign of life
    lock_info = batch.lock.read_bytes()  # as the engine wrote it
    wait_until(lambda: engine_alive(batch.path) is None, what="its reaper gone (the lock free)")

    # ls and show say the same of the batch its engine left: interrupted, same done/total.
    shown = orjson.loads(_cli(["show", batch.batch_id, "--json"], out, tmp_path).stdout)
    row = next(r for r in orjson.loads(_cli(["ls", "--json"], out, tmp_path).stdout) if r["batch_id"] == batch.batch_id)
    assert shown["state"] == row["state"] == INTERRUPTED
    done = row["totals"]["complete"] + row["totals"]["failed"] + row["totals"]["skipped"]
    assert (shown["counts"]["complete"], shown["counts"]["total"]) == (done, 100) and done >= 30
    text = _cli(["show", batch.batch_id], out, tmp_path).stdout
    ls_text = _cli(["ls"], out, tmp_path).stdout
    assert f"({INTERRUPTED})" in text and f"Complete:  {done}\n" in text, text
    assert re.search(rf"{batch.batch_id}\s+{INTERRUPTED}\s+-\s+{done}/100\s", ls_text), ls_text
    # The killed run counts up to its heartbeat already (no engine has recorded its end yet).
    assert shown["summary"]["runs"] == 2
    # The same while what the dead engine left holds the lock (its reaper killing the items'
    # processes, for a moment after a kill -9; held here by this process, with the lock file
    # as the engine wrote it): nothing runs the batch, it is interrupted in every view.
    assert orjson.loads(lock_info)["pid"] == engine.pid
    held = BatchLock(batch.lock)
    held.acquire()
    try:
        os.pwrite(held.fileno() or -1, lock_info, 0)
        os.ftruncate(held.fileno() or -1, len(lock_info))
        again = orjson.loads(_cli(["show", batch.batch_id, "--json"], out, tmp_path).stdout)
        ls_again = _cli(["ls"], out, tmp_path).stdout
    finally:
        held.release()
    assert again["state"] == INTERRUPTED and again["counts"]["complete"] == done
    assert again["summary"]["engine"]["pid"] == engine.pid and not again["summary"]["resumable"]
    assert again["summary"]["duration_s"] == shown["summary"]["duration_s"]
    assert re.search(rf"{batch.batch_id}\s+{INTERRUPTED}\s+pid {engine.pid}\s+{done}/100\s", ls_again), ls_again

    # Run 3: stopped after 10 more (it records the killed run's end); run 4 to the end, through
    # the CLI, whose end summary is one of the views.
    before = time.time()
    _run_in_thread_until(BatchRunner(batch, config=config, action="resume"), batch.path, done + 10)
    brackets.append((before, time.time()))
    before = time.time()
    final = _cli(["resume", batch.batch_id, "--headless", "-o", str(out)], out, tmp_path)
    brackets.append((before, time.time()))
    assert final.returncode == 0, final.stderr

    manifest = batch.read_manifest()
    assert [e.outcome for e in manifest.history] == ["stopped", KILLED, "stopped", "finished"]
    assert manifest.history[1].ended_at == heartbeat
    spans = [parse_iso(e.ended_at or "") - parse_iso(e.at) for e in manifest.history]
    for (lo, hi), entry, span in zip(brackets, manifest.history, spans, strict=True):
        assert lo - SLACK <= parse_iso(entry.at) and parse_iso(entry.ended_at or "") <= hi + SLACK, (entry, lo, hi)
        assert span > 0
    active = sum(spans)
    assert active >= 2.5 - SLACK  # 100 items of 50 ms on 2 workers, at the very least

    report = read_json(batch.report)
    assert abs(float(report["duration_s"]) - active) <= SLACK  # type: ignore[arg-type]
    assert report["items_per_s"] == round(100 / float(report["duration_s"]), 3)  # type: ignore[arg-type]
    assert report["runs"] == 4 and report["run_duration_s"] == round(spans[-1], 3)
    figures = (report["duration_s"], report["items_per_s"], report["runs"])

    shown = orjson.loads(_cli(["show", batch.batch_id, "--json"], out, tmp_path).stdout)
    s = shown["summary"]
    assert (s["duration_s"], s["items_per_s"], s["runs"]) == figures
    assert shown["report"]["duration_s"] == report["duration_s"]
    row = next(r for r in orjson.loads(_cli(["ls", "--json"], out, tmp_path).stdout) if r["batch_id"] == batch.batch_id)
    assert (row["duration_s"], row["items_per_s"], row["runs"]) == figures
    assert summarize(batch).duration_s == report["duration_s"]
    line = (
        f"  Duration:  {fmt_duration(report['duration_s'])} over 4 runs (last run {fmt_duration(spans[-1])})"  # type: ignore[arg-type]
        f"   {report['items_per_s']:.1f} items/s\n"
    )
    assert line in _cli(["show", batch.batch_id], out, tmp_path).stdout
    assert line in final.stdout  # the headless end summary


def test_ls_and_show_of_a_running_batch_show_the_engines_counts_and_time(tmp_path: Path) -> None:
    """An engine commits to items.db more often than it writes its progress: every view shows
    the progress it wrote (state, counts, time), never a mix of the two."""
    out = tmp_path / "out"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(20)))
    config = BatchConfig(output_dir=str(out), workers=2, executor="thread", max_attempts=1)
    batch = create_batch(config, build_spec([str(items)]), python_spec(f"{PROCS}:slow_switch"))
    _run_in_thread_until(BatchRunner(batch, config=config), batch.path, 4)
    stored = batch.read_manifest().totals
    # An engine (this process) holds the batch, resumed 20 s before its last write, which
    # says one item fewer done than items.db has (committed since).
    lock = BatchLock(batch.lock)
    lock.acquire()
    try:
        now = time.time()
        started = datetime.fromtimestamp(now - 20, UTC).isoformat(timespec="milliseconds")
        manifest = batch.read_manifest()
        entry = HistoryEntry(action="resume", at=started, pid=os.getpid(), host=manifest.history[0].host)
        write_model(batch.manifest, manifest.model_copy(update={"history": [*manifest.history, entry]}), durable=False)
        live = LiveProgress(
            batch_id=batch.batch_id,
            state=BatchState.RUNNING,
            updated_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            total=20,
            counts=LiveCounts(total=20, complete=stored.complete - 1, pending=21 - stored.complete),
            pid=os.getpid(),
            host=entry.host,
        )
        write_model(batch.live_progress, live, durable=False)
        shown = orjson.loads(_cli(["show", batch.batch_id, "--json"], out, tmp_path).stdout)
        row = next(
            r for r in orjson.loads(_cli(["ls", "--json"], out, tmp_path).stdout) if r["batch_id"] == batch.batch_id
        )
        text = _cli(["show", batch.batch_id], out, tmp_path).stdout
    finally:
        lock.release()
    assert shown["state"] == row["state"] == "running"
    assert shown["counts"]["complete"] == row["totals"]["complete"] == stored.complete - 1
    assert f"Complete:  {stored.complete - 1}\n" in text, text
    run1 = parse_iso(manifest.history[0].ended_at or "") - parse_iso(manifest.history[0].at)
    assert abs(shown["summary"]["duration_s"] - (run1 + 20)) <= SLACK  # up to its last write
    assert shown["summary"]["run_s"] == row["run_s"] == 20.0 and shown["summary"]["run_running"]
    assert "over 2 runs (this run 20s)" in text, text


def test_the_final_live_progress_says_the_batchs_time_as_the_report_and_show_do(tmp_path: Path) -> None:
    """Once a run has ended, live_progress.json (what the dashboard shows), report.json and the
    summary (`ls`, `show`) give the batch's time and this run's from the same history, to the
    digit: a clock read a moment apart from the history's end showed "elapsed 2m06s" on the
    dashboard of a batch `show` gave 2m05s (CI, once)."""
    out = tmp_path / "out"
    items = tmp_path / "items.txt"
    # 60 items of 50 ms on 2 workers (1.5 s; the live file every 0.25 s): the stop comes with most
    # items pending. With 20 (0.5 s), a loaded machine saw 6 done only as the last items ran, and
    # the stop, leaving nothing undone, ended the batch finished (CI, once).
    items.write_text("".join(f"{i}\n" for i in range(60)))
    config = BatchConfig(output_dir=str(out), workers=2, executor="thread", max_attempts=1)
    batch = create_batch(config, build_spec([str(items)]), python_spec(f"{PROCS}:slow_switch"))
    _run_in_thread_until(BatchRunner(batch, config=config), batch.path, 6)  # stopped part-way
    stopped = read_json(batch.live_progress)
    assert stopped["state"] == "stopped"
    assert stopped["rate_per_s"] == summarize(batch).items_per_s == read_json(batch.report)["items_per_s"]
    BatchRunner(batch, config=config, action="resume").run()  # and resumed to the end
    live = read_json(batch.live_progress)
    report = read_json(batch.report)
    summary = summarize(batch)
    assert live["state"] == "finished" and summary.runs == 2
    assert live["elapsed_s"] == summary.duration_s == report["duration_s"], (live, summary, report)
    # The rate too: the batch's items over its active time, not the last moments' throughput.
    assert live["rate_per_s"] == summary.items_per_s == report["items_per_s"], (live, summary, report)
    timing = batch_timing(BatchDir(batch.path).read_manifest().history, summary.totals)
    assert live["run_elapsed_s"] == timing.run_s == report["run_duration_s"] and live["elapsed_s"] == timing.active_s
