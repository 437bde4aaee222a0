"""A signal ignored by whoever started batchtui stays ignored (engine/interrupts.py's ``catch``).

``nohup`` ignores SIGHUP so that a closed terminal does not end the command; a non-interactive
shell ignores SIGINT for what it starts with ``&``. batchtui put its own handlers in their
place (the CLI's and the engine's), so ``nohup batchtui run ... &`` over SSH stopped with
"SIGHUP received" when the session closed, and a script's background run stopped on the
Ctrl-C meant for the script."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from batchtui.engine.interrupts import held_signals

from .conftest import CLI, cli_env, only_batch, read_jsonl, wait_until


def _mask(pid: int, field: str, sig: signal.Signals) -> bool:
    """Whether ``sig`` is in the ``field`` mask (SigIgn, SigCgt) of /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith(f"{field}:"))
    return bool(mask >> (sig - 1) & 1)


def _running(out_dir: Path) -> bool:
    try:
        db = only_batch(out_dir) / "items.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return bool(conn.execute("SELECT count(*) FROM items WHERE status = 'processing'").fetchone()[0])
    except (AssertionError, OSError, sqlite3.Error, StopIteration):
        return False


def _gated_run(tmp_path: Path, out_dir: Path, ignoring: signal.Signals | None) -> tuple[subprocess.Popen[str], Path]:
    """`batchtui run` of items a, b, c whose commands wait for the gate file (returned), started
    with ``ignoring`` set to SIG_IGN, as nohup (SIGHUP) or a script's `&` (SIGINT) does before
    the exec; it returns once the first item runs (the engine's handlers are in place by then)."""
    items = tmp_path / "items.txt"
    items.write_text("a\nb\nc\n")
    gate = tmp_path / "gate"
    cmd = f"while [ ! -e {gate} ]; do sleep 0.05; done; echo {{}}"
    run = [*CLI, "run", str(items), "--cmd", cmd, "--headless", "--workers", "1", "--grace", "0"]
    if ignoring is not None:
        run = ["sh", "-c", f'trap "" {ignoring.name.removeprefix("SIG")}; exec "$@"', "sh", *run]
    proc = subprocess.Popen(
        run, env=cli_env(out_dir), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: _running(out_dir), 60, "the first item running")
    except BaseException:
        proc.kill()
        raise
    return proc, gate


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT], ids=["nohup", "background-of-a-script"])
def test_a_run_started_with_a_signal_ignored_keeps_it_ignored_and_runs_to_its_end(
    tmp_path: Path, out_dir: Path, sig: signal.Signals
) -> None:
    proc, gate = _gated_run(tmp_path, out_dir, ignoring=sig)
    try:
        assert _mask(proc.pid, "SigIgn", sig) and not _mask(proc.pid, "SigCgt", sig)
        proc.send_signal(sig)
        gate.touch()
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "received" not in err and "interrupted" not in err
    results = read_jsonl(only_batch(out_dir) / "results.jsonl")
    assert sorted(str(r["key"]) for r in results) == ["a", "b", "c"]


def test_a_run_with_the_signal_not_ignored_still_stops_on_it(tmp_path: Path, out_dir: Path) -> None:
    """The other side: a SIGHUP the run was not told to ignore stops it, resumable (130)."""
    proc, _gate = _gated_run(tmp_path, out_dir, ignoring=None)
    try:
        assert _mask(proc.pid, "SigCgt", signal.SIGHUP)
        proc.send_signal(signal.SIGHUP)
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopped" in err


def test_held_signals_leave_an_ignored_signal_ignored() -> None:
    """Inside held_signals an ignored SIGINT stays ignored: it comes to nothing, as before."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        done: list[str] = []
        with held_signals():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            done.append("the body ran to its end")
        assert done == ["the body ran to its end"]
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
