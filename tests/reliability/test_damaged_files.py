"""Damaged batch files: manifest, results.jsonl tail, live_progress.json, items.db, a full disk.

Every case ends with a resume that finishes and keeps every invariant, or with one clear error
(exit 2, no traceback) that names the file and the way out.
"""

from __future__ import annotations

import resource
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from .helpers import (
    PROCS,
    assert_invariants,
    assert_no_traceback,
    batches,
    cli,
    exec_log,
    invoke,
    kill_group,
    only_batch,
    read_json,
    start,
    store_counts,
    store_items,
    strict_jsonl,
    wait_until,
)

N = 800


def _lines(tmp_path: Path, n: int = N) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"item-{i:06d}\n" for i in range(n)))
    return path


def _partial_batch(
    tmp_path: Path, out_dir: Path, env: dict[str, str], *, n: int = N, sig: int = signal.SIGTERM, at: int = 150
) -> Path:
    """A batch stopped (SIGTERM: cleanly; SIGKILL: a crash) after ``at`` results or more."""
    source = _lines(tmp_path, n)
    proc = start(
        ["run", str(source), "--call", f"{PROCS}:work", "--executor", "thread", "-j", "3", "--headless"],
        out=out_dir,
        cwd=tmp_path,
        env=env,
    )

    def progressed() -> bool:
        found = batches(out_dir)
        return (
            bool(found)
            and (found[0] / "results.jsonl").exists()
            and len((found[0] / "results.jsonl").read_bytes().splitlines()) >= at
        )

    try:
        wait_until(progressed, 60, f"{at} results")
    finally:
        kill_group(proc, sig)
    batch = only_batch(out_dir)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
        assert_invariants(batch, n_items=n, state="stopped")
    counts = store_counts(batch)
    assert counts["pending"] + counts["processing"] > 0, "the run ended before it could be stopped"
    return batch


def _finish(batch: Path, out_dir: Path, tmp_path: Path, env: dict[str, str], n: int = N) -> dict[str, Any]:
    proc = invoke(["resume", batch.name, "--headless", "-j", "8"], out=out_dir, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)
    checked = assert_invariants(batch, n_items=n, state="finished")
    assert len(checked["results"]) == n
    return checked


def _runs(elog: Path) -> dict[int, int]:
    runs: dict[int, int] = {}
    for seq, _a, _p in exec_log(elog):
        runs[seq] = runs.get(seq, 0) + 1
    return runs


@pytest.fixture
def elog(tmp_path: Path) -> Path:
    return tmp_path / "exec.log"


@pytest.fixture
def env(elog: Path) -> dict[str, str]:
    return {"BTUI_TEST_EXEC_LOG": str(elog)}


# -- manifest.json -------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xff garbage {{{ not json" * 10)


