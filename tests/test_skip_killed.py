"""A skip of a running item, answered, then the engine killed (kill -9) before the item's end:
the skip holds. The item's 'skipped' was staged only when the killed item's outcome came back,
while the command was recorded as read at once: the resume found the item 'processing' (or
'pending'), ran it again and completed it, though `skip` had said "1 running item ends skipped"
(by hand: a shell item, `batchtui skip B 1 2 && kill -9 PID`, then resume: both ran twice).

The item here is a Python call on a thread, which cannot be killed: its outcome comes only when
the test lets it end, so the engine surely dies before it (a shell item's kill is quick, and its
outcome races the kill -9).
"""

from __future__ import annotations

import collections
import signal
from pathlib import Path

from .conftest import only_batch, wait_until
from .test_control_holds import PROCS, lines_file, rows, start_engine, starts


def test_a_running_item_skipped_then_the_engine_killed_stays_skipped(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
) -> None:
    log, release = tmp_path / "runs.log", tmp_path / "release"
    env = {"BTUI_TEST_EXEC_LOG": str(log), "BTUI_TEST_RELEASE": str(release), "BTUI_TEST_HELD_SEQ": "0"}
    args = [str(lines_file(tmp_path, 10)), "--call", f"{PROCS}:held_one_logged", "--executor", "thread", "-j", "2"]
    engine = start_engine(tmp_path, out_dir, args, env=env)
    try:
        wait_until(lambda: sorted(starts(log)) == list(range(10)), timeout=60, what="every item started")
        batch = only_batch(out_dir)
        skipped = invoke_cli(["skip", batch.name, "0"])
        assert skipped.returncode == 0, skipped.stdout + skipped.stderr
        assert "1 running item ends skipped" in skipped.stdout, skipped.stdout
        engine.send_signal(signal.SIGKILL)  # answered; the item still runs (a thread: unkillable)
        engine.wait(timeout=30)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(timeout=30)
    release.touch()  # were it to run again, it would end at once
    resumed = invoke_cli(["resume", batch.name, "--headless"], env=env)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # 1: some skipped
    assert collections.Counter(starts(log)) == dict.fromkeys(range(10), 1)
    assert rows(batch, "SELECT seq, status, error_message FROM items WHERE status != 'complete'") == [
        (0, "skipped", "skipped while running")
    ]
