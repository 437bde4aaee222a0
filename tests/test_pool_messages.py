"""A pool worker tells its engine that a chunk ended in the same message as the chunk's last
outcomes: one message a chunk of quick items, where it sent two (the outcomes, then "end"),
each a wake-up of the engine's feeder on the cores the items run on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# A worker started as the pool starts one, in a process of its own (its pipes and shared
# arrays must not outlive this test in the suite's process: other tests count descriptors).
# The module's top runs in the worker too (the spawn start method imports it there): no group
# is cut by time on a stalled test machine.
SCRIPT = """
import json, multiprocessing, sys
from batchtui.engine import outbox
from batchtui.engine.attempts import Classifier
from batchtui.engine.handoff import CANCELLED, QUEUED, SharedGate
from batchtui.engine.poolworker import WorkerSettings, WorkerSpec, child_main
from batchtui.engine.shell.item import Item

outbox.REPORT_EVERY_S = 3600.0

def chunk_of(gate, conn, seqs, state=QUEUED):
    gate.load(bytearray([state] * len(seqs)))
    conn.send([Item(seq, str(seq), f"v{seq}", 1, sys.argv[1]) for seq in seqs])
    messages = []
    while not messages or messages[-1][0] != "end":
        kind, outcomes, judge = conn.recv()
        messages.append([kind, [o.seq for o in outcomes], judge])
    return messages

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    gate = SharedGate(ctx.RawArray("b", 8), ctx.RawArray("d", 8), ctx.RawValue("i", -1), ctx.Lock())
    spec = WorkerSpec("python", None, "tests.procs:noop", sys.argv[2], sys.argv[3] == "chunked")
    settings = WorkerSettings(None, 1 << 20, 1 << 20, Classifier())
    proc = ctx.Process(target=child_main, args=(child, [gate.parts]), daemon=True)
    proc.start()
    parent.send((spec, settings))
    assert parent.recv()[0] == "ready"
    got = [chunk_of(gate, parent, [0, 1, 2]), chunk_of(gate, parent, [3]), chunk_of(gate, parent, [4, 5], CANCELLED)]
    parent.send(None)
    proc.join(10)
    print(json.dumps(got))
"""


def _messages(tmp_path: Path, mode: str) -> list[list[list[object]]]:
    (tmp_path / "chunks.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "chunks.py"), str(tmp_path), str(Path.cwd()), mode],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got: list[list[list[object]]] = json.loads(done.stdout)
    return got


def test_a_chunk_of_quick_items_is_one_message_its_end_with_its_outcomes(tmp_path: Path) -> None:
    three, one, cancelled = _messages(tmp_path, "each")
    assert three == [["end", [0, 1, 2], False]]
    assert one == [["end", [3], False]]
    assert cancelled == [["end", [], False]]  # every item cancelled before it began: none ran


def test_a_chunked_callables_chunk_is_one_message_too(tmp_path: Path) -> None:
    three, one, cancelled = _messages(tmp_path, "chunked")
    assert three == [["end", [0, 1, 2], False]]
    assert one == [["end", [3], False]]
    assert cancelled == [["end", [], False]]
