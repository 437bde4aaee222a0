"""The reader of a headless run's output goes away (`batchtui run ... 2>&1 | head -2`, a closed
terminal): the engine stops as on SIGHUP, gracefully, and its files agree.

Before, the write's BrokenPipeError escaped into the engine's loop: the batch was left
`stopped` with manifest totals that still counted 7 items `processing`, items.db another story,
and no report.json; a resume killed the same way left the manifest `running` with an open
history entry, so `ls` called it interrupted like a kill -9.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from .conftest import CLI, cli_env, only_batch


def test_a_run_whose_output_reader_went_away_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(30)))
    args = ["run", str(tmp_path / "items.txt"), "--cmd", "sleep 0.2", "-j", "2", "--headless"]
    proc = subprocess.Popen(
        [*CLI, *args, "--progress-interval", "0.2"],
        env=cli_env(out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # `batch ID: 30 items -> ...`, then the reader is gone
    assert b"30 items" in first
    proc.stderr.close()
    # Interrupted, resumable: DESIGN's 130, as on SIGHUP (with its stdout gone too, the summary's
    # write fails as well and the exit is 141, SIGPIPE's, as for any filter under pipefail).
    assert proc.wait(timeout=60) == 130
    batch = only_batch(out)
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["state"] == "stopped"
    assert manifest["history"][-1]["outcome"] == "stopped" and manifest["history"][-1]["ended_at"]
    with sqlite3.connect(batch / "items.db") as conn:
        stored = dict(conn.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall())
    totals = manifest["totals"]
    assert totals["processing"] == 0 and stored.get("processing", 0) == 0
    assert (totals["complete"], totals["pending"]) == (stored.get("complete", 0), stored.get("pending", 0))
    assert totals["pending"] == 30 - totals["complete"] > 0  # stopped early: the rest is resumable
    report = json.loads((batch / "report.json").read_text())
    assert report["totals"] == totals and report["state"] == "stopped"

    again = subprocess.run(
        [*CLI, "resume", batch.name, "--headless"], env=cli_env(out), capture_output=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    seqs = [json.loads(line)["seq"] for line in (batch / "results.jsonl").read_text().splitlines()]
    assert sorted(seqs) == list(range(30))  # each once
