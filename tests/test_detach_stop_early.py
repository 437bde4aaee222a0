"""A ``stop`` sent while ``run --detach`` still reads its source: the background engine the
--detach starts takes the command (it names the --detach as ``handed_from``), so ``stop`` must
not say the command is "dropped if this engine ends first" (the --detach ends by design). It
says the --detach hands the batch on and its engine applies the command; and it does.

The source is a FIFO the test writes and holds open, so the --detach is still reading it when
the stop is sent (not at a moment a sleep guessed).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .conftest import CLI, cli_env, feeding, only_batch, read_json, wait_until


def _lock(batch: Path) -> dict[str, object]:
    try:
        return json.loads((batch / "lock").read_text() or "{}")  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def test_a_stop_sent_while_run_detach_reads_its_source_says_its_engine_applies_it(
    tmp_path: Path, out_dir: Path
) -> None:
    env = cli_env(out_dir)
    fifo = tmp_path / "src.txt"
    os.mkfifo(fifo)
    text = "".join(f"k{i:06d}\n" for i in range(60_000))  # more than a read and a pipe's buffer
    with feeding(fifo, text):
        detach = subprocess.Popen(
            [*CLI, "run", "src.txt", "--cmd", "sleep 0.05", "--detach"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/items.db")), 60, "the batch's store")
        batch = only_batch(out_dir)
        wait_until(lambda: _lock(batch).get("pid") == detach.pid, 30, "the --detach's lock")
        assert _lock(batch)["hands_over"] is True

        stop = subprocess.run(
            [*CLI, "stop", batch.name, "--wait", "1"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert detach.poll() is None  # still reading: the stop went to the --detach
        assert stop.returncode == 1, stop.stdout + stop.stderr
        assert "dropped if this engine ends first" not in stop.stderr
        assert stop.stderr == (
            f"error: stop not acknowledged yet: pid {detach.pid} on {_lock(batch)['host']}, a --detach, is still"
            " reading the batch's sources (or planning it) and then hands the batch to a background engine, which"
            f" applies the command when it starts. The command is queued in {batch / 'control.jsonl'} (if the"
            " --detach ends before it starts that engine, killed say, the command is dropped)\n"
        )
    out, err = detach.communicate(timeout=120)
    assert detach.returncode == 0, err
    assert "engine running in the background" in out + err

    # What stop said is true: the background engine applied it, the batch stopped.
    wait_until(lambda: read_json(batch / "manifest.json")["state"] == "stopped", 120, "the stopped batch")
    [cmd_id] = [json.loads(line)["id"] for line in (batch / "control.jsonl").read_text().splitlines()]
    live = read_json(batch / "live_progress.json")
    answer = live["control_results"][cmd_id]  # type: ignore[index]
    assert not str(answer).startswith("not applied"), answer
    assert read_json(batch / "manifest.json")["totals"]["complete"] < 60_000  # type: ignore[index]
