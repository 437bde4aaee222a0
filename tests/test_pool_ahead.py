"""A chunk sent ahead to a pool worker waits in its socket, and that send must never block.

The feeder that sends a worker its next chunk is also the one that reads the worker's outcomes:
blocked in a send, it reads nothing, and a worker whose outcomes fill the other direction blocks
too, for good. A chunk is sent ahead only when its message fits a quarter of the socket's send
buffer (pool._ahead_limit: 53,248 bytes on Linux, where a fixed 4,096 kept 256 quick items of a
lines file, 9.3 KB, from ever going ahead); a bigger one goes back to the hand-off, pickled, and
is sent once the worker has read what it had.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from pathlib import Path

from batchtui.engine.pool import AHEAD_MAX_BYTES, _ahead_limit

from .conftest import CLI, cli_env, only_batch


def test_a_chunk_at_the_limit_and_a_verdict_go_into_the_socket_without_blocking() -> None:
    feeder, worker = multiprocessing.get_context("spawn").Pipe(duplex=True)
    try:
        limit = _ahead_limit(feeder)
        assert limit >= AHEAD_MAX_BYTES
        os.set_blocking(feeder.fileno(), False)  # a send that would block raises instead
        feeder.send_bytes(b"c" * limit)  # the chunk sent ahead, nothing read yet
        feeder.send_bytes(b"v" * 64)  # and a verdict after it
        assert len(worker.recv_bytes()) == limit
    finally:
        feeder.close()
        worker.close()


def test_chunks_too_big_to_go_ahead_with_big_results_end_each_item_once(tmp_path: Path) -> None:
    """3,000 quick items of 1 KB each, in chunks of about 256 KB, each returning 8 KB: every
    chunk is too big to go ahead, and the outcomes of one chunk (2 MB) overfill the socket the
    other way. Sent ahead regardless (planted: no limit), the run hangs after a few items."""
    (tmp_path / "items.txt").write_text("".join(f"{i:05d}-{'y' * 1000}\n" for i in range(3000)))
    (tmp_path / "f.py").write_text("def big(item):\n    return 'r' * 8000\n")
    out = tmp_path / "out"
    args = ["run", "items.txt", "--call", "f.py:big", "--executor", "process", "-j", "2", "--headless"]
    done = subprocess.run(
        [*CLI, *args], env=cli_env(out), cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = (only_batch(out) / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 3000 and len(set(lines)) == 3000
