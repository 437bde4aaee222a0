"""--memory-limit-mb under what the engine alone uses (no item running): dispatch waited for
ever, said once as "memory N MB over --memory-limit-mb L: dispatch waits", as if an item ending
would bring it under. The engine now says that no item can start and how to go on (stop, then
resume with a higher limit), in its warnings and log, in live_progress.json's ``memory_hold``
and in ``show``; the policy stays DESIGN's (dispatch waits while over, goes on when under)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from batchtui.engine.monitor import Memory

from .conftest import CLI, cli_env, only_batch, read_json, wait_until
from .test_runner_steps import FakeMemory, make_runner  # noqa: F401  (the fixture)

FAT = f"{Path(__file__).with_name('procs_fat.py')}:noop"
SAID = "--memory-limit-mb 128 is under what the engine alone uses with no item running"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _hold(batch: Path) -> str:
    try:
        return str(read_json(batch / "live_progress.json").get("memory_hold") or "")
    except (OSError, ValueError):
        return ""


def test_an_engine_over_the_limit_on_its_own_says_no_item_can_start(tmp_path: Path, out_dir: Path) -> None:
    (tmp_path / "n.txt").write_text("".join(f"{i}\n" for i in range(5)))
    env = cli_env(out_dir)
    args = ["run", "n.txt", "--call", FAT, "--executor", "thread", "--workers", "1", "--memory-limit-mb", "128"]
    engine = subprocess.Popen(
        [*CLI, *args, "--headless"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/live_progress.json")), 60, "live_progress.json")
        batch = only_batch(out_dir)
        wait_until(lambda: SAID in _hold(batch), 30, "the engine's word that it alone is over the limit")
        live = read_json(batch / "live_progress.json")
        assert live["counts"]["complete"] == 0 and live["counts"]["running"] == 0  # type: ignore[index]
        hold = _hold(batch)
        assert "no item can start" in hold and f"`batchtui stop {batch.name}`" in hold
        assert f"`batchtui resume {batch.name} --output-dir {out_dir} --memory-limit-mb " in hold
        assert any(SAID in w for w in live["warnings"])  # type: ignore[union-attr]
        show = _cli(["show", batch.name], env, tmp_path)
        assert f"  Memory:    {SAID}" in show.stdout, show.stdout
        stop = _cli(["stop", batch.name], env, tmp_path)
        assert stop.returncode == 0, stop.stderr
        _, err = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert engine.returncode == 130
    assert err.count(SAID) == 1, err  # said once, not at every loop turn
    again = _cli(["resume", batch.name, "--headless", "--memory-limit-mb", "4000"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert read_json(batch / "manifest.json")["totals"]["complete"] == 5  # type: ignore[index]


def test_over_with_items_running_waits_for_them_and_says_it_when_none_runs(make_runner: Any) -> None:  # noqa: F811
    runner, ex = make_runner(40, workers=2, memory_limit_mb=200)
    memory = runner.memory = FakeMemory()
    t = time.monotonic()
    runner.step(t)
    running = ex.begin(2)
    memory.mb = 300.0
    runner.step(t + 1)
    # Items run: they may bring it under when they end. Not "no item can start" yet.
    assert runner.memory_hold == "memory 300 MB over --memory-limit-mb 200: dispatch waits"
    assert not any("engine alone" in w for w in runner.warnings)
    for seq in running:
        ex.end(seq)
    runner.step(t + 2)
    runner.step(t + 3)
    alone = [w for w in runner.warnings if "is under what the engine alone uses" in w]
    assert len(alone) == 1 and "(300 MB: 300 MB itself, 0 MB its child processes)" in alone[0]
    assert runner.live().memory_hold == runner.memory_hold and "no item can start" in runner.memory_hold
    memory.mb = 50.0
    runner.step(t + 4)
    assert runner.memory_hold is None and ex.queued() == 8


class _StaleMemory(FakeMemory):
    """A monitor whose cached reading (up to a second old) still counts the items' processes,
    and whose forced reading (``force=True``) is of now."""

    def __init__(self) -> None:
        super().__init__()
        self.now_mb = 10.0

    def sample(self, force: bool = False) -> Memory:
        return Memory(rss_mb=self.now_mb if force else self.mb, peak_rss_mb=self.peak_mb, children_rss_mb=0.0)


def test_a_reading_from_before_the_items_ended_is_not_the_engine_alone(make_runner: Any) -> None:  # noqa: F811
    """Seen by hand: `--memory-limit-mb 200` with items of 100 MB each said the engine alone used
    380 MB ("no item can start. Stop it ..."), and went on a moment later: the reading was the
    one of a second before, with the items' processes in it. The engine looks again first."""
    runner, ex = make_runner(40, workers=2, memory_limit_mb=200)
    memory = runner.memory = _StaleMemory()
    t = time.monotonic()
    runner.step(t)
    running = ex.begin(2)
    memory.mb = memory.now_mb = 300.0
    runner.step(t + 1)
    assert runner.memory_hold == "memory 300 MB over --memory-limit-mb 200: dispatch waits"
    memory.now_mb = 60.0  # the items end, and their processes with them; the cached 300 stays
    for seq in running:
        ex.end(seq)
    runner.step(t + 2)
    runner.step(t + 3)
    assert not any("engine alone" in w for w in runner.warnings), runner.warnings
    assert "no item can start" not in (runner.memory_hold or "")
