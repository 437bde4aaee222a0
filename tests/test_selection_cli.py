"""The CLI's selection (retry, skip, prioritize: SEQ..., --seq, --group, --type, --match,
--status, --key, --dry-run) and `errors`, through click's CliRunner on a fixture batch.

The fixture (tests/tui/fixtures.py, paused, 200 items, no engine): items 0..119 done, of them
failed 3, 54, 105 (TimeoutError), 20, 71 (ValueError), 37, 88 (exit 4), skipped 5; 120..199
pending. Keys are https://api.example.com/v1/documents/NNNNN.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batchtui.engine.grouping import group_id, normalize_message
from batchtui.engine.models import BatchState
from batchtui.tui.cli import main

from .tui.fixtures import ERRORS, hold_lock, make_batch

TIMEOUTS, VALUES, EXIT4 = [3, 54, 105], [20, 71], [37, 88]
FAILED = sorted(TIMEOUTS + VALUES + EXIT4)
GROUP = {etype: group_id(etype, normalize_message(msg)) for etype, _, msg in ERRORS}


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    return make_batch(tmp_path / "out", state=BatchState.PAUSED, n=200)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="batchtui")


def dry(batch: Path, *args: str) -> dict[str, Any]:
    """A --dry-run --json of ``args``: {selected, sample}."""
    got = cli(*args[:1], str(batch), *args[1:], "--dry-run", "--json")
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout)
    assert out["dry_run"] is True
    return {"selected": out["selected"], "sample": [s["seq"] for s in out["sample"]]}


def statuses(batch: Path) -> dict[int, str]:
    db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT seq, status FROM items"))
    finally:
        db.close()


def files(batch: Path) -> dict[str, bytes]:
    """Every file of the batch, its bytes: items.db, control.jsonl, the manifest... A reader of
    items.db makes SQLite's -shm index (no data) and an empty -wal: a write would fill it."""
    wal = batch / "items.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    return {p.name: p.read_bytes() for p in batch.iterdir() if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


def test_the_fixture_is_what_the_tests_say(batch: Path) -> None:
    st = statuses(batch)
    assert [s for s in sorted(st) if st[s] == "failed"] == FAILED
    assert [s for s in sorted(st) if st[s] == "skipped"] == [5]
    assert [s for s in sorted(st) if st[s] == "pending"] == list(range(120, 200))


@pytest.mark.parametrize(
    ("args", "selected", "sample"),
    [
        (["retry"], 7, FAILED[:5]),  # no flag: every failed item, as always
        (["retry", "--type", "exit 4"], 2, EXIT4),
        (["retry", "--group", GROUP["ValueError"]], 2, VALUES),
        (["retry", "--group", GROUP["ValueError"][:3]], 2, VALUES),  # a unique start of the id
        (["retry", "--match", "UPSTREAM TIMED"], 3, TIMEOUTS),  # any case, the message only
        (["retry", "--status", "skipped"], 1, [5]),
        (["retry", "--key", "*/0000[0-9]"], 2, [3, 5]),  # failed or skipped among 0..9
        (["retry", "--seq", "0-30"], 3, [3, 5, 20]),
        (["retry", "--seq", "3", "--seq", "88,90-100"], 2, [3, 88]),  # repeatable
        (["retry", "3", "37", "4"], 2, [3, 37]),  # positional seqs (4 is complete)
        (["retry", "105", "--seq", "50-60"], 2, [54, 105]),  # SEQ... and --seq: one list
        (["retry", "0-30", "88,90-100"], 4, [3, 5, 20, 88]),  # SEQ... takes --seq's ranges too
        (["retry", "--type", "TimeoutError", "--seq", "50-200"], 2, [54, 105]),  # AND
        (["retry", "--match", "token", "--type", "exit 4", "--key", "*8"], 1, [88]),
        (["skip", "--status", "pending", "--key", "*/0012?"], 10, [120, 121, 122, 123, 124]),
        (["skip", "--seq", "0-5"], 1, [3]),  # not complete, not skipped: 3 (failed) only
        (["skip", "--type", "ValueError"], 2, VALUES),
        (["prioritize", "--seq", "150-152,20"], 4, [20, 150, 151, 152]),  # pending, and failed
        (["prioritize", "--status", "pending", "--match", "x"], 0, []),  # pending items have no message
    ],
)
def test_each_selection_flag_alone_and_combined(batch: Path, args: list[str], selected: int, sample: list[int]) -> None:
    before = files(batch)
    if selected == 0:
        got = cli(args[0], str(batch), *args[1:], "--dry-run")
        assert got.exit_code == 1 and "nothing to" in got.output
    else:
        assert dry(batch, *args) == {"selected": selected, "sample": sample}
    assert files(batch) == before  # a dry run changes nothing


def test_a_selection_is_applied_offline_and_says_how_many_changed(batch: Path) -> None:
    got = cli("retry", str(batch), "--group", GROUP["TimeoutError"][:4], "--json")
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout)
    assert out["engine"] is False and out["selected"] == 3
    assert out["result"].startswith("3 failed items back to pending")
    st = statuses(batch)
    assert [s for s in TIMEOUTS if st[s] == "pending"] == TIMEOUTS
    assert st[20] == st[37] == "failed"

    got = cli("skip", str(batch), "--status", "pending", "--key", "*/0012?")
    assert got.exit_code == 0 and "10 skipped" in got.output, got.output
    assert [s for s in range(118, 132) if statuses(batch)[s] == "skipped"] == list(range(120, 130))

    got = cli("prioritize", str(batch), "199", "--seq", "37")
    assert got.exit_code == 0 and "2 items moved to the front (1 failed back to pending first)" in got.output
    db = sqlite3.connect(batch / "items.db")
    assert db.execute("SELECT seq FROM run_first ORDER BY ord").fetchall() == [(37,), (199,)]
    db.close()
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["totals"]["pending"] == 80 - 10 + 3 + 1  # the manifest agrees with the store


