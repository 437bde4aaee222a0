"""A ``run`` killed -9 while it enqueues its source: ``show`` and ``ls`` count the items already
in items.db (not the manifest's 0/0, written before the enqueue) and say the enqueue was cut
short and that ``resume`` reads the rest, as they do for a killed ``add`` (test_add_killed.py).

The source is a FIFO the test writes and holds open: the run blocks where the test stops
writing, so the kill lands mid-enqueue (after chunks were committed), not at a guessed moment.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

from .conftest import CLI, cli_env, feeding, only_batch, read_json, wait_until

NOOP = f"{Path(__file__).with_name('procs.py')}:noop"


def _stored(out: Path) -> int:
    """Items in the one batch's items.db under ``out`` (0 before there is one)."""
    dbs = list(out.glob("*/items.db")) if out.exists() else []
    if not dbs:
        return 0
    try:
        conn = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # created, its tables not yet
        return 0


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_a_run_killed_9_mid_enqueue_shows_what_is_stored_and_that_resume_reads_the_rest(
    tmp_path: Path, out_dir: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(out_dir)
    keys = [f"k-{i:06d}" for i in range(100_000)]
    fifo = work / "src.txt"
    os.mkfifo(fifo)
    args = ["run", "src.txt", "--call", NOOP, "--executor", "thread", "--headless"]
    proc = subprocess.Popen([*CLI, *args], env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = "".join(f"{k}\n" for k in keys[:60_000])  # 540 kB: more than a read and a pipe's buffer
    with feeding(fifo, text):
        try:
            wait_until(lambda: _stored(out_dir) > 10, timeout=60, what="items committed by the run's enqueue")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    bdir = only_batch(out_dir)
    bid = bdir.name
    stored = _stored(out_dir)
    assert 10 < stored <= 60_000
    assert read_json(bdir / "manifest.json")["totals"]["total"] == 0  # type: ignore[index]

    show = _cli(["show", bid], env, work)
    assert show.returncode == 0, show.stderr
    assert "(interrupted)" in show.stdout.splitlines()[1]
    assert f"  Total:     {stored}\n" in show.stdout
    assert f"  Pending:   {stored}\n" in show.stdout
    said = "the batch's enqueue was cut short, part of its source is not in the batch yet;"
    assert f"  Warning:   {said} `batchtui resume {bid}` reads the rest first" in show.stdout
    assert "an add was cut short" not in show.stdout
    summary = json.loads(_cli(["show", bid, "--json"], env, work).stdout)["summary"]
    assert summary["enqueue_cut_short"] is True and summary["add_cut_short"] is False
    assert summary["totals"]["total"] == stored and summary["counts_from"] == "store"
    assert summary["state"] == "interrupted" and summary["resumable"] is True
    ls = _cli(["ls"], env, work).stdout
    row = next(line for line in ls.splitlines() if line.startswith(bid))
    assert row.split()[1] == "interrupted" and f"0/{stored}" in row.split()
    assert f"ENQUEUE CUT SHORT {bid}: {said} `batchtui resume {bid}` reads the rest first" in ls
    [listed] = json.loads(_cli(["ls", "--json"], env, work).stdout)
    assert listed["enqueue_cut_short"] is True and listed["totals"]["total"] == stored

    # A plain resume (the source now whole, a file) reads the rest, then runs everything.
    fifo.unlink()
    fifo.write_text("".join(f"{k}\n" for k in keys))
    res = _cli(["resume", bid, "--headless"], env, work)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the previous engine died while enqueuing: reading the rest of the source" in res.stdout + res.stderr
    assert read_json(bdir / "manifest.json")["totals"]["complete"] == 100_000  # type: ignore[index]
    show = _cli(["show", bid], env, work)
    assert "(finished)" in show.stdout.splitlines()[1] and "cut short" not in show.stdout
    assert "CUT SHORT" not in _cli(["ls"], env, work).stdout
