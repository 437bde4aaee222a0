"""An invalid source record (a JSONL line that is not a JSON object, a ragged CSV row) is failed
when the batch is made, with only the bad line kept for the views ({"_raw": ..., "_line": n}).

A retry used to put it back to pending: the processor then ran on that placeholder as if it
were the record, and a command that took it (`echo {}`) marked the invalid line complete. For
a paid API the call was made with garbage. Now no retry, prioritize or `resume --retry-failed`
puts one back; each says how many it left and what to do (fix the source, `resume --rescan`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from batchtui.engine.store import ItemStore
from batchtui.engine.store.queries import ItemFilter, Selection

from .conftest import only_batch, read_jsonl

LINES = '{"a": 1}\n{"a": 2\n[1, 2]\n{"a": 3}\n'  # lines 2 and 3 are invalid records


def _batch(tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]) -> Path:
    src = tmp_path / "records.jsonl"
    src.write_text(LINES)
    got = tmp_path / "got.log"
    # {}: the whole item, whatever it is: the placeholder of an invalid line would "complete".
    done = invoke_cli(["run", str(src), "--cmd", f"echo {{}} >> {got}", "--headless"])
    assert done.returncode == 1, done.stderr  # 2 failed
    assert "Retry:" not in done.stdout  # nothing a retry could change
    return only_batch(out_dir)


def _statuses(batch: Path) -> dict[int, str]:
    store = ItemStore.open(batch / "items.db")
    try:
        return dict(store.conn.execute("SELECT seq, status FROM items"))
    finally:
        store.close()


def test_no_retry_puts_an_invalid_record_back(
    tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    batch = _batch(tmp_path, out_dir, invoke_cli)
    assert _statuses(batch) == {0: "complete", 1: "failed", 2: "failed", 3: "complete"}

    again = invoke_cli(["resume", batch.name, "--retry-failed", "--headless"])
    assert again.returncode == 1, again.stderr
    assert "requeued 0 failed items; 2 invalid source records not retried" in again.stderr
    assert "resume --rescan" in again.stderr

    for args, note in (
        (["retry", batch.name], "2 invalid source records not retried"),
        (["retry", batch.name, "--type", "InvalidRecord"], "2 invalid source records not retried"),
        (["prioritize", batch.name, "1"], "1 invalid source record not retried"),
    ):
        done = invoke_cli(args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert note in done.stderr, (args, done.stderr)

    assert _statuses(batch) == {0: "complete", 1: "failed", 2: "failed", 3: "complete"}
    got = (tmp_path / "got.log").read_text().splitlines()
    assert len(got) == 2 and "_raw" not in "".join(got)  # the processor never saw them
    assert sorted(r["seq"] for r in read_jsonl(batch / "results.jsonl")) == [0, 3]


def test_the_store_leaves_invalid_records_failed_and_counts_them(
    tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    batch = _batch(tmp_path, out_dir, invoke_cli)
    store = ItemStore.open(batch / "items.db")
    try:
        everything = Selection.of(ItemFilter())
        assert store.unretriable(everything) == 2
        assert store.retry_selected(everything) == {}
        assert store.prioritize(everything)[0] == {}
        assert store.retry_failed() == []
        # Skipped, then retried: they stay skipped (a retry takes skipped items back too).
        store.skip([1, 2])
        assert store.unretriable() == 2
        assert store.retry_selected(everything) == {}
    finally:
        store.close()
    assert _statuses(batch) == {0: "complete", 1: "skipped", 2: "skipped", 3: "complete"}


def test_a_corrected_line_runs_on_rescan(
    tmp_path: Path, out_dir: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    batch = _batch(tmp_path, out_dir, invoke_cli)
    (tmp_path / "records.jsonl").write_text('{"a": 1}\n{"a": 2}\n[1, 2]\n{"a": 3}\n')
    again = invoke_cli(["resume", batch.name, "--rescan", "--headless"])
    assert "rescan: 1 new, 1 missing" in again.stderr
    got = (tmp_path / "got.log").read_text().splitlines()
    assert len(got) == 3 and "_raw" not in "".join(got) and '"a": 2' in got[-1].replace('"a":2', '"a": 2')
