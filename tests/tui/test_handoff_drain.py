"""Background on quit, or a terminal hang-up, never cuts a running item short.

Items may be paid API calls: one killed half-way and run again by the background engine is paid
twice. The TUI runs in a tmux pane (a private tmux server), two items run for 6 s (longer than
the 3 s grace the hand-off once gave them), and each item logs its start in a side-effect file:
after ``q`` then ``b``, or a killed tmux session, every item must have started exactly once and
the batch end finished under a background engine. Both failed before the drain: items 0 and 1
started twice, their first attempts ``interrupted``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from batchtui.engine.batchdir import engine_alive

from .terminals import CLI, Tmux, follow_until_finished, gone, kill_quietly, process_of, tui_env, wait_until

N = 6
SLOW_S = 6  # items 0 and 1: past the grace a stop would give them (3 s)


def _starts(log: Path) -> list[int]:
    return [int(word) for word in log.read_text().split()] if log.exists() else []


def _joined(tmux: Tmux) -> str:
    """The pane's text with its lines joined (a long line wraps at 80 columns)."""
    return tmux.screen().replace("\n", "")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["quit-background", "kill-session"])
def test_running_items_finish_before_the_hand_off(tmp_path: Path, how: str) -> None:
    out, log = tmp_path / "out", tmp_path / "starts.log"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(N)))
    cmd = f"echo {{seq}} >> {log}; [ {{seq}} -ge 2 ] || sleep {SLOW_S}"
    tmux = Tmux(tmp_path)
    tui_pid, tui_proc = -1, None
    try:
        tmux.start([*CLI, "run", str(items), "--cmd", cmd, "-j", "2"], cwd=tmp_path, env=tui_env(tmp_path, out))
        wait_until(lambda: len(_starts(log)) >= 2, 30, "two items run")
        batch = next(out.glob("*/items.db")).parent
        holder = engine_alive(batch)
        assert holder is not None
        tui_pid, tui_proc = holder.pid, process_of(holder.pid)
        assert sorted(_starts(log)) == [0, 1]
        if how == "quit-background":
            tmux.keys("q")
            wait_until(lambda: "The engine is running in this app" in tmux.screen(), 10, "the quit dialog")
            tmux.keys("b")
            # The app is gone at once; the terminal says what it waits for.
            wait_until(
                lambda: "2 items running at the hand-off finish here first" in _joined(tmux), 10, "the drain's line"
            )
            assert "Ctrl-C stops them now (they will be run again)" in _joined(tmux)
        else:
            tmux.kill_session()
        seen = follow_until_finished(batch, tui_pid, 90)
        assert seen.longest_orphaned_s < 5.0, seen
        assert sorted(_starts(log)) == list(range(N)), f"each item starts once: {_starts(log)}"
        lines = (batch / "results.jsonl").read_bytes().splitlines()
        assert sorted(orjson.loads(line)["seq"] for line in lines) == list(range(N))
        db = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
        try:
            attempts = db.execute("SELECT seq, attempt, error_type FROM attempts ORDER BY seq").fetchall()
        finally:
            db.close()
        assert attempts == [(seq, 1, None) for seq in range(N)], attempts
        manifest = orjson.loads((batch / "manifest.json").read_bytes())
        assert [h["action"] for h in manifest["history"]] == ["run", "resume"]
        assert manifest["history"][-1]["pid"] != tui_pid  # the rest ran in a background engine
        engine_log = (batch / "engine.log").read_text()
        assert "the 2 items running at the hand-off end first" in engine_log, engine_log
        assert "handed the batch to a background engine" in engine_log, engine_log
        wait_until(lambda: gone(tui_pid), 20, "the TUI's process ends")
        if how == "quit-background":
            assert "handed to a background engine" in tmux.screen() or "taking it over" in tmux.screen()
    except BaseException:
        print(f"-- the pane:\n{tmux.screen()}")
        raise
    finally:
        tmux.kill_server()
        kill_quietly(tui_proc)
