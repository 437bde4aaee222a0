"""A source that grows: ``resume --rescan [--drop-missing]`` and ``add`` (issue 20, point 5).

Each source kind is rescanned through the CLI (new keys run after the pending ones, in source
order; a key that disappeared is reported and, with --drop-missing, skipped with a reason; the
duplicates are those of the source as it is now, never added to the old count). stdin cannot be
rescanned; ``add`` keys and counts as the creation does, refuses a live engine; a rescan killed
-9 half-way leaves nothing doubled and finishes on the next one.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.growing import MISSING_REASON, rescan_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.sources import SourceEntry, SourceSpec, build_spec

from .conftest import CLI, cli_env, read_json, wait_until

Invoke = Callable[..., subprocess.CompletedProcess[str]]


def _write_source(kind: str, where: Path, keys: list[str]) -> tuple[Path, list[str], str]:
    """The source of ``kind`` holding ``keys`` in order (a key twice is a duplicate), the extra
    arguments it needs, and a template that prints an item's key."""
    if kind == "lines":
        path = where / "in.txt"
        path.write_text("".join(f"{k}\n" for k in keys))
        return path, [], "echo {} >> ../log"
    if kind == "csv":
        path = where / "in.csv"
        path.write_text("id,v\n" + "".join(f"{k},x\n" for k in keys))
        return path, ["--key-field", "id"], "echo {id} >> ../log"
    if kind == "jsonl":
        path = where / "in.jsonl"
        path.write_text("".join(json.dumps({"id": k}) + "\n" for k in keys))
        return path, ["--key-field", "id"], "echo {id} >> ../log"
    path = where / "dir"
    path.mkdir(exist_ok=True)
    for old in path.iterdir():
        if old.name not in keys:
            old.unlink()
    for k in keys:
        (path / k).write_text(k)
    return path, [], "echo {name} >> ../log"


def _make(out: Path, kind: str, src: Path, extra: list[str], cmd: str, cwd: Path) -> BatchDir:
    """A batch made from ``src`` and not run (its items pending), as ``run`` makes it."""
    as_kind = {"dir": "auto"}.get(kind, kind)
    spec = build_spec([str(src)], as_kind=as_kind, key_field=extra[1] if extra else None)  # type: ignore[arg-type]
    spec = spec.model_copy(update={"exclude": (str(out),)})
    config = load_config({"output_dir": str(out), "workers": 1}, environ={})
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return create_batch(config, spec, shell_spec(cmd))
    finally:
        os.chdir(here)


def _items(bdir: BatchDir) -> list[tuple[int, str, str, str | None]]:
    conn = sqlite3.connect(f"file:{bdir.items_db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, key, status, error_message FROM items ORDER BY seq").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["lines", "csv", "jsonl", "dir"])
