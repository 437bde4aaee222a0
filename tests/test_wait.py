"""`batchtui wait BATCH [--timeout S]`: blocks until the batch ends, exits with its exit code
(engine/waiting.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import CLI, cli_env, only_batch, read_json, wait_until

GATED = "while [ ! -e {gate} ]; do sleep 0.05; done; [ {{}} != bad ]"


def test_wait_returns_the_exit_code_when_a_running_batch_ends(tmp_path: Path, out_dir: Path, run_cli: Any) -> None:
    items = tmp_path / "items.txt"
    items.write_text("ok\nbad\n")
    gate = tmp_path / "gate"
    started = run_cli(["run", str(items), "--detach", "--json", "--cmd", GATED.format(gate=gate)])
    assert started.returncode == 0, started.stderr
    batch = only_batch(out_dir)
    waiter = subprocess.Popen(
        [*CLI, "wait", batch.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(out_dir),
        cwd=tmp_path,
    )
    try:
        # While it runs, a --timeout runs out: its own code, and the batch goes on untouched.
        early = run_cli(["wait", batch.name, "--timeout", "0.3"])
        assert early.returncode == 124, early.stderr
        assert "still running after 0.3 s" in early.stderr
        assert read_json(batch / "manifest.json")["state"] == "running"
        assert waiter.poll() is None
        gate.touch()
        _out, err = waiter.communicate(timeout=60)
    finally:
        waiter.kill()
    assert waiter.returncode == 1, err  # one item failed: the engine's own exit code
    assert f"batch {batch.name} finished: 1 complete, 1 failed" in err
    assert read_json(batch / "manifest.json")["state"] == "finished"


def test_wait_on_an_ended_batch_returns_at_once_with_its_code(tmp_path: Path, out_dir: Path, invoke_cli: Any) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"bad{i}\n" for i in range(4)))
    run = invoke_cli(["run", str(items), "--cmd", "false", "--max-failure-rate", "0.1", "--min-items", "1"])
    assert run.returncode == 3, run.stderr
    batch = only_batch(out_dir)
    waited = invoke_cli(["wait", batch.name, "--json"])
    assert waited.returncode == 3, waited.stderr
    assert json.loads(waited.stdout) == {"batch_id": batch.name, "state": "halted", "exit_code": 3, "timed_out": False}
    assert "halted" in waited.stderr and "--max-failure-rate" in waited.stderr
    good = invoke_cli(["run", str(items), "--cmd", "true", "--name", "fine"])
    assert good.returncode == 0
    assert invoke_cli(["wait", "fine"]).returncode == 0  # by name, as every verb resolves it


def test_wait_on_an_interrupted_batch_says_so(tmp_path: Path, out_dir: Path, run_cli: Any) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    started = run_cli(["run", str(items), "--detach", "--json", "--cmd", "sleep 300"])
    assert started.returncode == 0, started.stderr
    batch = only_batch(out_dir)
    # Killed once it runs the batch: killed before, the batch "has not been run" (wait says so).
    wait_until(lambda: read_json(batch / "manifest.json")["state"] == "running", 60, "the engine runs the batch")
    os.kill(json.loads(started.stdout)["pid"], signal.SIGKILL)
    waited = run_cli(["wait", batch.name, "--timeout", "60"])
    assert waited.returncode == 130, waited.stderr
    assert f"batch {batch.name} was interrupted: no engine runs it (resume it: batchtui resume" in waited.stderr


def test_wait_refuses_a_bad_timeout(tmp_path: Path, out_dir: Path, invoke_cli: Any) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\n")
    assert invoke_cli(["run", str(items), "--cmd", "true"]).returncode == 0
    for bad in ("-1", "nan", "1e10"):
        proc = invoke_cli(["wait", "--timeout", bad])
        assert proc.returncode == 2 and "--timeout" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    missing = invoke_cli(["wait", "nosuchbatch"])
    assert missing.returncode == 2 and "no batch 'nosuchbatch'" in missing.stderr


def _catches(pid: int, sig: signal.Signals) -> bool:
    """The process ``pid`` has a handler for ``sig`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_ends_a_verb_as_a_ctrl_c_does(tmp_path: Path, out_dir: Path, sig: signal.Signals) -> None:
    """DESIGN: 130 for SIGINT, SIGTERM and SIGHUP. `wait` (and `export --out`, whose temporary
    file was left behind) died of the signal's default: exit 143 or 129, nothing cleaned."""
    from batchtui.engine.batchdir import BatchLock

    items = tmp_path / "items.txt"
    items.write_text("a\n")
    subprocess.run([*CLI, "run", str(items), "--cmd", "true"], env=cli_env(out_dir), capture_output=True, check=True)
    batch = only_batch(out_dir)
    manifest = batch / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "state": "running"}))  # an engine holds it (the lock below)
    lock = BatchLock(batch / "lock")
    lock.acquire()
    try:
        waiting = subprocess.Popen(
            [*CLI, "wait", batch.name], env=cli_env(out_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_until(lambda: _catches(waiting.pid, sig), 30, "the verb's handler")
        waiting.send_signal(sig)
        _out, err = waiting.communicate(timeout=30)
    finally:
        lock.release()
    assert waiting.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
