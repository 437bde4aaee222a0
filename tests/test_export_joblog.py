"""`export --format joblog` writes GNU parallel's job log: compared with a real
`parallel --joblog` file of the same jobs (engine/joblog.py)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.joblog import exit_and_signal

from .conftest import only_batch

INPUTS = ["x", "y z", "fail 3", "kill", "slow"]
CASES = 'case {} in "fail 3") exit 3;; kill) kill -9 $$;; slow) sleep 5;; *) echo {};; esac'
NUMBER = re.compile(r"\d+\.\d{3}")
RUNTIME = re.compile(r" *\d+\.\d{3}")


def _rows(text: str) -> tuple[str, list[list[str]]]:
    header, *lines = text.splitlines()
    return header, [line.split("\t") for line in lines]


@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed")
def test_joblog_matches_a_real_parallel_joblog(tmp_path: Path, out_dir: Path, invoke_cli: Any) -> None:
    theirs = tmp_path / "parallel.joblog"
    subprocess.run(
        ["parallel", "--will-cite", "--joblog", str(theirs), "--timeout", "1", CASES, ":::", *INPUTS],
        capture_output=True,
        check=False,
        timeout=60,
    )
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{line}\n" for line in INPUTS))
    run = invoke_cli(["run", str(items), "--cmd", CASES, "--timeout", "1", "--max-attempts", "1", "--workers", "5"])
    assert run.returncode == 1, run.stderr
    ours = tmp_path / "ours.joblog"
    export = invoke_cli(["export", only_batch(out_dir).name, "--format", "joblog", "--out", str(ours)])
    assert export.returncode == 0, export.stderr
    assert "exported 5 items" in export.stderr

    their_header, their_rows = _rows(theirs.read_text())
    our_header, our_rows = _rows(ours.read_text())
    assert our_header == their_header == "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    their_rows.sort(key=lambda r: int(r[0]))
    assert len(our_rows) == len(their_rows) == len(INPUTS)
    for ours_row, theirs_row in zip(our_rows, their_rows, strict=True):
        assert len(ours_row) == len(theirs_row) == 9
        # Seq, Host, Send, Receive (stdout bytes), Exitval, Signal: the same values.
        same = [0, 1, 4, 5, 6, 7]
        assert [ours_row[i] for i in same] == [theirs_row[i] for i in same], (ours_row, theirs_row)
        # Starttime and JobRuntime: the same formats (%.3f and %10.3f).
        for row in (ours_row, theirs_row):
            assert NUMBER.fullmatch(row[2]) and RUNTIME.fullmatch(row[3]) and len(row[3]) >= 10, row
    # Exit 3, killed by signal 9, the timeout's -1 and 15, as parallel logs them.
    assert [(r[6], r[7]) for r in our_rows] == [("0", "0"), ("0", "0"), ("3", "0"), ("0", "9"), ("-1", "15")]
    # The command is what ran: the template with each value shell-quoted.
    assert [r[8] for r in our_rows] == [CASES.replace("{}", shlex.quote(v)) for v in INPUTS]


def test_joblog_keeps_one_line_per_job_and_lists_only_jobs_that_ran(
    tmp_path: Path, out_dir: Path, invoke_cli: Any
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": 1, "v": "a\\tb\\nc"}\n{"id": 2, "v": "bad"}\n')
    command = "printf %s {v}; [ {v} != bad ]"
    run = invoke_cli(["run", str(items), "--key-field", "id", "--cmd", command, "--workers", "1"])
    assert run.returncode == 1, run.stderr
    batch = only_batch(out_dir)
    export = invoke_cli(["export", batch.name, "--format", "joblog"])
    assert [r[0] for r in _rows(export.stdout)[1]] == ["1", "2"]
    # The failed item goes back to pending: it is no job until it runs again.
    assert invoke_cli(["retry", batch.name, "1"]).returncode == 0
    export = invoke_cli(["export", batch.name, "--format", "joblog"])
    header, rows = _rows(export.stdout)
    assert header.startswith("Seq\t") and [r[0] for r in rows] == ["1"]
    assert rows[0][8] == "printf %s 'a\\tb\\nc'; [ 'a\\tb\\nc' != bad ]"  # tab and newline escaped
    assert rows[0][5] == "5"  # the bytes it printed


def test_exit_and_signal_as_parallel_logs_them() -> None:
    assert exit_and_signal("complete", None) == (0, 0)
    assert exit_and_signal("failed", "exit 7") == (7, 0)
    assert exit_and_signal("failed", "signal 15") == (0, 15)
    assert exit_and_signal("failed", "timeout") == (-1, 15)
    assert exit_and_signal("failed", "ValueError") == (1, 0)
