"""An ``add`` or a ``resume --rescan`` whose source cannot be read whole (a CSV quote never
closed after the first chunks were committed, a key field the file lacks) is refused with the
batch as it was: no items from before the bad line, no note of an add under way.

The add's note used to stay: every later ``add`` and ``--rescan`` read the bad source again and
failed with its error (the batch could never grow again), ``ls`` said "ADD CUT SHORT", and a
refused rescan left the rows before the bad line in the batch for the next resume to run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

from .conftest import CLI, cli_env, feeding, only_batch, read_json, wait_until

NOOP = f"{Path(__file__).with_name('procs.py')}:noop"
CHUNK = 20_000  # the store commits an enqueue chunk by chunk: the bad line comes after one


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _db(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _csv(path: Path, ids: range, tail: str = "") -> None:
    path.write_text("id,v\n" + "".join(f"{i},v{i}\n" for i in ids) + tail)


def _made(tmp_path: Path, out_dir: Path) -> tuple[Path, dict[str, str], Path]:
    """A finished batch of 3 CSV records keyed by id: (the work folder, the env, the batch)."""
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(out_dir)
    _csv(work / "base.csv", range(3))
    res = _cli(
        ["run", "base.csv", "--key-field", "id", "--call", NOOP, "--executor", "thread", "--headless"], env, work
    )
    assert res.returncode == 0, res.stderr
    return work, env, only_batch(out_dir)


def _as_it_was(bdir: Path, env: dict[str, str], work: Path, total: int = 3) -> None:
    db = bdir / "items.db"
    assert _db(db, "SELECT COUNT(*) FROM items") == [(total,)]
    assert _db(db, "SELECT k FROM meta WHERE k IN ('adding', 'rescan_base')") == []
    manifest = read_json(bdir / "manifest.json")
    assert manifest["changing"] is None and manifest["totals"]["total"] == total  # type: ignore[index]
    assert manifest["state"] == "finished"
    ls = _cli(["ls"], env, work)
    assert "CUT SHORT" not in ls.stdout + ls.stderr and f"{total}/{total}" in ls.stdout


def test_an_add_refused_for_a_bad_line_past_the_first_chunk_adds_nothing_and_the_next_add_works(
    tmp_path: Path, out_dir: Path
) -> None:
    work, env, bdir = _made(tmp_path, out_dir)
    _csv(work / "bad.csv", range(100, 100 + CHUNK + 5), 'x,"never closed\n1,2\n')
    res = _cli(["add", bdir.name, "bad.csv"], env, work)
    assert res.returncode == 2, res.stdout + res.stderr
    _as_it_was(bdir, env, work)
    assert "never closed" in res.stderr and f"nothing was added to batch {bdir.name}" in res.stderr

    (work / "nokey.csv").write_text("other\nz\n")  # refused at its header
    res = _cli(["add", bdir.name, "nokey.csv"], env, work)
    assert res.returncode == 2 and "--key-field 'id' is not a column" in res.stderr
    _as_it_was(bdir, env, work)

    _csv(work / "good.csv", range(2, 5))  # key 2 is in the batch
    res = _cli(["add", bdir.name, "good.csv", "--json"], env, work)
    assert res.returncode == 0, res.stderr
    assert [k for (k,) in _db(bdir / "items.db", "SELECT key FROM items ORDER BY seq")] == ["0", "1", "2", "3", "4"]
    assert read_json(bdir / "manifest.json")["added_sources"][0]["entries"][0]["path"].endswith("good.csv")  # type: ignore[index]


def test_a_rescan_refused_for_a_bad_line_changes_nothing(tmp_path: Path, out_dir: Path) -> None:
    work, env, bdir = _made(tmp_path, out_dir)
    _csv(work / "base.csv", range(CHUNK + 5), 'x,"never closed\n1,2\n')
    res = _cli(["resume", bdir.name, "--rescan", "--headless"], env, work)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "never closed" in res.stderr
    _as_it_was(bdir, env, work)
    assert read_json(bdir / "manifest.json")["duplicates_dropped"] == 0

    _csv(work / "base.csv", range(5))  # fixed: the rescan runs the two new rows
    res = _cli(["resume", bdir.name, "--rescan", "--headless"], env, work)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _db(bdir / "items.db", "SELECT status, COUNT(*) FROM items GROUP BY status") == [("complete", 5)]


def test_an_add_killed_9_whose_source_then_cannot_be_read_is_taken_back_by_resume(
    tmp_path: Path, out_dir: Path
) -> None:
    """The add is killed -9 with a chunk committed; its source is then replaced by one without
    the key field. The resume that finishes cut adds takes it back before anything runs, and
    the batch can grow again (the note stayed: every add and rescan failed on it)."""
    work, env, bdir = _made(tmp_path, out_dir)
    db = bdir / "items.db"
    fifo = work / "more.csv"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*CLI, "add", bdir.name, "more.csv"], env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    text = "id,v\n" + "".join(f"{i},v{i}\n" for i in range(100, 100 + CHUNK + 5000))
    with feeding(fifo, text):
        try:
            wait_until(lambda: _db(db, "SELECT COUNT(*) FROM items")[0][0] > 3, timeout=60, what="a committed chunk")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _db(db, "SELECT k FROM meta WHERE k='adding'") == [("adding",)]
    fifo.unlink()
    (work / "more.csv").write_text("other\nz\n")

    res = _cli(["resume", bdir.name, "--headless"], env, work)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--key-field 'id' is not a column" in res.stderr + res.stdout
    _as_it_was(bdir, env, work)
    _csv(work / "good.csv", range(3, 5))
    res = _cli(["add", bdir.name, "good.csv"], env, work)
    assert res.returncode == 0, res.stderr
    assert _db(db, "SELECT COUNT(*) FROM items") == [(5,)]


def test_an_add_of_the_batches_own_folder_is_refused_and_adds_nothing(tmp_path: Path, out_dir: Path) -> None:
    """`add B OUT` and `add B OUT/B` made the batch's store, WAL, lock and logs its items."""
    work, env, bdir = _made(tmp_path, out_dir)
    for source in (out_dir, bdir):
        res = _cli(["add", bdir.name, str(source)], env, work)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "the folder batchtui keeps its batches in" in res.stderr, res.stderr
        assert f"nothing was added to batch {bdir.name}" in res.stderr and "Traceback" not in res.stderr
        _as_it_was(bdir, env, work)
