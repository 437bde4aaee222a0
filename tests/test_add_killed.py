"""An ``add`` killed -9 half-way: ``show`` and ``ls`` say so, and a plain ``resume`` finishes it
before it runs (nothing lost, nothing doubled), even when that resume is killed -9 in turn.

The added source is a FIFO the test writes: the reading blocks where the test stops writing, so
each kill lands mid-add (after chunks were committed), not at a moment a sleep guessed.
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


def _keys(db: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, key FROM items ORDER BY seq").fetchall()
    finally:
        conn.close()


def _meta(db: Path, k: str) -> str | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _killed_mid_read(
    args: list[str], env: dict[str, str], cwd: Path, fifo: Path, text: str, db: Path, past: int
) -> None:
    """Run ``batchtui ARGS`` (which reads ``fifo``), write ``text`` into the FIFO and hold it
    open; kill -9 the process once items.db holds more than ``past`` items."""
    proc = subprocess.Popen([*CLI, *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with feeding(fifo, text):
        try:
            wait_until(lambda: len(_keys(db)) > past, timeout=60, what="items committed by the add")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_an_add_killed_9_is_shown_and_finished_by_a_plain_resume_even_if_that_is_killed(
    tmp_path: Path, out_dir: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(out_dir)
    base = [f"k-{i:06d}" for i in range(10)]
    more = [f"k-{i:06d}" for i in range(5, 80_005)]  # 5 keys already in the batch
    (work / "base.txt").write_text("".join(f"{k}\n" for k in base))
    run = _cli(["run", "base.txt", "--call", NOOP, "--executor", "thread", "--headless"], env, work)
    assert run.returncode == 0, run.stderr
    bdir = only_batch(out_dir)
    bid, db = bdir.name, bdir / "items.db"
    fifo = work / "more.txt"
    os.mkfifo(fifo)

    # 1. The add is killed with part of the source committed.
    half = "".join(f"{k}\n" for k in more[:40_000])
    _killed_mid_read(["add", bid, "more.txt"], env, work, fifo, half, db, 10)
    rows = _keys(db)
    assert 10 < len(rows) <= 10 + 40_000 - 5
    assert [k for _, k in rows] == base + more[5 : len(rows) - 5]  # in order, nothing doubled
    assert _meta(db, "adding") is not None
    assert read_json(bdir / "manifest.json")["added_sources"] == []

    # show and ls say an add was cut short; the batch no longer reads "finished".
    show = _cli(["show", bid], env, work)
    assert show.returncode == 0, show.stderr
    assert "(stopped)" in show.stdout.splitlines()[1]
    assert "Warning:   an add was cut short, part of its source is not in the batch yet" in show.stdout
    assert f"`batchtui resume {bid}` reads the rest first" in show.stdout
    shown = json.loads(_cli(["show", bid, "--json"], env, work).stdout)
    assert shown["summary"]["add_cut_short"] is True and shown["state"] == "stopped"
    ls = _cli(["ls"], env, work)
    assert f"ADD CUT SHORT {bid}: an add was cut short" in ls.stdout

    # 2. The resume that finishes it is killed -9 in turn, further into the source.
    first = len(rows)
    rest = "".join(f"{k}\n" for k in more[:75_000])
    _killed_mid_read(["resume", bid, "--headless"], env, work, fifo, rest, db, first + 1)
    rows = _keys(db)
    assert first < len(rows) <= 10 + 75_000 - 5
    assert [k for _, k in rows] == base + more[5 : len(rows) - 5]
    assert _meta(db, "adding") is not None

    # 3. A plain resume (the source now whole, a file) finishes the add, then runs everything.
    fifo.unlink()
    fifo.write_text("".join(f"{k}\n" for k in more))
    res = _cli(["resume", bid, "--headless"], env, work)
    assert res.returncode == 0, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert f"batch {bid}: an add was cut short; the engine reads the rest of its source first" in said
    assert "an add to this batch was cut short: reading the rest of its source (more.txt (lines))" in said
    assert "the add that was cut short is finished: 79,995 items added in all, 5 duplicates dropped" in said
    rows = _keys(db)
    assert [k for _, k in rows] == base + more[5:]
    assert [s for s, _ in rows] == list(range(80_005))
    assert _meta(db, "adding") is None
    results = (bdir / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["seq"] for line in results) == list(range(80_005))  # each once
    manifest = read_json(bdir / "manifest.json")
    assert manifest["state"] == "finished" and manifest["changing"] is None
    assert manifest["totals"]["total"] == 80_005 and manifest["totals"]["complete"] == 80_005  # type: ignore[index]
    assert [s["entries"][0]["path"] for s in manifest["added_sources"]] == [str(fifo)]  # type: ignore[attr-defined]
    assert manifest["duplicates_dropped"] == 5
    assert read_json(bdir / "report.json")["duplicates_dropped"] == 5
    show = _cli(["show", bid], env, work)
    assert "(finished)" in show.stdout.splitlines()[1] and "cut short" not in show.stdout
    assert "ADD CUT SHORT" not in _cli(["ls"], env, work).stdout


def test_a_resume_finishes_an_add_killed_before_it_read_anything(tmp_path: Path, out_dir: Path) -> None:
    """Killed while it waited for its source: no item was added, the batch's items are all
    complete, and still ``resume`` is not "nothing to resume": it reads the source first."""
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(out_dir)
    (work / "base.txt").write_text("a\nb\n")
    assert _cli(["run", "base.txt", "--call", NOOP, "--executor", "thread", "--headless"], env, work).returncode == 0
    bdir = only_batch(out_dir)
    bid, db = bdir.name, bdir / "items.db"
    fifo = work / "more.txt"
    os.mkfifo(fifo)  # nobody writes it: the add blocks on its open
    proc = subprocess.Popen([*CLI, "add", bid, "more.txt"], env=env, cwd=work, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _meta(db, "adding") is not None, timeout=60, what="the add's note")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(_keys(db)) == 2
    assert "(stopped)" in _cli(["show", bid], env, work).stdout.splitlines()[1]
    fifo.unlink()
    fifo.write_text("b\nc\nd\n")
    res = _cli(["resume", bid, "--headless"], env, work)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing to resume" not in res.stdout + res.stderr
    assert (
        "the add that was cut short is finished: 2 items added in all, 1 duplicate dropped" in res.stderr + res.stdout
    )
    assert [k for _, k in _keys(db)] == ["a", "b", "c", "d"]
    manifest = read_json(bdir / "manifest.json")
    assert manifest["totals"]["complete"] == 4 and manifest["duplicates_dropped"] == 1  # type: ignore[index]
    assert read_json(bdir / "report.json")["duplicates_dropped"] == 1


def test_report_json_counts_the_duplicates_an_add_dropped(tmp_path: Path, out_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(out_dir)
    (work / "n5.txt").write_text("1\n2\n3\n4\n5\n")
    (work / "n3.txt").write_text("1\n2\n3\n")
    assert _cli(["run", "n5.txt", "--call", NOOP, "--executor", "thread", "--headless"], env, work).returncode == 0
    bdir = only_batch(out_dir)
    assert read_json(bdir / "report.json")["duplicates_dropped"] == 0
    add = _cli(["add", bdir.name, "n3.txt"], env, work)
    assert add.returncode == 0 and "0 items added, 3 duplicates dropped" in add.stdout
    assert "  Duplicates dropped: 3" in _cli(["show", bdir.name], env, work).stdout
    assert read_json(bdir / "manifest.json")["duplicates_dropped"] == 3
    assert read_json(bdir / "report.json")["duplicates_dropped"] == 3
    res = _cli(["resume", bdir.name, "--headless"], env, work)
    assert res.returncode == 0 and "nothing to resume" in res.stdout + res.stderr
    assert read_json(bdir / "report.json")["duplicates_dropped"] == 3


def test_an_add_from_a_pipe_that_pauses_commits_what_came_and_keeps_it_after_a_kill_9(
    tmp_path: Path, out_dir: Path
) -> None:
    """``add B -`` from a pipe whose writer pauses: the lines that came are in the batch within a
    tick or so (they sat unread-for-the-store until 20,000 came or the pipe closed, and a kill -9
    or Ctrl-C lost them, stdin being unreadable again). Killed, its items stay, and the manifest
    says they came from stdin: a ``--rescan --drop-missing`` is refused, never skipping them as
    keys gone from the sources."""
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(out_dir)
    (work / "base.txt").write_text("a\nb\nc\n")
    assert _cli(["run", "base.txt", "--call", NOOP, "--executor", "thread", "--headless"], env, work).returncode == 0
    bdir = only_batch(out_dir)
    bid, db = bdir.name, bdir / "items.db"
    proc = subprocess.Popen(
        [*CLI, "add", bid, "-"],
        env=env,
        cwd=work,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"".join(b"p-%d\n" % i for i in range(30)))
        proc.stdin.flush()  # and held open: the writer pauses
        wait_until(lambda: len(_keys(db)) == 33, timeout=20, what="the 30 lines committed while the pipe is open")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL

    (work / "more.txt").write_text("m\n")
    res = _cli(["add", bid, "more.txt"], env, work)  # finishes the cut add first: stdin cannot be
    assert res.returncode == 2 and "30 of its items were added" in res.stderr, res.stderr
    assert read_json(bdir / "manifest.json")["added_sources"][0]["entries"][0]["kind"] == "stdin"  # type: ignore[index]
    res = _cli(["resume", bid, "--rescan", "--drop-missing", "--headless"], env, work)
    assert res.returncode == 2 and "had items added from stdin" in res.stderr, res.stdout + res.stderr
    res = _cli(["resume", bid, "--headless"], env, work)
    assert res.returncode == 0, res.stdout + res.stderr
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall() == [("complete", 33)]
    finally:
        conn.close()