def test_an_empty_selection_says_so_lists_types_and_groups_and_sends_nothing(batch: Path) -> None:
    with hold_lock(batch):  # an engine holds it: a command would go to control.jsonl
        before = files(batch)
        got = cli("retry", str(batch), "--type", "timeout")
    assert got.exit_code == 1
    assert "nothing to retry: no item matches --type timeout" in got.stderr
    assert "error types: TimeoutError (3), " in got.stderr
    assert "ValueError (2)" in got.stderr and "exit 4 (2)" in got.stderr
    for etype, gid in GROUP.items():
        assert f"{gid}" in got.stderr and etype in got.stderr
    assert files(batch) == before and not (batch / "control.jsonl").exists()
    # Items that match but that the verb would not change: said as such.
    got = cli("retry", str(batch), "--seq", "0-2")
    assert got.exit_code == 1 and "3 items match --seq 0-2, but none is failed or skipped" in got.stderr
    got = cli("retry", str(batch), "--group", "ffffffff", "--json")
    assert got.exit_code == 1 and json.loads(got.stdout)["selected"] == 0
    got = cli("retry", str(batch), "--group", "fff")
    assert got.exit_code == 1 and "no error group id starts with fff" in got.stderr
    # Numbers past the batch's last item: which numbers it has, not its error groups.
    got = cli("skip", str(batch), "250", "300-400")
    assert got.exit_code == 1 and "no item matches --seq 250,300-400\n  the batch's items are #0 to #199" in got.stderr
    assert "error types" not in got.stderr
    assert files(batch) == before


def test_dry_run_with_a_live_engine_appends_nothing(batch: Path) -> None:
    (batch / "control.jsonl").write_bytes(b'{"id":"a","ts":"t","op":"pause"}\n')
    with hold_lock(batch):
        before = files(batch)
        got = cli("skip", str(batch), "--status", "pending", "--dry-run")
    assert got.exit_code == 0, got.output
    assert (
        "skip would change 80 items (" in got.stdout
        and "#120  https://api.example.com/v1/documents/00120" in got.stdout
    )
    assert "... and 75 more" in got.stdout
    assert files(batch) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["skip"], "say which items to skip"),
        (["prioritize"], "say which items to prioritize"),
        (["retry", "--seq", "7-3"], "first number is above its last"),
        (["retry", "--seq", "x"], "not an item number"),
        (["retry", "5-x"], "'5-x' is not an item number (digits 0-9) or a range like 7-20"),
        (["retry", "--seq", "1,,2"], "not an item number"),
        (["retry", "--seq", str(1 << 63)], "item numbers are 0.."),
        (["retry", "--group", "zz"], "not an error group id"),
        (["retry", "--group", "123456789"], "not an error group id"),
        (["retry", "--status", "done"], "'done' is not one of"),
    ],
)
def test_usage_errors_are_exit_2(batch: Path, args: list[str], message: str) -> None:
    got = cli(args[0], str(batch), *args[1:])
    assert got.exit_code == 2, got.output
    assert message in got.output and "Traceback" not in got.output
    assert not (batch / "control.jsonl").exists()


def test_errors_lists_the_groups_in_80_columns_and_as_json(batch: Path) -> None:
    got = CliRunner().invoke(main, ["errors", str(batch)], env={"COLUMNS": "80"})
    assert got.exit_code == 0, got.output
    lines = got.stdout.splitlines()
    assert lines[0].split() == ["ID", "COUNT", "TYPE", "CATEGORY", "FIRST", "LAST", "EXAMPLE", "MESSAGE"]
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[1].startswith(f"{GROUP['TimeoutError']}     3 TimeoutError transient")
    assert lines[1].endswith("…")  # the message, cut to fit
    assert "#3 " in lines[1]
    got = cli("errors", str(batch), "--json")
    groups = json.loads(got.stdout)
    assert [(g["id"], g["error_type"], g["count"], g["example_seq"]) for g in groups] == [
        (GROUP["TimeoutError"], "TimeoutError", 3, 3),
        (GROUP["ValueError"], "ValueError", 2, 20),
        (GROUP["exit 4"], "exit 4", 2, 37),
    ]
    assert groups[0]["first_seen"] == groups[0]["last_seen"] == "2026-11-18T09:05:00.000+00:00"
    shown = json.loads(cli("show", str(batch), "--json").stdout)
    assert [g["id"] for g in shown["error_groups"]] == [g["id"] for g in groups]
    assert GROUP["ValueError"] in cli("show", str(batch)).stdout


def test_errors_of_a_batch_without_failures(tmp_path: Path) -> None:
    batch = make_batch(tmp_path / "out", state=BatchState.PAUSED, n=3)
    got = cli("errors", str(batch))
    assert got.exit_code == 0 and got.stdout.strip().endswith("no failed items")
    assert json.loads(cli("errors", str(batch), "--json").stdout) == []