def _delete(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage", [_truncate, _delete], ids=["truncated", "deleted"])
def test_damaged_manifest_recovers_from_backup(tmp_path: Path, out_dir: Path, env: dict[str, str], damage) -> None:  # type: ignore[no-untyped-def]
    batch = _partial_batch(tmp_path, out_dir, env)
    damage(batch / "manifest.json")
    for args in (["show", batch.name], ["ls"]):
        proc = invoke(args, out=out_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert_no_traceback(proc)
        assert batch.name in proc.stdout
    _finish(batch, out_dir, tmp_path, env)
    # The damaged copy never became the backup: both files are whole JSON again.
    read_json(batch / "manifest.json")
    read_json(batch / "manifest.json.bak")


def test_manifest_and_backup_damaged_is_a_clear_error(tmp_path: Path, out_dir: Path, env: dict[str, str]) -> None:
    batch = _partial_batch(tmp_path, out_dir, env)
    _garbage(batch / "manifest.json")
    _truncate(batch / "manifest.json.bak")
    for args in (["resume", batch.name, "--headless"], ["show", batch.name]):
        proc = invoke(args, out=out_dir, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert_no_traceback(proc)
        assert "manifest.json" in proc.stderr and "damaged" in proc.stderr, proc.stderr
    listed = invoke(["ls"], out=out_dir, cwd=tmp_path)
    assert listed.returncode == 0 and "damaged" in listed.stdout
    assert_no_traceback(listed)


def test_backup_is_never_replaced_by_a_damaged_manifest(tmp_path: Path) -> None:
    from batchtui.engine.files import atomic_write_bytes

    path = tmp_path / "manifest.json"
    atomic_write_bytes(path, b'{"v": 1}\n', backup=True)
    atomic_write_bytes(path, b'{"v": 2}\n', backup=True)
    assert read_json(path.with_name("manifest.json.bak")) == {"v": 1}
    path.write_bytes(b'{"v": 3')  # torn by hand or by a bad disk
    atomic_write_bytes(path, b'{"v": 4}\n', backup=True)
    assert read_json(path) == {"v": 4}
    assert read_json(path.with_name("manifest.json.bak")) == {"v": 1}


# -- results.jsonl ---------------------------------------------------------------------------------


def _pending_seqs(batch: Path, n: int, elog: Path) -> list[tuple[int, str]]:
    """Items pending in the store that never started. A SIGKILL leaves items that were running
    (or had just finished, their line past the committed offset) 'pending' too: the store marks
    an item 'processing' only once it has run for a second."""
    started = set(_runs(elog)) | {int(r["seq"]) for r in strict_jsonl(batch / "results.jsonl")}
    items = sorted(store_items(batch).items())
    found = [(seq, key) for seq, (key, status) in items if status == "pending" and seq not in started]
    assert len(found) >= n, "not enough pending items"
    return found[:n]


def test_results_tail_after_a_crash_adopted_or_cut_each_item_once(
    tmp_path: Path, out_dir: Path, env: dict[str, str], elog: Path
) -> None:
    """After a SIGKILL: a whole line past the committed offset (the crash came between the append
    and the commit) is adopted, not redone; a torn last line (the crash came mid-write) is cut
    and its item done once. Either way one line per item."""
    batch = _partial_batch(tmp_path, out_dir, env, sig=signal.SIGKILL)
    (adopted, adopted_key), (torn, torn_key) = _pending_seqs(batch, 2, elog)
    line = {
        "seq": adopted,
        "key": adopted_key,
        "result": {"adopted": True},
        "attempts": 1,
        "duration_s": 0.01,
        "finished_at": "x",
    }
    with (batch / "results.jsonl").open("ab") as fh:
        fh.write(orjson.dumps(line) + b"\n")
        fh.write(b'{"seq": %d, "key": "%s", "result": {"tor' % (torn, torn_key.encode()))
    checked = _finish(batch, out_dir, tmp_path, env)
    assert [r for r in checked["results"] if r["seq"] == adopted] == [line], "the adopted line must stay the only one"
    assert adopted not in _runs(elog), "an adopted item was run again"
    lines = [r for r in checked["results"] if r["seq"] == torn]
    assert len(lines) == 1 and lines[0]["result"]["line"] == torn_key
    assert _runs(elog)[torn] == 1


# -- live_progress.json ------------------------------------------------------------------------------


def test_live_progress_deleted_is_rebuilt(tmp_path: Path, out_dir: Path, env: dict[str, str]) -> None:
    batch = _partial_batch(tmp_path, out_dir, env)
    live = batch / "live_progress.json"
    live.unlink()
    proc = invoke(["show", batch.name], out=out_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    # Deleted again while an engine runs: it is written again within a moment.
    engine = start(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path, env=env)
    try:
        wait_until(live.exists, 20, "live_progress.json")
        live.unlink()
        wait_until(lambda: live.exists() or engine.poll() is not None, 5, "live_progress.json rewritten")
        assert engine.wait(timeout=120) == 0
    finally:
        if engine.poll() is None:
            kill_group(engine)
    assert_invariants(batch, n_items=N, state="finished")


# -- items.db ---------------------------------------------------------------------------------------


def _quick_check_ok(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def _corrupt_middle(db: Path) -> None:
    """Garbage over the middle of items.db, moved until SQLite's quick check notices it."""
    size = db.stat().st_size
    original = db.read_bytes()
    for fraction in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8):
        with db.open("r+b") as fh:
            fh.seek(int(size * fraction) // 4096 * 4096)
            fh.write(b"\xde\xad\xbe\xef" * 2048)
        if not _quick_check_ok(db):
            return
        db.write_bytes(original)
    raise AssertionError("could not corrupt items.db detectably")


def _damaged_store_batch(tmp_path: Path, out_dir: Path, env: dict[str, str]) -> Path:
    batch = _partial_batch(tmp_path, out_dir, env)
    assert not (batch / "items.db-wal").exists() or (batch / "items.db-wal").stat().st_size == 0
    _corrupt_middle(batch / "items.db")
    return batch


def test_corrupted_store_resume_names_the_file_and_the_way_out_then_recover(
    tmp_path: Path, out_dir: Path, env: dict[str, str], elog: Path
) -> None:
    batch = _damaged_store_batch(tmp_path, out_dir, env)
    damaged = (batch / "items.db").read_bytes()
    done_before = {int(r["seq"]) for r in strict_jsonl(batch / "results.jsonl")}
    proc = invoke(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    assert "items.db" in proc.stderr and f"batchtui recover {batch.name}" in proc.stderr, proc.stderr

    rec = invoke(["recover", batch.name], out=out_dir, cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    assert_no_traceback(rec)
    assert "rebuilt" in rec.stdout
    kept = [p for p in batch.glob("items.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged, (
        f"the damaged store must be kept as it was: {sorted(p.name for p in batch.iterdir())}"
    )
    # Right after the recovery every file agrees with the rebuilt store.
    assert_invariants(batch, n_items=N, state="stopped")

    _finish(batch, out_dir, tmp_path, env)
    runs = _runs(elog)
    assert not {s for s in done_before if runs.get(s, 0) > 1}, "items finished before the damage were redone"
    assert all(n == 1 for n in runs.values()), "an item ran twice"


def test_resume_checks_the_whole_store_after_a_crash_only(tmp_path: Path, out_dir: Path, env: dict[str, str]) -> None:
    """The resume's full quick_check (about 1 s for 1M items) runs when the last engine never
    wrote its end; after a clean stop only the store's schema and one b-tree path are read
    (the engine still meets any damaged page it reads: see the resume test above)."""
    from batchtui.engine.batchdir import BatchDir
    from batchtui.engine.files import write_model
    from batchtui.engine.models import BatchState
    from batchtui.engine.preflight import Preflight, check_store

    batch = _damaged_store_batch(tmp_path, out_dir, env)
    bdir = BatchDir(batch)
    manifest = bdir.read_manifest()
    assert manifest.state == BatchState.STOPPED

    def level(thorough: bool | None) -> str:
        pf = Preflight()
        check_store(pf, batch, thorough=thorough)
        (store,) = [c for c in pf.checks if c.name == "store"]
        return store.level

    assert level(True) == "fail"  # `batchtui check`: always the whole store
    assert level(None) == "ok"  # a clean stop: the cheap check
    for state in (BatchState.RUNNING, BatchState.PAUSED, BatchState.STOPPING, BatchState.CREATED):
        write_model(bdir.manifest, manifest.model_copy(update={"state": state}), durable=False)
        assert level(None) == "fail", state  # the engine died: the whole store is checked


def test_corrupted_store_show_is_a_clear_error(tmp_path: Path, out_dir: Path, env: dict[str, str]) -> None:
    batch = _damaged_store_batch(tmp_path, out_dir, env)
    proc = invoke(["show", batch.name], out=out_dir, cwd=tmp_path)
    assert_no_traceback(proc)
    assert proc.returncode == 2
    assert "items.db" in proc.stderr and f"batchtui recover {batch.name}" in proc.stderr


def test_show_never_tracebacks_on_a_corrupted_store(tmp_path: Path, out_dir: Path, env: dict[str, str]) -> None:
    """Whatever show can still read, it never prints a traceback; a header it cannot read is named."""
    batch = _partial_batch(tmp_path, out_dir, env)
    db = batch / "items.db"
    with db.open("r+b") as fh:
        fh.write(b"this is not an SQLite file at all" * 4)  # over the header: nothing is readable
    for args in (["show", batch.name], ["show", batch.name, "--json"], ["ls"]):
        proc = invoke(args, out=out_dir, cwd=tmp_path)
        assert_no_traceback(proc)
        # ls lists what it can; show names the unreadable store (a user-facing error: exit 2).
        assert proc.returncode == (0 if args == ["ls"] else 2), (args, proc.stderr)
    proc = invoke(["show", batch.name], out=out_dir, cwd=tmp_path)
    assert "items.db" in proc.stderr and f"batchtui recover {batch.name}" in proc.stderr, proc.stderr
    proc = invoke(["export", batch.name], out=out_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "batchtui recover" in proc.stderr
    assert_no_traceback(proc)


def test_missing_store_recover(tmp_path: Path, out_dir: Path, env: dict[str, str], elog: Path) -> None:
    batch = _partial_batch(tmp_path, out_dir, env)
    for name in ("items.db", "items.db-wal", "items.db-shm"):
        (batch / name).unlink(missing_ok=True)
    proc = invoke(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert "does not exist" in proc.stderr and f"batchtui recover {batch.name}" in proc.stderr
    rec = invoke(["recover", batch.name, "--json"], out=out_dir, cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    info = orjson.loads(rec.stdout)
    assert info["damaged_kept_as"] is None and info["items"] == N
    assert info["complete_from_results"] == len(strict_jsonl(batch / "results.jsonl"))
    _finish(batch, out_dir, tmp_path, env)
    assert all(n == 1 for n in _runs(elog).values()), "an item ran twice"


def test_recover_of_a_store_gone_but_its_wal_names_the_file_it_kept(
    tmp_path: Path, out_dir: Path, env: dict[str, str]
) -> None:
    # items.db deleted, its write-ahead log left: what recover kept is that log, and it says so
    # (it named items.db.corrupt-<stamp>, which was never made).
    batch = _partial_batch(tmp_path, out_dir, env)
    (batch / "items.db").unlink()
    (batch / "items.db-shm").unlink(missing_ok=True)
    (batch / "items.db-wal").write_bytes(b"the leftover log")
    rec = invoke(["recover", batch.name, "--json"], out=out_dir, cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    kept = Path(orjson.loads(rec.stdout)["damaged_kept_as"])
    assert kept.name.startswith("items.db.corrupt-") and kept.name.endswith("-wal"), kept
    assert kept.read_bytes() == b"the leftover log"


def test_recover_keeps_failed_and_skipped_and_refuses_when_unsafe(tmp_path: Path, out_dir: Path) -> None:
    n = 60
    source = _lines(tmp_path, n)
    proc = invoke(
        ["run", str(source), "--call", f"{PROCS}:paced", "--executor", "thread", "-j", "4", "--max-attempts", "1"],
        out=out_dir,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr  # items with seq % 7 == 3 failed
    batch = only_batch(out_dir)
    retry = invoke(["retry", batch.name, "--seq", "3"], out=out_dir, cwd=tmp_path)
    assert retry.returncode == 0, retry.stderr
    skip = invoke(["skip", batch.name, "3"], out=out_dir, cwd=tmp_path)
    assert skip.returncode == 0, skip.stderr
    before = {s: st for s, (_k, st) in store_items(batch).items()}
    assert before[3] == "skipped" and before[10] == "failed"

    healthy = invoke(["recover", batch.name], out=out_dir, cwd=tmp_path)
    assert healthy.returncode == 2 and "healthy" in healthy.stderr
    assert_no_traceback(healthy)

    forced = invoke(["recover", batch.name, "--force", "--json"], out=out_dir, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    info = orjson.loads(forced.stdout)
    assert info["salvaged_skipped"] == 1 and info["salvaged_failed"] == before_count(before, "failed")
    assert {s: st for s, (_k, st) in store_items(batch).items()} == before
    assert_invariants(batch, n_items=n, state="finished")


def before_count(statuses: dict[int, str], status: str) -> int:
    return sum(1 for s in statuses.values() if s == status)


# -- a full disk -----------------------------------------------------------------------------------


def _limit(nbytes: int):  # type: ignore[no-untyped-def]
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return pre


def _biggest_file(batch: Path) -> int:
    return max(p.stat().st_size for p in batch.iterdir() if p.is_file())


def test_file_size_limit_stops_cleanly_and_resume_loses_nothing(
    tmp_path: Path, out_dir: Path, env: dict[str, str]
) -> None:
    n = 2500
    batch = _partial_batch(tmp_path, out_dir, env, n=n, at=300)
    results_before = (batch / "results.jsonl").read_bytes()
    limit = _biggest_file(batch) + 100_000
    proc = cli(
        ["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path, env=env, preexec_fn=_limit(limit), timeout=120
    )
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])  # halted
    assert_no_traceback(proc)
    assert "cannot write" in proc.stderr and f"batchtui resume {batch.name}" in proc.stderr, proc.stderr[-2000:]
    # Resumable, and nothing that was finished is gone.
    results_after = (batch / "results.jsonl").read_bytes()
    assert results_after.startswith(results_before)
    strict_jsonl(batch / "results.jsonl")
    assert read_json(batch / "manifest.json")["state"] != "finished"
    _finish(batch, out_dir, tmp_path, env, n=n)
    assert (batch / "results.jsonl").read_bytes().startswith(results_after)


def test_file_size_limit_while_creating_leaves_no_half_batch(tmp_path: Path, out_dir: Path) -> None:
    source = _lines(tmp_path, 20000)
    proc = cli(
        ["run", str(source), "--cmd", "true", "--headless"], out=out_dir, cwd=tmp_path, preexec_fn=_limit(200_000)
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert_no_traceback(proc)
    assert "cannot write items.db" in proc.stderr and "run again" in proc.stderr, proc.stderr
    assert "resume" not in proc.stderr  # nothing is left to resume
    assert batches(out_dir) == []


def test_file_size_limit_halts_with_exit_3(tmp_path: Path, out_dir: Path, env: dict[str, str]) -> None:
    n = 2500
    batch = _partial_batch(tmp_path, out_dir, env, n=n, at=300)
    limit = _biggest_file(batch) + 100_000
    proc = cli(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path, env=env, preexec_fn=_limit(limit))
    assert proc.returncode == 3, proc.stderr[-2000:]
    manifest = read_json(batch / "manifest.json")
    assert manifest["state"] == "halted" and "disk" in (manifest["halt_reason"] or "")
    assert "cannot write" in proc.stderr and f"batchtui resume {batch.name}" in proc.stderr, proc.stderr[-2000:]
    assert read_json(batch / "report.json")["state"] == "halted"  # small files still fit
    assert_no_traceback(proc)
    _finish(batch, out_dir, tmp_path, env, n=n)


def test_no_space_for_an_items_log_halts_instead_of_failing_items(tmp_path: Path, out_dir: Path) -> None:
    source = _lines(tmp_path, 20)
    # 300 kB of output: the engine's copy in logs/<seq>.out passes the 200 kB file size limit.
    cmd = "head -c 300000 /dev/zero"
    proc = cli(
        ["run", str(source), "--cmd", cmd, "-j", "2", "--headless"],
        out=out_dir,
        cwd=tmp_path,
        preexec_fn=_limit(200_000),
    )
    assert_no_traceback(proc)
    batch = only_batch(out_dir)
    counts = store_counts(batch)
    assert counts["failed"] == 0, f"items failed because the disk was full: {counts}"
    assert proc.returncode == 3


# -- a real full file system (a small tmpfs; needs root) ----------------------------------------------


def test_disk_full_on_tmpfs_stops_cleanly_then_resumes(tmp_path: Path, small_fs: Path, env: dict[str, str]) -> None:
    n = 3000
    out = small_fs / "out"
    source = _lines(tmp_path, n)
    engine = start(
        # 3 threads: about 7 s of work, so the run is still going when the pause comes (with 8,
        # a loaded CI machine saw it end between the 300th result and the pause).
        ["run", str(source), "--call", f"{PROCS}:work", "--executor", "thread", "-j", "3", "--headless"],
        out=out,
        cwd=tmp_path,
        env=env,
    )
    filler = small_fs / "filler"
    try:
        # Read while the engine appends: a line being written may be there in part (the file is
        # checked whole, strict_jsonl, once the engine has stopped).
        wait_until(lambda: bool(batches(out)) and _lines_written(batches(out)[0] / "results.jsonl") > 300, 60)
        # Paused before the disk fills, so the run cannot end first on a loaded machine (a CI
        # run saw all 3,000 items done before the filler was). A paused engine still writes its
        # live files (its elapsed time moves): it meets the full disk and halts.
        paused = cli(["pause", batches(out)[0].name, "--wait", "30"], out=out, cwd=tmp_path, env=env)
        assert paused.returncode == 0, paused.stderr
        free = shutil.disk_usage(small_fs).free
        # Unbuffered: a buffered file would try its last chunk again on close and raise there.
        with filler.open("wb", buffering=0) as fh:  # take every free byte
            try:
                while free > 0:
                    fh.write(b"\0" * min(free, 1 << 20))
                    free -= 1 << 20
            except OSError:
                pass
        engine.wait(timeout=120)
    finally:
        if engine.poll() is None:
            kill_group(engine)
    err = engine.stderr.read().decode() if engine.stderr else ""
    assert engine.returncode == 3, (engine.returncode, err[-2000:])  # halted
    assert "Traceback" not in err, err[-3000:]
    assert "cannot write" in err and ("No space left" in err or "disk is full" in err), err[-2000:]
    batch = only_batch(out)
    before = (batch / "results.jsonl").read_bytes()
    strict_jsonl(batch / "results.jsonl")
    filler.unlink()
    _finish(batch, out, tmp_path, env, n=n)
    assert (batch / "results.jsonl").read_bytes().startswith(before)


def test_recover_after_the_source_changed_keeps_every_result_at_its_seq(tmp_path: Path, out_dir: Path) -> None:
    """items.db lost and the source dir changed since (a file added in front, files removed):
    recover matches results by key, keeps each completed item at the seq its line names, keeps a
    finished item whose file is gone, and the resumed batch keeps every invariant."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02d}.txt").write_text(f"v{i}")
    proc = start(
        ["run", str(src), "--cmd", "cat {path}; sleep 0.1", "-j", "2", "--headless"], out=out_dir, cwd=tmp_path
    )
    try:
        wait_until(lambda: bool(batches(out_dir)) and _lines_written(batches(out_dir)[0] / "results.jsonl") >= 8, 60)
    finally:
        kill_group(proc, signal.SIGTERM)
    batch = only_batch(out_dir)
    done = {str(r["key"]): int(r["seq"]) for r in strict_jsonl(batch / "results.jsonl")}
    assert str(src / "f03.txt") in done and str(src / "f29.txt") not in done
    for name in ("items.db", "items.db-wal", "items.db-shm"):
        (batch / name).unlink(missing_ok=True)
    (src / "a-new.txt").write_text("new")  # sorts first: every old item moves by one
    (src / "f03.txt").unlink()  # finished, then removed
    (src / "f29.txt").unlink()  # never run, removed

    rec = invoke(["recover", batch.name, "--json"], out=out_dir, cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    info = orjson.loads(rec.stdout)
    assert info["orphans"] == 1 and info["moved"] == 0, info
    items = store_items(batch)
    for key, seq in done.items():
        assert items[seq] == (key, "complete"), (key, seq, items[seq])
    assert sorted(items) == list(range(30))  # 30 - 2 removed + 1 added + 1 kept = 30, dense

    final = invoke(["resume", batch.name, "--headless", "-j", "4"], out=out_dir, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    checked = assert_invariants(batch, n_items=30, state="finished")
    by_key = {str(r["key"]): r for r in checked["results"]}
    assert by_key[str(src / "a-new.txt")]["result"] == {"stdout_tail": "new"}
    assert by_key[str(src / "f03.txt")]["result"] == {"stdout_tail": "v3"}


def test_recover_of_a_stdin_batch_is_a_clear_error(tmp_path: Path, out_dir: Path) -> None:
    proc = invoke(["run", "-", "--cmd", "true", "--headless"], out=out_dir, cwd=tmp_path, input="a\nb\nc\n")
    assert proc.returncode == 0, proc.stderr
    batch = only_batch(out_dir)
    (batch / "items.db").unlink()
    rec = invoke(["recover", batch.name], out=out_dir, cwd=tmp_path)
    assert rec.returncode == 2 and "stdin" in rec.stderr, rec.stderr
    assert_no_traceback(rec)
    assert not (batch / "items.db").exists() and not list(batch.glob(".items.db*"))


def test_a_crash_before_items_db_existed_resumes_without_recover(tmp_path: Path, out_dir: Path) -> None:
    """create_batch writes the manifest, then items.db: a crash between the two leaves a batch
    with a manifest in state 'created' and nothing else. Nothing ran, so resume builds the store
    itself (as `recover` would) and runs the batch."""
    n = 40
    source = _lines(tmp_path, n)
    made = invoke(["run", str(source), "--cmd", "true", "--headless"], out=out_dir, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    batch = only_batch(out_dir)
    manifest = read_json(batch / "manifest.json")
    for path in batch.iterdir():
        if path.name != "manifest.json":
            path.unlink()
    blank = {"total": 0, "pending": 0, "processing": 0, "complete": 0, "failed": 0, "skipped": 0}
    manifest.update(state="created", history=[], started_at=None, ended_at=None, totals=blank)
    (batch / "manifest.json").write_bytes(orjson.dumps(manifest))

    proc = invoke(["resume", batch.name, "--headless"], out=out_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "creation was cut short" in proc.stderr
    assert_no_traceback(proc)
    assert_invariants(batch, n_items=n, state="finished")


def _lines_written(path: Path) -> int:
    """The whole lines of a file another process appends to (its last may be half written)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0
