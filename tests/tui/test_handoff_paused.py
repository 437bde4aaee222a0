"""A batch its operator paused stays paused when the TUI hands it to a background engine.

The hand-off (``q`` then ``b``, or the terminal hanging up: an SSH drop) started the background
engine unpaused, so the batch ran on behind the operator's back: the pause was lost with the
terminal. The engine that takes the batch over now begins paused, and only an unpause lets it go
on. Each item logs its start in a side-effect file to count what ran when.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import engine_alive

from .terminals import CLI, Tmux, gone, kill_quietly, process_of, read_state, tui_env, wait_until

N = 12


def _starts(log: Path) -> list[int]:
    return [int(word) for word in log.read_text().split()] if log.exists() else []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["quit-background", "kill-session"])
def test_a_paused_batch_stays_paused_under_the_background_engine(tmp_path: Path, how: str) -> None:
    out, log = tmp_path / "out", tmp_path / "starts.log"
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(N)))
    cmd = f"echo {{seq}} >> {log}; sleep 0.4"
    env = tui_env(tmp_path, out)
    tmux = Tmux(tmp_path)
    tui_pid, tui_proc = -1, None
    try:
        tmux.start([*CLI, "run", "items.txt", "--cmd", cmd, "-j", "2"], cwd=tmp_path, env=env)
        wait_until(lambda: len(_starts(log)) >= 2, 30, "two items run")
        batch = next(out.glob("*/items.db")).parent
        holder = engine_alive(batch)
        assert holder is not None
        tui_pid, tui_proc = holder.pid, process_of(holder.pid)
        tmux.keys("p")
        wait_until(lambda: read_state(batch) == "paused", 10, "the pause")
        if how == "quit-background":
            tmux.keys("q")
            wait_until(lambda: "The engine is running in this app" in tmux.screen(), 10, "the quit dialog")
            tmux.keys("b")
        else:
            tmux.kill_session()

        def background_engine_holds_it() -> bool:
            info = engine_alive(batch)
            return info is not None and info.pid != tui_pid

        wait_until(background_engine_holds_it, 30, "a background engine takes the batch")
        wait_until(lambda: gone(tui_pid), 30, "the TUI's process ends")

        def live() -> dict[str, object]:
            return dict(orjson.loads((batch / "live_progress.json").read_bytes()))

        # The background engine says it is paused, with nothing running: what had started by
        # the pause is all that started.
        wait_until(lambda: live().get("state") == "paused" and live().get("pid") not in (None, tui_pid), 30, "paused")
        started = _starts(log)
        assert len(started) < N and sorted(started) == list(range(len(started))), started
        assert read_state(batch) == "paused"
        engine_log = (batch / "engine.log").read_text()
        assert (
            "handed the batch to a background engine" in engine_log and "(paused, as the operator left it" in engine_log
        )
        # Unpaused, it runs the rest, each item once.
        unpause = subprocess.run(
            [*CLI, "unpause", batch.name, "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert unpause.returncode == 0, unpause.stderr
        assert json.loads(unpause.stdout)["result"] == "running"
        wait_until(lambda: read_state(batch) == "finished", 60, "the batch finishes")
        assert sorted(_starts(log)) == list(range(N))
    except BaseException:
        print(f"-- the pane:\n{tmux.screen()}")
        raise
    finally:
        tmux.kill_server()
        kill_quietly(tui_proc)
        info = engine_alive(next(out.glob("*/"), tmp_path)) if out.exists() else None
        if info is not None:
            kill_quietly(process_of(info.pid))