def test_rescan_runs_new_keys_after_the_pending_ones_and_drops_the_missing(
    kind: str, tmp_path: Path, out_dir: Path, invoke_cli: Invoke
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    dup = kind != "dir"  # a directory cannot name a file twice
    src, extra, cmd = _write_source(kind, tmp_path, ["a", "b", "c", *(["a"] if dup else [])])
    bdir = _make(out_dir, kind, src, extra, cmd, work)
    assert read_json(bdir.manifest)["duplicates_dropped"] == (1 if dup else 0)
    # b disappears; d and e are new (d twice: one duplicate, as in the first reading).
    _write_source(kind, tmp_path, ["a", "c", "d", *(["d"] if dup else []), "e"])

    res = invoke_cli(["resume", bdir.batch_id, "--rescan", "--drop-missing", "--headless"])

    assert res.returncode == 1, res.stderr  # b was skipped
    assert "Traceback" not in res.stderr
    assert "rescan: 2 new, 1 missing (skipped 1; seq 1" in res.stderr
    # The pending a and c ran first, then the new keys in source order; b never ran.
    assert (tmp_path / "log").read_text().split() == ["a", "c", "d", "e"]
    rows = _items(bdir)
    assert [r[2] for r in rows] == ["complete", "skipped", "complete", "complete", "complete"]
    assert rows[1][3] == MISSING_REASON
    assert rows[3][0] == 3 and rows[4][0] == 4
    manifest = read_json(bdir.manifest)
    # The source as it is now has one duplicate: the count is replaced, never added to.
    assert manifest["duplicates_dropped"] == (1 if dup else 0)
    assert manifest["totals"]["total"] == 5  # type: ignore[index]


def test_rescan_without_drop_missing_reports_and_keeps_them(tmp_path: Path, out_dir: Path, invoke_cli: Invoke) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src, extra, cmd = _write_source("lines", tmp_path, [f"k{i}" for i in range(10)])
    bdir = _make(out_dir, "lines", src, extra, cmd, work)
    _write_source("lines", tmp_path, ["k0", "k9", "new"])

    res = invoke_cli(["resume", bdir.batch_id, "--rescan", "--headless"])

    assert res.returncode == 0, res.stderr
    # The count, and a sample of the first few (not all eight).
    assert "rescan: 1 new, 8 missing (kept; --drop-missing skips them; seq 1 'k1', 2 'k2'" in res.stderr
    assert "5 'k5', ..." in res.stderr and "'k6'" not in res.stderr
    assert [r[2] for r in _items(bdir)] == ["complete"] * 11


@pytest.mark.parametrize("flag", ["--rescan", "--retry-failed"])
def test_a_rescan_or_retry_with_no_batch_named_says_how_to_name_a_finished_one(
    tmp_path: Path, out_dir: Path, invoke_cli: Invoke, flag: str
) -> None:
    """Only unfinished batches are chosen for you; both flags are for finished ones too, which
    `resume FLAG` alone answered with a bare "no unfinished batch"."""
    work = tmp_path / "work"
    work.mkdir()
    src, extra, cmd = _write_source("lines", tmp_path, ["a"])
    bdir = _make(out_dir, "lines", src, extra, cmd, work)
    assert invoke_cli(["resume", bdir.batch_id, "--headless"]).returncode == 0

    res = invoke_cli(["resume", flag, "--headless"])

    assert res.returncode == 2, res.stderr
    assert f"a finished batch, name it: `batchtui resume ID {flag}` (`batchtui ls` lists them)" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_rescan_line_never_says_drop_missing_skips_complete_items() -> None:
    """--drop-missing leaves a complete item complete: the line says so, never "kept;
    --drop-missing skips them" of items it kept (it said that with --drop-missing given)."""
    from batchtui.engine.resume import rescan_summary
    from batchtui.engine.store import ScanOutcome

    sample = [(0, "a"), (1, "b")]
    done = ScanOutcome(read=2, distinct=2, new=0, missing={"complete": 2}, sample=sample, skipped=0)
    assert rescan_summary(done, drop_missing=True).startswith("0 new, 2 missing (2 complete kept; seq 0 'a'")
    assert rescan_summary(done).startswith("0 new, 2 missing (kept; seq 0 'a'")
    mixed = ScanOutcome(read=2, distinct=2, new=1, missing={"complete": 1, "pending": 2}, sample=sample, skipped=2)
    assert "(skipped 2, 1 complete kept; seq" in rescan_summary(mixed, drop_missing=True)
    assert "(kept; --drop-missing skips the 2 not done; seq" in rescan_summary(mixed)


def test_stdin_cannot_be_rescanned(tmp_path: Path, out_dir: Path, invoke_cli: Invoke) -> None:
    spec = SourceSpec(entries=(SourceEntry(kind="stdin", path="-"),))
    config = load_config({"output_dir": str(out_dir)}, environ={})
    bdir = create_batch(config, spec, shell_spec("true"), stdin=io.StringIO("a\nb\n"))

    res = invoke_cli(["resume", bdir.batch_id, "--rescan", "--headless"])

    assert res.returncode == 2
    assert res.stderr.strip() == (
        "error: cannot rescan: the batch was made from stdin (-), which cannot be read again;"
        " add new items with `batchtui add BATCH SOURCE...` instead"
    )
    assert [r[2] for r in _items(bdir)] == ["pending", "pending"]  # nothing ran


def test_add_keys_and_counts_as_the_creation_and_a_rescan_reads_it_again(
    tmp_path: Path, out_dir: Path, invoke_cli: Invoke
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src, extra, cmd = _write_source("lines", tmp_path, ["a", "b"])
    bdir = _make(out_dir, "lines", src, extra, cmd, work)
    more = tmp_path / "more.txt"
    more.write_text("b\nc\nc\n")  # b is in the batch, c twice: two duplicates

    res = invoke_cli(["add", bdir.batch_id, str(more), "--json"])

    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "batch_id": bdir.batch_id,
        "read": 3,
        "added": 1,
        "duplicates_dropped": 2,
        "unreadable": 0,
    }
    manifest = read_json(bdir.manifest)
    assert manifest["duplicates_dropped"] == 2
    assert manifest["totals"]["total"] == 3  # type: ignore[index]
    assert [s["entries"][0]["path"] for s in manifest["added_sources"]] == [str(more)]  # type: ignore[attr-defined]
    assert [r[1] for r in _items(bdir)] == ["a", "b", "c"]

    # The same sources again: refused, the rescan is what reads them again.
    again = invoke_cli(["add", bdir.batch_id, str(more)])
    assert again.returncode == 2 and "already reads these sources" in again.stderr

    # The added source grew: the rescan reads both, and counts its duplicates once.
    more.write_text("b\nc\nc\nd\n")
    res = invoke_cli(["resume", bdir.batch_id, "--rescan", "--headless"])
    assert res.returncode == 0, res.stderr
    assert "rescan: 1 new, 0 missing, 2 duplicates dropped" in res.stderr
    assert read_json(bdir.manifest)["duplicates_dropped"] == 2
    assert (tmp_path / "log").read_text().split() == ["a", "b", "c", "d"]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_add_keys_records_by_the_batchs_own_key_field_and_refuses_another_rule(
    tmp_path: Path, out_dir: Path, invoke_cli: Invoke, kind: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src, extra, cmd = _write_source(kind, tmp_path, ["1", "2"])  # made with --key-field id
    bdir = _make(out_dir, kind, src, extra, cmd, work)
    more = tmp_path / f"more.{kind}"
    rows = [("1", "changed"), ("3", "new")]  # record 1 is in the batch, with another value
    if kind == "csv":
        more.write_text("id,v\n" + "".join(f"{k},{v}\n" for k, v in rows))
    else:
        more.write_text("".join(json.dumps({"id": k, "v": v}) + "\n" for k, v in rows))

    # No --key-field: the batch's own is used, so record 1 is a duplicate (it ran a second time
    # before: keyed by its whole content, it looked new).
    res = invoke_cli(["add", bdir.batch_id, str(more), "--json"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["added"] == 1 and json.loads(res.stdout)["duplicates_dropped"] == 1
    assert [r[1] for r in _items(bdir)] == ["1", "2", "3"]
    assert read_json(bdir.manifest)["added_sources"][0]["key_field"] == "id"  # type: ignore[index]

    # Another field: refused, nothing added.
    other = tmp_path / f"other.{kind}"
    other.write_text(more.read_text().replace("3", "4"))
    res = invoke_cli(["add", bdir.batch_id, str(other), "--key-field", "v"])
    assert res.returncode == 2
    assert f"batch {bdir.batch_id} identifies its records by their field 'id': --key-field 'v'" in res.stderr
    assert [r[1] for r in _items(bdir)] == ["1", "2", "3"]


def test_add_with_a_key_field_to_a_batch_keyed_by_content_is_refused(
    tmp_path: Path, out_dir: Path, invoke_cli: Invoke
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1}\n')
    bdir = _make(out_dir, "jsonl", src, [], "true", work)  # no --key-field: keys by content
    more = tmp_path / "more.jsonl"
    more.write_text('{"id": 1}\n{"id": 2}\n')
    res = invoke_cli(["add", bdir.batch_id, str(more), "--key-field", "id"])
    assert res.returncode == 2
    assert "identifies its records by their whole content (it was made without --key-field)" in res.stderr
    res = invoke_cli(["add", bdir.batch_id, str(more), "--json"])  # by content: record 1 is known
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["added"] == 1 and json.loads(res.stdout)["duplicates_dropped"] == 1


def test_add_refuses_a_batch_an_engine_runs(tmp_path: Path, out_dir: Path, invoke_cli: Invoke) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src, extra, cmd = _write_source("lines", tmp_path, ["a"])
    bdir = _make(out_dir, "lines", src, extra, cmd, work)
    more = tmp_path / "more.txt"
    more.write_text("z\n")
    engine = BatchLock(bdir.lock)
    engine.acquire()
    try:
        res = invoke_cli(["add", bdir.batch_id, str(more)])
    finally:
        engine.release()
    assert res.returncode == 2
    assert f"batch {bdir.batch_id} is being run by pid {os.getpid()}" in res.stderr
    assert [r[1] for r in _items(bdir)] == ["a"]


def test_kill_9_during_a_rescan_doubles_nothing_and_the_next_rescan_finishes(tmp_path: Path, out_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    old = [f"line-{i:06d}" for i in range(20_000)]
    new = [f"line-{i:06d}" for i in range(20_000, 100_000)]
    src, extra, cmd = _write_source("lines", tmp_path, old)
    bdir = _make(out_dir, "lines", src, extra, cmd, work)
    # The source is now a FIFO: the rescan reads what the test writes, and waits for the rest,
    # so the kill lands while it reads, after some chunks of new keys were committed.
    src.unlink()
    os.mkfifo(src)
    env = cli_env(out_dir)
    proc = subprocess.Popen(
        [*CLI, "resume", bdir.batch_id, "--rescan", "--headless"],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    text = "".join(f"{k}\n" for k in old + new[:60_000])
    box: dict[str, Any] = {}

    def feed() -> None:
        try:
            with open(src, "w") as f:
                f.write(text)
                box["written"] = True
                wait_until(lambda: "killed" in box, what="the kill")
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()

    def committed() -> int:
        return len(_items(bdir))

    try:
        wait_until(lambda: committed() > 40_000, timeout=60, what="new keys committed by the rescan")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        box["killed"] = True
        writer.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    rows = _items(bdir)
    assert 40_000 < len(rows) < 100_000  # cut half-way
    assert [r[1] for r in rows] == (old + new)[: len(rows)]  # in order, nothing doubled
    assert [r[0] for r in rows] == list(range(len(rows)))

    src.unlink()
    src.write_text("".join(f"{k}\n" for k in old + new + new[:5]))
    lock = BatchLock(bdir.lock)
    lock.acquire()
    try:
        outcome = rescan_batch(bdir)
    finally:
        lock.release()
    # Every key once, in source order; the first rescan's new items still count as new.
    rows = _items(bdir)
    assert [r[1] for r in rows] == old + new
    assert outcome.new == 80_000 and outcome.missing_total == 0 and outcome.duplicates == 5
    manifest = read_json(bdir.manifest)
    assert manifest["totals"]["pending"] == 100_000  # type: ignore[index]
    assert manifest["duplicates_dropped"] == 5
    check = subprocess.run(
        [*CLI, "check", "--batch", bdir.batch_id],
        check=False,
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "PROCEED" in check.stdout, check.stdout + check.stderr


def test_the_preview_counts_what_a_rescan_then_finds_and_changes_nothing(tmp_path: Path, out_dir: Path) -> None:
    from batchtui.engine.rescan_preview import preview_rescan

    work = tmp_path / "work"
    work.mkdir()
    src, extra, cmd = _write_source("lines", tmp_path, [f"k{i}" for i in range(1500)])
    bdir = _make(out_dir, "lines", src, extra, cmd, work)
    _write_source("lines", tmp_path, [f"k{i}" for i in range(3, 1600)] + ["k1600", "k1600"])
    before = _items(bdir)

    preview = preview_rescan(bdir)

    assert (preview.new, preview.missing) == (101, 3)
    assert _items(bdir) == before
    lock = BatchLock(bdir.lock)
    lock.acquire()
    try:
        outcome = rescan_batch(bdir)
    finally:
        lock.release()
    assert (outcome.new, outcome.missing_total) == (preview.new, preview.missing)


def test_recover_rebuilds_the_added_items_too(tmp_path: Path, out_dir: Path, invoke_cli: Invoke) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src, extra, cmd = _write_source("lines", tmp_path, ["a", "b"])
    bdir = _make(out_dir, "lines", src, extra, cmd, work)
    more = tmp_path / "more.txt"
    more.write_text("b\nc\n")
    assert invoke_cli(["add", bdir.batch_id, str(more)]).returncode == 0
    bdir.items_db.write_bytes(b"not a database" * 100)

    res = invoke_cli(["recover", bdir.batch_id])

    assert res.returncode == 0, res.stderr
    assert [r[1] for r in _items(bdir)] == ["a", "b", "c"]
    assert read_json(bdir.manifest)["duplicates_dropped"] == 1


def test_work_given_back_to_a_finished_batch_makes_it_resumable_not_finished(
    tmp_path: Path, out_dir: Path, invoke_cli: Invoke
) -> None:
    # An add (or an offline retry) to a finished batch leaves pending items: its state is
    # "stopped" in the manifest, live_progress.json and ls, never "finished 2/3".
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    done = invoke_cli(["run", str(src), "--cmd", "[ {} != b ]", "--headless", "--name", "given"])
    assert done.returncode == 1, done.stderr  # b failed
    bdir = BatchDir(next(out_dir.iterdir()))
    assert read_json(bdir.manifest)["state"] == "finished"
    more = tmp_path / "more.txt"
    more.write_text("c\n")
    assert invoke_cli(["add", "given", str(more)]).returncode == 0
    assert read_json(bdir.manifest)["state"] == "stopped"
    assert read_json(bdir.live_progress)["state"] == "stopped"
    listed = invoke_cli(["ls"])
    assert f"{bdir.batch_id}  stopped" in listed.stdout, listed.stdout
    assert invoke_cli(["resume", "given", "--headless"]).returncode == 1  # b is still failed
    assert read_json(bdir.manifest)["state"] == "finished"
    assert invoke_cli(["retry", "given", "--key", "b"]).returncode == 0
    assert read_json(bdir.manifest)["state"] == "stopped"
