"""`ls`, `show`, the browser and their --json agree on every batch's state (issue 15, point 12).

They all call engine.summary.summarize: a batch whose files say running while no engine holds
its lock (killed, or halted by a full disk that could not take the manifest) is "interrupted"
everywhere, with the counts items.db committed, not the manifest's older totals.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from batchtui.engine.batchdir import BatchDir, now_iso
from batchtui.engine.models import BatchState, Counts
from batchtui.engine.summary import summarize
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.cli import main
from batchtui.tui.screens.browser import BrowserScreen
from tests.conftest import CLI, cli_env, only_batch, wait_until
from tests.reliability.helpers import kill_group
from tests.tui.conftest import run
from tests.tui.fixtures import T0, hold_lock, make_batch

PROCS = Path(__file__).parent / "reliability" / "procs.py"

# batch id suffix -> the state every view must show
EXPECTED = {
    "00000001": "running",  # an engine holds the lock and writes
    "00000002": "running",  # an engine holds the lock, stopped writing (NOT RESPONDING)
    "00000003": "interrupted",  # manifest running, no engine (its totals older than items.db)
    "00000004": "interrupted",  # manifest paused, no engine
    "00000005": "halted",
    "00000006": "stopped",
    "00000007": "finished",  # every item complete
    "00000008": "finished",  # some failed
    "00000009": "stopped",  # manifest.json lost: read from manifest.json.bak
    "0000000a": "created",  # made, never started
    "0000000b": "damaged",  # no readable manifest at all
    "0000000c": "running",  # an engine took the lock and has not written live progress yet
    "0000000d": "interrupted",  # manifest.json lost, the backup says "created", items.db ran
}


def _id(suffix: str) -> str:
    return f"20261118_090000_{suffix}"


def _rewrite_manifest(batch: Path, **update: object) -> None:
    data = orjson.loads((batch / "manifest.json").read_bytes())
    data.update(update)
    (batch / "manifest.json").write_bytes(orjson.dumps(data))


@contextlib.contextmanager
def _batches(out: Path) -> Iterator[dict[str, Path]]:
    made = {
        "00000001": make_batch(out, state=BatchState.RUNNING, batch_id=_id("00000001"), updated_at=now_iso()),
        "00000002": make_batch(
            out, state=BatchState.RUNNING, batch_id=_id("00000002"), updated_at="2026-11-18T09:05:00+00:00"
        ),
        "00000003": make_batch(out, state=BatchState.RUNNING, batch_id=_id("00000003")),
        "00000004": make_batch(out, state=BatchState.PAUSED, batch_id=_id("00000004")),
        "00000005": make_batch(out, state=BatchState.HALTED, batch_id=_id("00000005"), halt_reason="failure rate 40%"),
        "00000006": make_batch(out, state=BatchState.STOPPED, batch_id=_id("00000006")),
        "00000007": make_batch(out, state=BatchState.FINISHED, batch_id=_id("00000007"), n=3),
        "00000008": make_batch(out, state=BatchState.FINISHED, batch_id=_id("00000008")),
        "00000009": make_batch(out, state=BatchState.STOPPED, batch_id=_id("00000009")),
        "0000000a": make_batch(out, state=BatchState.CREATED, batch_id=_id("0000000a"), n=0),
        "0000000b": make_batch(out, state=BatchState.STOPPED, batch_id=_id("0000000b")),
        "0000000c": make_batch(out, state=BatchState.RUNNING, batch_id=_id("0000000c")),
        "0000000d": make_batch(out, state=BatchState.RUNNING, batch_id=_id("0000000d")),
    }
    # The engine of 3 wrote its manifest last when 10 items were done (then the disk filled up).
    stale = Counts(total=300, pending=290, complete=10).model_dump()
    _rewrite_manifest(made["00000003"], totals=stale)
    (made["00000009"] / "manifest.json").rename(made["00000009"] / "manifest.json.bak")
    (made["0000000b"] / "manifest.json").write_bytes(b'{"batch_id": "torn')
    (made["0000000c"] / "live_progress.json").unlink()
    # ... and has written nothing since, its store neither (a store written lately is an engine
    # reading its source: alive, engine/liveness.py).
    took = datetime.fromisoformat(T0).timestamp()
    for name in ("items.db", "items.db-wal"):
        if (made["0000000c"] / name).exists():
            os.utime(made["0000000c"] / name, (took, took))
    _rewrite_manifest(made["0000000d"], state="created", started_at=None, totals=Counts().model_dump())
    (made["0000000d"] / "manifest.json").rename(made["0000000d"] / "manifest.json.bak")
    with hold_lock(made["00000001"]), hold_lock(made["00000002"]), hold_lock(made["0000000c"]):
        yield made


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _timeless(summary: dict[str, object]) -> dict[str, object]:
    """A summary without the engine's seconds of silence (they grow between two reads, and the
    badge's minutes with them), nor, while an engine runs the batch and has not written yet,
    the time of its run (it counts up to now)."""
    if summary.get("run_running"):
        summary = {k: v for k, v in summary.items() if k not in ("duration_s", "run_s", "items_per_s")}
    engine = summary.get("engine")
    if isinstance(engine, dict):
        return {**summary, "engine": {k: v for k, v in engine.items() if k not in ("silent_s", "problem", "badge")}}
    return summary


def _browser_states(out: Path, n: int, clock: Callable[[], float] = time.time) -> dict[str, tuple[str, str]]:
    """The browser's rows once it lists ``n`` batches: batch id -> (state, engine cell), as drawn
    in its table (the state cell's first word: it goes on with a halt reason or a NOT RESPONDING
    badge; the engine cell is empty when no batch has an engine: the column is left out)."""

    async def body() -> dict[str, tuple[str, str]]:
        app = BatchtuiApp(output_dir=out, watch_files=False, clock=clock, handle_hangup=False)
        async with app.run_test(size=(250, 40)) as pilot:  # wide enough for the engine column
            screen = app.screen
            assert isinstance(screen, BrowserScreen)
            for _ in range(200):
                if len(screen.rows) == n:
                    break
                await pilot.pause(0.05)
            cells = {}
            for r in screen.rows:
                drawn = screen.cells(r.batch_id)
                cells[r.batch_id] = (drawn["state"].split()[0].rstrip(":"), drawn.get("engine", ""))
            return cells

    return run(body)


def test_ls_show_and_the_browser_agree_in_every_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    # One moment for every view: a frozen engine's "NOT RESPONDING 332h41m" must not turn 42m
    # between `ls` and the browser.
    import time as time_module

    from batchtui.engine import liveness

    # The moment is 90 s back, so a view on the real clock shows another minute (always, not
    # only when the test runs across a minute's end).
    at = time_module.time() - 90
    monkeypatch.setattr(liveness, "wall_clock", lambda: at)
    with _batches(out) as made:
        listed = {r["batch_id"]: r for r in json.loads(_cli("ls", "--json", "-o", str(out)))}
        table = {
            line.split()[0]: line.split()[1]
            for line in _cli("ls", "-o", str(out)).splitlines()[1:]
            if line[:1].isdigit()
        }
        browser = _browser_states(out, len(EXPECTED), clock=lambda: at)  # the app's own clock too
        for suffix, want in EXPECTED.items():
            batch_id = _id(suffix)
            summary = summarize(made[suffix])
            assert summary.state == want, (suffix, summary)
            assert listed[batch_id]["state"] == want, (suffix, listed[batch_id])
            # ls's table says "unresponsive" for an engine that stopped writing (said below it).
            assert table[batch_id] == ("unresponsive" if suffix in ("00000002", "0000000c") else want), (suffix, table)
            assert browser[batch_id][0] == want, (suffix, browser[batch_id])
            if want == "damaged":
                continue
            shown = json.loads(_cli("show", batch_id, "--json", "-o", str(out)))
            assert shown["state"] == want and _timeless(shown["summary"]) == _timeless(listed[batch_id]), suffix
            text = _cli("show", batch_id, "-o", str(out))
            assert f"BATCH SUMMARY  {batch_id}  ({want})" in text, text
            assert listed[batch_id]["totals"]["complete"] == shown["counts"]["complete"], suffix

    # The engines: alive, and not responding (said by every view).
    alive, frozen = listed[_id("00000001")]["engine"], listed[_id("00000002")]["engine"]
    assert alive["liveness"] == "alive" and alive["pid"] == 4242 and alive["badge"] == ""
    assert frozen["liveness"] == "stale" and frozen["badge"].startswith("NOT RESPONDING")
    assert browser[_id("00000002")][1] == f"pid 4242 {frozen['badge']}"
    assert browser[_id("00000001")][1] == "pid 4242"
    # An interrupted batch shows what items.db committed, not the manifest's older totals.
    interrupted = listed[_id("00000003")]
    assert interrupted["counts_from"] == "store" and interrupted["totals"]["complete"] > 10, interrupted
    assert interrupted["engine"] is None and interrupted["resumable"] is True
    # The backup manifest is said, and existing keys stay as scripts know them.
    assert listed[_id("00000009")]["manifest_from_backup"] is True
    from_backup = listed[_id("0000000d")]
    assert from_backup["manifest_from_backup"] is True and from_backup["counts_from"] == "store"
    assert from_backup["totals"]["complete"] == listed[_id("00000003")]["totals"]["complete"] > 0
    assert listed[_id("00000006")]["manifest_from_backup"] is False
    assert listed[_id("00000005")]["halt_reason"] == "failure rate 40%"
    assert listed[_id("0000000b")]["error"]
    for key in ("batch_id", "path", "name", "state", "halt_reason", "engine", "totals", "percent"):
        assert key in listed[_id("00000006")]
    for key in ("duplicates_dropped", "created_at", "updated_at", "processor"):
        assert key in listed[_id("00000006")]


# -- a real full disk (a small tmpfs; needs root) ----------------------------------------------------


def test_a_disk_full_halt_that_could_not_write_the_manifest_shows_interrupted(
    tmp_path: Path, small_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = small_fs / "out"
    source = tmp_path / "lines.txt"
    source.write_text("".join(f"line {i}\n" for i in range(3000)))
    env = cli_env(out, {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")})
    monkeypatch.setenv("XDG_STATE_HOME", env["XDG_STATE_HOME"])
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    engine = subprocess.Popen(
        [*CLI, "run", str(source), "--call", f"{PROCS}:work", "--executor", "thread", "-j", "4", "--headless"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(lambda: engine.poll() is not None or (out.is_dir() and any(out.iterdir())), 60, "the batch dir")
        assert engine.poll() is None, engine.stderr.read().decode() if engine.stderr else ""
        batch = only_batch(out)
        wait_until(lambda: (batch / "results.jsonl").exists() and (batch / "results.jsonl").stat().st_size > 2000, 60)
        # Take every free byte (the close's flush fails too: inside the suppress).
        with contextlib.suppress(OSError), (small_fs / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        engine.wait(timeout=120)
    finally:
        if engine.poll() is None:
            kill_group(engine, signal.SIGKILL)
    err = engine.stderr.read().decode() if engine.stderr else ""
    assert engine.returncode == 3, (engine.returncode, err[-2000:])
    manifest = orjson.loads((batch / "manifest.json").read_bytes())
    assert manifest["state"] == "running", manifest["state"]  # the halt could not be written
    listed = json.loads(_cli("ls", "--json", "-o", str(out)))
    shown = json.loads(_cli("show", batch.name, "--json", "-o", str(out)))
    assert [r["state"] for r in listed] == ["interrupted"] and shown["state"] == "interrupted"
    assert summarize(BatchDir(batch)).state == "interrupted"
    assert _browser_states(out, 1) == {batch.name: ("interrupted", "")}
    assert f"BATCH SUMMARY  {batch.name}  (interrupted)" in _cli("show", batch.name, "-o", str(out))


def test_one_failure_among_2500_items_is_not_a_100_percent_success(tmp_path: Path, invoke_cli: Any) -> None:
    """2,499 of 2,500 complete is 99.96%: the summary says 99.9%, never a rounded 100.0%."""
    source = tmp_path / "items.txt"
    source.write_text("".join(("fail\n" if i == 1234 else f"ok-{i}\n") for i in range(2500)))
    procs = Path(__file__).parent / "procs.py"
    proc = invoke_cli(["run", str(source), "--call", f"{procs}:fail_marked", "--executor", "thread", "--headless"])
    assert proc.returncode == 1, proc.stderr
    assert "  Failed:    1\n" in proc.stdout and "  Success:   99.9%\n" in proc.stdout, proc.stdout


def test_an_empty_batch_claims_no_success_rate(tmp_path: Path, out_dir: Path, invoke_cli: Any) -> None:
    """An empty source makes a batch of 0 items: its summary says nothing finished, never a
    "100.0%" success for items that never ran. `show` of the same batch says the same."""
    source = tmp_path / "items.txt"
    source.write_text("")
    procs = Path(__file__).parent / "procs.py"
    proc = invoke_cli(["run", str(source), "--call", f"{procs}:fail_marked", "--executor", "thread", "--headless"])
    assert proc.returncode == 0, proc.stderr
    assert "  Total:     0\n" in proc.stdout, proc.stdout
    assert "  Success:   — (nothing finished)\n" in proc.stdout, proc.stdout
    assert "100.0%" not in proc.stdout, proc.stdout
    shown = invoke_cli(["show", only_batch(out_dir).name])
    assert shown.returncode == 0, shown.stderr
    assert "  Success:   — (nothing finished)\n" in shown.stdout, shown.stdout


def test_show_of_a_running_batch_counts_in_flight_items_apart_from_pending(tmp_path: Path, out_dir: Path) -> None:
    """The items handed to the workers are "In flight" (the dashboard's tab), not "Pending";
    with no engine (killed), those it was running run again, and count as pending."""
    import sqlite3

    release = tmp_path / "release"
    (tmp_path / "items.txt").write_text("".join(f"i{n}\n" for n in range(20)))
    cmd = f"while [ ! -e '{release}' ]; do sleep 0.02; done"
    env = cli_env(out_dir)
    run_cli = [*CLI, "run", "items.txt", "--cmd", cmd, "-j", "2", "--detach"]
    subprocess.run(run_cli, env=env, cwd=tmp_path, capture_output=True, timeout=60, check=True)
    batch = only_batch(out_dir)

    def counts() -> tuple[int, int]:
        with contextlib.closing(sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)) as db:
            rows = dict(db.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall())
        return rows.get("pending", 0), rows.get("processing", 0)

    try:
        wait_until(lambda: counts()[1] >= 2, 30, "two items running")

        def live_counts() -> tuple[int, int]:
            live = json.loads((batch / "live_progress.json").read_text())["counts"]
            return live["pending"], live["processing"]

        def split() -> tuple[int, int]:
            live = json.loads((batch / "live_progress.json").read_text())["counts"]
            return live["running"], live["queued"]

        def shown_as_stored() -> bool:
            before, split_before = counts(), split()
            if live_counts() != before:
                return False  # the engine's live file (what show reads) is a tick behind its store
            show = [*CLI, "show", batch.name]
            out = subprocess.run(show, env=env, capture_output=True, text=True, timeout=60, check=True)
            pending, flight = counts()
            if (pending, flight) != before or live_counts() != before or split() != split_before:
                return False  # the window grew meanwhile: ask again
            running, queued = split_before
            assert running <= 2, split_before  # -j 2: the rest of those in flight wait in a queue
            shown = f" ({running} running, {queued} queued)" if running or queued else ""
            assert f"  In flight: {flight}{shown}\n" in out.stdout, out.stdout
            assert (f"  Pending:   {pending}\n" in out.stdout) == (pending > 0), out.stdout
            return True

        wait_until(shown_as_stored, 30, "show with counts that held still")
    finally:
        release.touch()
        subprocess.run([*CLI, "wait", batch.name], env=env, capture_output=True, timeout=120, check=False)


def test_in_flight_says_how_many_run_wait_in_a_queue_and_wait_to_retry() -> None:
    """'In flight' counts every item handed out ('processing'): the split says what they do."""
    from batchtui.engine.models import Counts, LiveCounts
    from batchtui.tui.cli.summary import _in_flight_split

    live = LiveCounts(total=20, pending=10, processing=10, running=2, queued=5, retrying=3)
    assert _in_flight_split(live) == " (2 running, 5 queued, 3 waiting to retry)"
    assert _in_flight_split(LiveCounts(total=20, processing=4, running=2, queued=2)) == " (2 running, 2 queued)"
    assert _in_flight_split(Counts(total=20, processing=4)) == ""  # the manifest's: no split known
    # The count is the last group commit's, the split the workers' of the moment: an item handed
    # out since then was shown as "In flight: 15 (0 running, 16 queued)" (seen while starts were
    # refused and handed back). The split is told within the count.
    assert _in_flight_split(LiveCounts(total=99, processing=15, queued=16)) == " (0 running, 15 queued)"
    assert (
        _in_flight_split(LiveCounts(total=99, processing=3, running=2, queued=1, retrying=4))
        == " (2 running, 1 queued)"
    )
