"""A change made without an engine (skip, retry, add, resume --retry-failed) killed after its
store commit and before its totals: every view still counts what items.db holds.

Before, show and ls kept the manifest's totals from before the change (`Skipped: 0` over 200,000
skipped items, `finished 50/50` over 300,050), while a second skip answered "nothing to skip";
nothing healed it until an engine ran the batch. The manifest now says a change is under way
(`changing`) before the store is touched, and views count in items.db while it says so.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import cli_env

#: The CLI, killed (os._exit, no clean-up: as kill -9) the moment the store change is committed,
#: before the manifest's totals are written.
KILLED_BEFORE_VIEWS = [
    sys.executable,
    "-c",
    "import os, sys\n"
    "import batchtui.engine.control as control\n"
    "control.write_views = lambda *a, **k: os._exit(9)\n"
    "from batchtui.tui.cli import main\n"
    "main(sys.argv[1:], prog_name='batchtui')\n",
]


def _cli(args: list[str], out: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "batchtui.tui.cli", *args]
    return subprocess.run(cmd, env=cli_env(out), cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def _stored(batch: Path) -> dict[str, int]:
    with sqlite3.connect(batch / "items.db") as conn:
        return dict(conn.execute("SELECT status, count(*) FROM items WHERE seq >= 0 GROUP BY status").fetchall())


@pytest.mark.parametrize(
    "change",
    [
        ["skip", "{b}", "--status", "failed"],
        ["retry", "{b}"],
        ["add", "{b}", "more.txt"],
        ["resume", "{b}", "--retry-failed"],
    ],
)
def test_views_agree_with_the_store_after_a_change_killed_before_its_totals(tmp_path: Path, change: list[str]) -> None:
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(10)))
    (tmp_path / "more.txt").write_text("".join(f"m{i}\n" for i in range(5)))
    made = _cli(["run", "items.txt", "--cmd", "[ {} -gt 3 ]", "--headless"], out, tmp_path)
    assert made.returncode == 1, made.stderr
    (batch,) = [p for p in out.iterdir() if p.is_dir()]
    before = _stored(batch)
    args = [w.replace("{b}", batch.name) for w in change] + (["--headless"] if change[0] == "resume" else [])
    killed = subprocess.run(
        [*KILLED_BEFORE_VIEWS, *args],
        env=cli_env(out),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == 9, killed.stderr  # killed at the worst moment, as meant
    stored = _stored(batch)
    assert stored != before  # the store changed; its totals were never written
    shown = json.loads(_cli(["show", batch.name, "--json"], out, tmp_path).stdout)
    listed = {b["batch_id"]: b for b in json.loads(_cli(["ls", "--json"], out, tmp_path).stdout)}
    for counts in (shown["counts"], listed[batch.name]["totals"]):
        got = {k: counts[k] for k in ("pending", "complete", "failed", "skipped")}
        assert got == {k: stored.get(k, 0) for k in got}, (got, stored)
        assert counts["total"] == sum(stored.values())
    if stored.get("pending"):  # work again: resumable, not "finished"
        assert shown["state"] != "finished" and listed[batch.name]["state"] != "finished"
    # The next change made whole clears the mark, and the totals are written again.
    again = _cli(["skip", batch.name, "--status", "pending"], out, tmp_path) if stored.get("pending") else None
    manifest = json.loads((batch / "manifest.json").read_text())
    if again is not None:
        assert again.returncode == 0, again.stderr
        assert manifest["changing"] is None
        assert manifest["totals"]["skipped"] == _stored(batch).get("skipped", 0)
    else:
        assert manifest["changing"] is not None  # still under way: views count in the store
