"""End to end, as a user runs it: the CLI on real files, then every contract file checked."""

from __future__ import annotations

import re
import shutil
import sqlite3
import stat
import sysconfig
from pathlib import Path

import pytest

from batchtui.engine.models import LiveProgress, Manifest, Report, ResultLine

from .conftest import only_batch, read_json, read_jsonl


@pytest.fixture
def py_tree(tmp_path: Path) -> Path:
    """A few hundred real Python files (copied from the standard library), in subfolders."""
    src = Path(sysconfig.get_paths()["stdlib"])
    dest = tmp_path / "src"
    files = (
        sorted(src.glob("*.py"))[:150]
        + sorted((src / "email").glob("*.py"))
        + sorted((src / "json").glob("*.py"))
        + sorted((src / "asyncio").glob("*.py"))
    )
    for f in files:
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    (dest / "notes.txt").write_text("not python\n")
    return dest


def test_run_wc_over_real_files_and_every_contract_file(py_tree: Path, out_dir: Path, run_cli, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    n_files = len(list(py_tree.rglob("*.py")))
    assert n_files > 200
    proc = run_cli(["run", str(py_tree), "--glob", "*.py", "--cmd", "wc -l < {path}", "--headless", "-j", "2"])
    assert proc.returncode == 0, proc.stderr
    assert "BATCH SUMMARY" in proc.stdout
    assert re.search(
        r"Progress: \d+/\d+ \(\d+ ok, 0 failed, 0 skipped\) \| [\d.]+/s \| elapsed \S+ \| ETA \S+ \| RSS \d+ MB",
        proc.stderr,
    ), proc.stderr
    assert "\x1b" not in proc.stderr + proc.stdout  # no ANSI when not a terminal

    batch = only_batch(out_dir)
    assert re.fullmatch(r"\d{8}_\d{6}_[0-9a-f]{8}", batch.name)
    assert stat.S_IMODE(batch.stat().st_mode) == 0o700
    for f in batch.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f

    manifest = Manifest.model_validate(read_json(batch / "manifest.json"))
    assert manifest.version == 1 and manifest.batch_id == batch.name
    assert manifest.state == "finished" and manifest.halt_reason is None
    assert manifest.totals.total == n_files == manifest.totals.complete
    assert manifest.config["max_attempts"] == 3 and manifest.config["workers"] == 2
    assert manifest.processor["command"] == "wc -l < {path}"
    assert manifest.started_at and manifest.ended_at and manifest.created_at
    assert len(manifest.history) == 1 and manifest.history[0].action == "run"
    assert manifest.history[0].outcome == "finished"

    lines = read_jsonl(batch / "results.jsonl")
    assert len(lines) == n_files
    parsed = [ResultLine.model_validate(line) for line in lines]
    assert {frozenset(line) for line in lines} == {
        frozenset({"seq", "key", "result", "attempts", "duration_s", "finished_at"})
    }
    assert sorted(p.seq for p in parsed) == list(range(n_files))
    by_key = {p.key: p for p in parsed}
    some = sorted(py_tree.rglob("*.py"))[0]
    expected_lines = some.read_bytes().count(b"\n")
    assert str(expected_lines) in str(by_key[str(some.resolve())].result)

    live = LiveProgress.model_validate(read_json(batch / "live_progress.json"))
    assert live.state == "finished" and live.total == n_files
    assert live.counts.complete == n_files and live.percent == 100.0 and live.in_flight == []

    report = Report.model_validate(read_json(batch / "report.json"))
    assert report.totals.complete == n_files and report.success_rate == 1.0
    assert report.durations.count == n_files and report.peak_memory_mb > 0
    # The engine keeps a new batch's durations as they come; they are the store's exactly.
    with sqlite3.connect(batch / "items.db") as conn:
        stored = sorted(d for (d,) in conn.execute("SELECT duration_s FROM items WHERE status='complete'"))
    assert report.durations.max == round(stored[-1], 6)
    assert report.durations.p50 == round(stored[len(stored) // 2], 6)
    assert report.durations.mean == round(sum(stored) / len(stored), 6)
    assert report.config["workers"] == 2

    db = sqlite3.connect(batch / "items.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = dict(db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())
    assert rows == {"complete": n_files}
    assert db.execute("SELECT COUNT(*) FROM attempts WHERE status='complete'").fetchone()[0] == n_files
    assert db.execute("SELECT MIN(seq), MAX(seq) FROM items").fetchone() == (0, n_files - 1)
    db.close()

    # Resuming a finished batch changes nothing.
    before = {p.name: p.read_bytes() for p in batch.iterdir() if p.is_file() and not p.name.startswith("items.db")}
    again = invoke_cli(["resume", batch.name, "--headless"])
    assert again.returncode == 0, again.stderr
    assert "nothing to resume" in again.stderr
    after = {p.name: p.read_bytes() for p in batch.iterdir() if p.is_file() and not p.name.startswith("items.db")}
    assert before.keys() == after.keys()
    for name in before:
        if name != "lock":
            assert before[name] == after[name], name

    listed = invoke_cli(["ls", "--json"])
    assert listed.returncode == 0
    import json

    rows_ls = json.loads(listed.stdout)
    assert [r["batch_id"] for r in rows_ls] == [batch.name]
    assert rows_ls[0]["state"] == "finished" and rows_ls[0]["totals"]["complete"] == n_files
    assert rows_ls[0]["engine"] is None

    shown = invoke_cli(["show", batch.name])
    assert shown.returncode == 0 and batch.name in shown.stdout and f"Complete:  {n_files}" in shown.stdout
    shown_json = json.loads(invoke_cli(["show", batch.name, "--json"]).stdout)
    assert shown_json["counts"]["complete"] == n_files


def test_failures_exit_1_and_show_and_export(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"https://example.com/{i}\n" for i in range(30)) + "HTTPS://EXAMPLE.com/3#frag\n")
    cmd = "case {} in *7|*9) echo boom for {seq} >&2; exit 4;; *) printf '{{\"n\": %s}}\\n' {seq};; esac"
    proc = invoke_cli(["run", str(urls), "--cmd", cmd, "--headless", "--max-attempts", "1"])
    assert proc.returncode == 1, proc.stderr
    batch = only_batch(out_dir)
    manifest = Manifest.model_validate(read_json(batch / "manifest.json"))
    assert manifest.duplicates_dropped == 1
    assert manifest.totals.total == 30 and manifest.totals.failed == 6 and manifest.totals.complete == 24
    results = read_jsonl(batch / "results.jsonl")
    assert len(results) == 24
    assert all(r["result"] == {"n": r["seq"]} for r in results)

    shown = invoke_cli(["show", batch.name, "--json"])
    import json

    info = json.loads(shown.stdout)
    assert info["error_groups"][0]["error_type"] == "exit 4"
    assert info["error_groups"][0]["count"] == 6

    exported = invoke_cli(["export", batch.name, "--status", "failed"])
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(rows) == 6 and all(r["status"] == "failed" and r["error_type"] == "exit 4" for r in rows)
    assert rows[0]["error_message"].startswith("boom for")
    csv_out = invoke_cli(["export", batch.name, "--format", "csv"])
    import csv
    import io

    table = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert len(table) == 30
    assert list(table[0])[:5] == ["seq", "key", "data", "kind", "status"]
    assert sum(1 for r in table if r["status"] == "failed") == 6
    assert json.loads(table[7]["data"]) == "https://example.com/7"

    # An offline retry puts the failures back to pending: a plain `resume` (no id) finds the
    # batch again, though its manifest said finished, and runs exactly those six.
    retried = invoke_cli(["retry", batch.name])
    assert retried.returncode == 0, retried.stderr
    assert "6 failed items back to pending" in retried.stdout + retried.stderr
    resumed = invoke_cli(["resume", "--headless", "--max-attempts", "1"])
    assert resumed.returncode == 1, resumed.stderr
    after = Manifest.model_validate(read_json(batch / "manifest.json"))
    assert [h.action for h in after.history] == ["run", "resume"]
    assert after.totals.failed == 6 and after.totals.pending == 0 and after.totals.complete == 24
    assert len(read_jsonl(batch / "results.jsonl")) == 24
    # A resumed batch's report counts the durations of every complete item, from the store.
    assert Report.model_validate(read_json(batch / "report.json")).durations.count == 24


def test_user_errors_exit_2_without_traceback(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    cases = [
        ["run", str(tmp_path / "missing"), "--cmd", "true"],
        ["run", str(tmp_path), "--cmd", "true", "--call", "x:y"],
        ["run", str(tmp_path), "--cmd", "echo {nope"],
        ["run", str(tmp_path), "--call", "no_such_module_xyz:f", "--workers", "0"],
        ["resume", "nope"],
        ["show", "nope"],
    ]
    for args in cases:
        proc = invoke_cli(args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)


def test_stdin_lines_and_demo(out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    proc = invoke_cli(["run", "-", "--cmd", "printf %s {} | wc -c", "--headless"], input="a\nbb\n\nccc\n")
    assert proc.returncode == 0, proc.stderr
    demo = invoke_cli(["demo", "--items", "40", "--headless", "--json", "--backoff", "0"])
    # The demo's errors are drawn from each item's seq and attempt: the same 40 items always end
    # with one permanent failure (exit 1: some failed), the transient ones retried to success.
    assert demo.returncode == 1, demo.stderr
    import json

    summary = json.loads(demo.stdout)
    assert summary["totals"]["total"] == 40
    assert summary["totals"]["pending"] == 0
    assert (summary["totals"]["complete"], summary["totals"]["failed"]) == (39, 1)
