"""A hung engine says where it hung: :func:`.helpers.wait_or_dump` fails with each thread's stack.

A race test once waited 60 s for an engine that did not end after its SIGTERM, and failed with a
timeout and nothing else; that one run in a hundred could not be looked into. Here a real engine
that will not end in time (its items sleep) is waited for, and the failure holds its threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import start, wait_or_dump


def test_a_wait_that_runs_out_fails_with_the_engines_threads(tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "items.txt"
    source.write_text("".join(f"{i}\n" for i in range(4)))
    engine = start(["run", str(source), "--cmd", "sleep 30", "-j", "2", "--headless"], out=out_dir, cwd=tmp_path)
    try:
        with pytest.raises(AssertionError) as failed:
            wait_or_dump(engine, timeout=3)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(timeout=30)
    said = str(failed.value)
    assert f"pid {engine.pid} did not end within 3 s" in said
    assert "Fatal Python error: Aborted" in said  # faulthandler's dump, from the engine itself
    assert "engine/runner.py" in said and "engine/shell/" in said  # the runner's thread, a worker's
    assert engine.returncode is not None  # and it is gone
