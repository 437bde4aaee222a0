"""A named pipe as the source: every item the writer sends is in the batch.

The preflight used to peek at the first item of each source, a FIFO too: what it read (the
pipe's whole buffer, as it reads ahead) was lost to the batch, and with nothing more written the
enqueue's own open waited for a writer that had gone ("200 items of 202" by hand; here, a run
that never ends). The writer here opens the pipe once, writes every line and closes it, as a
program piping into batchtui does.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from .conftest import CLI, cli_env, only_batch, read_json

LINES = ["a", "b", *(f"x{i}" for i in range(1, 201))]


def _feed_once(fifo: Path) -> threading.Thread:
    def feed() -> None:
        with open(fifo, "w") as f:  # blocks until the first reader opens it
            f.write("".join(f"{line}\n" for line in LINES))

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("verb", [["run"], ["check"]])
def test_a_fifo_source_is_read_once_by_the_enqueue_not_by_the_preflight(tmp_path: Path, verb: list[str]) -> None:
    fifo = tmp_path / "items.fifo"
    os.mkfifo(fifo)
    writer = _feed_once(fifo)
    out = tmp_path / "out"
    args = [*verb, str(fifo), "--as", "lines", "--cmd", "true"]
    if verb == ["run"]:
        args += ["--headless", "--workers", "2"]
    try:
        proc = subprocess.run([*CLI, *args], env=cli_env(out), capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        # The bug: the preflight's read took the items and the enqueue waits for another writer.
        pytest.fail("batchtui waited on the pipe: its first reader (the preflight) took the items")
    if verb == ["check"]:
        # check reads no item of a pipe: the writer still waits for its reader; free it.
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "a pipe or device is read when the batch is made" in proc.stdout
        with open(fifo) as f:
            assert f.read().split() == LINES  # nothing was taken from it
        writer.join(10)
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    writer.join(10)
    report = read_json(only_batch(out) / "report.json")
    assert report["totals"] == {**report["totals"], "total": 202, "complete": 202}
