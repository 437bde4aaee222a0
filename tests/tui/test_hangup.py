"""An SSH drop while the engine runs in the TUI: the batch is handed to a background engine."""

from __future__ import annotations

import os
import pty
import sys
import threading
import time
from pathlib import Path

import orjson

from batchtui.engine.batchdir import engine_alive

from .terminals import drain


def test_terminal_hangup_hands_the_batch_to_a_background_engine(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(150)))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_") or k == "BATCHTUI_SPAWNER"}
    env.update({"BATCHTUI_OUTPUT_DIR": str(out), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"})
    fast = tmp_path / "fast"  # once it exists, items take no time (the hand-off is seen by then)
    pid, fd = pty.fork()
    if pid == 0:  # the child: batchtui on a terminal, so the TUI runs with the engine in it
        os.chdir(tmp_path)
        os.execve(
            sys.executable,
            [
                sys.executable,
                "-m",
                "batchtui.tui.cli",
                "run",
                str(items),
                "--cmd",
                f"[ -e {fast} ] || sleep 0.1",
                "-j",
                "2",
            ],
            env,
        )
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(fd, stop), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        batch = None
        while time.monotonic() < deadline:
            dirs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
            if dirs and (dirs[0] / "live_progress.json").exists():
                batch = dirs[0]
                live = orjson.loads((batch / "live_progress.json").read_bytes())
                if live["counts"]["complete"] >= 10:
                    break
            time.sleep(0.1)
        assert batch is not None, "the TUI run never started"
        holder = engine_alive(batch)
        assert holder is not None and holder.pid == pid  # the engine runs inside the TUI process
        os.close(fd)  # the terminal goes away, as with an SSH drop: the kernel sends SIGHUP
        fd = -1
        os.waitpid(pid, 0)
        # A background engine (another pid) took the batch over and finishes it.
        deadline = time.monotonic() + 30
        taken = None
        while time.monotonic() < deadline:
            taken = engine_alive(batch)
            if taken is not None and taken.pid != pid:
                break
            time.sleep(0.05)
        # ~130 items of 0.1 s on two workers were left: the batch cannot have finished before.
        assert taken is not None and taken.pid != pid, taken
        fast.touch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            manifest = orjson.loads((batch / "manifest.json").read_bytes())
            if manifest["state"] == "finished" and engine_alive(batch) is None:
                break
            time.sleep(0.2)
        assert manifest["state"] == "finished", manifest["state"]
        seqs = [orjson.loads(line)["seq"] for line in (batch / "results.jsonl").read_bytes().splitlines()]
        assert sorted(seqs) == list(range(150))
        assert [h["action"] for h in manifest["history"]][:2] == ["run", "resume"]
        assert "engine.log" in {p.name for p in batch.iterdir()}
    finally:
        stop.set()
        if fd >= 0:
            os.close(fd)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
