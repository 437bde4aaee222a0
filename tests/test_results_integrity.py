"""results.jsonl integrity (issue 15, points 2 and 3).

Lines past the committed offset are checked against ResultLine and their item before they are
adopted; bad ones are counted, reported and cut, and their items run again. A results.jsonl cut,
deleted or replaced while an engine runs is noticed at the next group commit and rebuilt from
items.db. Every case runs the CLI (in this process) on a batch left by a real kill -9.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.models import ResultLine

from .conftest import CLI, cli_env, invoke_in_process, only_batch, read_json, read_live, wait_until

#: The module's tests share one killed batch (a module fixture): with --dist loadgroup they run on
#: one xdist worker, so it is built once, not once a worker.
pytestmark = pytest.mark.xdist_group("test_results_integrity")

N = 30
DONE = 10  # items 0..DONE-1 complete before the kill; the others wait for a release file

PROC = """
import os, time

def work(item):
    if item.seq >= int(os.environ["RI_GATE_FROM"]):
        while not os.path.exists(os.environ["RI_RELEASE"]):
            time.sleep(0.01)
    log = os.environ.get("RI_EXEC_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{item.seq}\\n")
    out = {"line": item.data}
    if item.seq % 3 == 0:
        out["cost"] = 0.5 + item.seq
    return out
"""


def key(seq: int) -> str:
    return f"item-{seq:03d}"


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {"XDG_STATE_HOME": str(root / "state"), "RI_RELEASE": str(root / "release"), "RI_GATE_FROM": str(10**9)}
    env.update(extra)
    return cli_env(root / "out", env)


def _start(args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, *args], env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _complete(batch: Path) -> int:
    try:
        return int(read_live(batch)["counts"]["complete"])  # type: ignore[index,call-overload]
    except AssertionError:
        return -1


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch killed (-9) with DONE items complete and committed, the rest pending."""
    root = tmp_path_factory.mktemp("crashed")
    (root / "items.txt").write_text("".join(f"{key(i)}\n" for i in range(N)))
    (root / "proc.py").write_text(PROC)
    env = _env(root, RI_GATE_FROM=str(DONE))
    args = ["run", "items.txt", "--call", f"{root / 'proc.py'}:work", "--executor", "thread", "-j", "2", "--headless"]
    engine = _start(args, root, env)
    try:
        wait_until(lambda: (root / "out").is_dir() and any((root / "out").iterdir()), 60, "the batch")
        wait_until(lambda: _complete(only_batch(root / "out")) == DONE, 60, f"{DONE} committed results")
    finally:
        os.killpg(engine.pid, signal.SIGKILL)
        engine.wait()
    batch = only_batch(root / "out")
    assert len((batch / "results.jsonl").read_bytes().splitlines()) == DONE
    return batch


@pytest.fixture
def batch(crashed: Path, tmp_path: Path) -> Path:
    """A copy of the crashed batch of this test's own."""
    dst = tmp_path / "out" / crashed.name
    shutil.copytree(crashed, dst)
    (tmp_path / "proc.py").write_text(PROC)
    return dst


def _invoke(args: list[str], root: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``batchtui ARGS`` in this process, with the environment of :func:`_env`."""
    env = {"XDG_STATE_HOME": str(root / "state"), "RI_RELEASE": str(root / "release"), "RI_GATE_FROM": str(10**9)}
    return invoke_in_process(args, out=root / "out", cwd=root, env={**env, **extra})


def _resume(batch: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    proc = _invoke(["resume", str(batch), "--headless"], tmp_path, RI_EXEC_LOG=str(tmp_path / "exec.log"))
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    return proc


def _ran(tmp_path: Path) -> list[int]:
    log = tmp_path / "exec.log"
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def _append(batch: Path, *lines: Any) -> None:
    with (batch / "results.jsonl").open("ab") as fh:
        for line in lines:
            fh.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")


def _results(batch: Path) -> dict[int, dict[str, Any]]:
    """results.jsonl by seq; asserts one valid line per item, every item complete."""
    data = (batch / "results.jsonl").read_bytes()
    assert data.endswith(b"\n")
    lines = [ResultLine.model_validate(orjson.loads(raw)) for raw in data.splitlines()]
    seqs = collections.Counter(line.seq for line in lines)
    assert [s for s, n in seqs.items() if n > 1] == [], "a seq is in results.jsonl twice"
    assert sorted(seqs) == list(range(N))
    assert all(line.key == key(line.seq) for line in lines)
    return {line.seq: line.model_dump() for line in lines}


def _line(of: int, **over: Any) -> dict[str, Any]:
    line = {"seq": of, "key": key(of), "result": {"forged": True}, "attempts": 1, "duration_s": 0.1}
    line["finished_at"] = "2026-01-01T00:00:00+00:00"
    line.update(over)
    return line


P = DONE + 5  # a pending item
C = 2  # a complete item

BAD_LINES: dict[str, Any] = {
    "attempts-many": _line(P, attempts="many"),
    "bare-seq": {"seq": P},
    "already-complete": _line(C),
    "wrong-key": _line(P, key=key(P + 1)),
    "seq-minus-1": _line(P, seq=-1),
    "seq-10e12": _line(P, seq=10**12),
    "list": b"[1,2]",
    "string": b'"x"',
    "null": b"null",
    "not-json": b'{"seq": 15, "key": ',
    "attempts-0": _line(P, attempts=0),
    "attempts-str-digit": _line(P, attempts="1"),
}


@pytest.mark.parametrize("bad", list(BAD_LINES), ids=list(BAD_LINES))
def test_a_bad_line_past_the_offset_is_reported_cut_and_its_item_run(batch: Path, tmp_path: Path, bad: str) -> None:
    _append(batch, BAD_LINES[bad])
    proc = _resume(batch, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(batch)  # one line per item: the bad one is gone, never a second copy
    assert all(r["result"]["line"] == key(s) for s, r in results.items()), "a forged result was taken"
    ran = _ran(tmp_path)
    assert P in ran and C not in ran
    assert "1 invalid line past the committed offset not adopted" in proc.stderr, proc.stderr[-3000:]
    assert "written just before the last crash" not in proc.stderr
    notes = read_json(batch / "manifest.json")["history"][-1]["notes"]  # type: ignore[index]
    assert any("invalid line" in n for n in notes), notes


def test_valid_lines_after_a_crash_are_adopted_once_and_said_so(batch: Path, tmp_path: Path) -> None:
    adopted = _line(P, result={"adopted": True}, attempts=2, cost=1.25)
    _append(batch, adopted, b"null", _line(P, result={"again": True}))
    proc = _resume(batch, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "adopted 1 results written just before the last crash (not redone)" in proc.stderr, proc.stderr
    assert "2 invalid lines past the committed offset not adopted" in proc.stderr
    assert "1 not a JSON object" in proc.stderr and "1 repeated" in proc.stderr
    results = _results(batch)
    assert results[P]["result"] == {"adopted": True} and results[P]["attempts"] == 2
    assert P not in _ran(tmp_path), "an adopted item was run again"
    show = _invoke(["export", str(batch), "--format", "jsonl"], tmp_path)
    exported = {r["seq"]: r for r in map(orjson.loads, show.stdout.splitlines())}
    assert exported[P]["result"] == {"adopted": True} and exported[P]["cost"] == 1.25


def test_no_crash_no_crash_message(batch: Path, tmp_path: Path) -> None:
    """The last engine stopped cleanly: a line added since is checked and adopted, but never
    said to have been written before a crash; a resume with nothing to adopt says nothing."""
    manifest = read_json(batch / "manifest.json")
    manifest["state"] = "stopped"
    (batch / "manifest.json").write_bytes(orjson.dumps(manifest))
    _append(batch, _line(P, result={"by_hand": True}))
    proc = _resume(batch, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "written just before the last crash" not in proc.stderr
    assert "adopted 1 result lines added to results.jsonl after the last engine ended" in proc.stderr, proc.stderr
    assert _results(batch)[P]["result"] == {"by_hand": True}


def test_a_plain_resume_after_a_crash_adopts_nothing_and_says_nothing(batch: Path, tmp_path: Path) -> None:
    proc = _resume(batch, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "adopted" not in proc.stderr and "invalid line" not in proc.stderr
    _results(batch)


def test_recover_force_ignores_and_counts_bad_lines(batch: Path, tmp_path: Path) -> None:
    _append(batch, BAD_LINES["attempts-many"], b"[1,2]", _line(C, key=key(C)))
    proc = _invoke(["recover", str(batch), "--force", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    out = orjson.loads(proc.stdout)
    assert out["invalid_lines"] == 2 and out["duplicate_lines"] == 1, out
    assert out["counts"]["complete"] == DONE
    text = _invoke(["recover", str(batch), "--force"], tmp_path)
    assert text.returncode == 0 and "Traceback" not in text.stderr + text.stdout
    resumed = _resume(batch, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = _results(batch)
    assert all(r["result"]["line"] == key(s) for s, r in results.items())


KILL_AT = """
import os, signal, sys
from pathlib import Path
from batchtui.engine import resultscheck
from batchtui.engine.files import ResultsLog
from batchtui.engine.store import ItemStore

batch, point = Path(sys.argv[1]), sys.argv[2]
store = ItemStore.open(batch / "items.db")
log = ResultsLog(batch / "results.jsonl")
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "commit":
    ItemStore.transaction = die
else:
    os.replace = die
resultscheck.adopt_tail(store, log, int(store.get_meta("results_offset")))
"""


@pytest.mark.parametrize("point", ["commit", "rename"])
def test_a_kill_in_the_middle_of_cutting_the_tail(batch: Path, tmp_path: Path, point: str) -> None:
    """kill -9 before the adoption's commit (the old file and offset stand) or between the
    commit and the rename (the next start renames the staged file into place)."""
    _append(batch, _line(P, result={"adopted": True}), b"null")
    killed = subprocess.run([sys.executable, "-c", KILL_AT, str(batch), point], capture_output=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (batch / ".results.jsonl.next").exists()
    proc = _resume(batch, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (batch / ".results.jsonl.next").exists()
    if point == "rename":  # the adoption was committed: the restart only finishes the rename
        assert "invalid line" not in proc.stderr and "adopted" not in proc.stderr, proc.stderr
    else:
        assert "adopted 1 results written just before the last crash" in proc.stderr, proc.stderr
    results = _results(batch)
    assert results[P]["result"] == {"adopted": True}
    assert P not in _ran(tmp_path)


def test_every_line_the_runner_writes_validates_against_the_model(batch: Path, tmp_path: Path) -> None:
    """Lines with and without a cost, after a crash and a resume: each validates (strict) and
    carries no key the model does not describe."""
    _resume(batch, tmp_path)
    fields = set(ResultLine.model_fields)
    raw = [orjson.loads(line) for line in (batch / "results.jsonl").read_bytes().splitlines()]
    assert len(raw) == N
    for line in raw:
        assert set(line) <= fields, set(line) - fields
        ResultLine.model_validate(line)
    assert {"cost" in line for line in raw} == {True, False}
    assert all(line["cost"] == 0.5 + line["seq"] for line in raw if line["seq"] % 3 == 0)


def test_results_cut_while_no_engine_runs_is_rebuilt_on_resume(batch: Path, tmp_path: Path) -> None:
    (batch / "results.jsonl").write_bytes(b"")
    proc = _resume(batch, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rebuilt it from items.db (10 lines" in proc.stderr, proc.stderr
    results = _results(batch)
    assert all(r["result"]["line"] == key(s) for s, r in results.items())
    assert not set(range(DONE)) & set(_ran(tmp_path))


def _cut(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(0)


def _replace(path: Path) -> None:
    other = path.with_name("other.jsonl")
    other.write_bytes(b'{"something": "else"}\n')
    os.replace(other, path)


def _delete(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage", [_cut, _replace, _delete], ids=["cut", "replaced", "deleted"])
def test_results_damaged_while_the_engine_runs_is_noticed_and_rebuilt(tmp_path: Path, damage: Any) -> None:
    """A real run: DONE items complete and commit, the rest wait on a release file; the test
    damages results.jsonl, then releases them. The engine notices at its next group commit,
    says so, and rebuilds the file from items.db: every line is there at the end."""
    (tmp_path / "items.txt").write_text("".join(f"{key(i)}\n" for i in range(N)))
    (tmp_path / "proc.py").write_text(PROC)
    env = _env(tmp_path, RI_GATE_FROM=str(DONE))
    args = ["run", "items.txt", "--call", f"{tmp_path / 'proc.py'}:work", "--executor", "thread", "-j", "2"]
    engine = _start([*args, "--headless"], tmp_path, env)
    try:
        wait_until(lambda: (tmp_path / "out").is_dir() and any((tmp_path / "out").iterdir()), 60, "the batch")
        batch = only_batch(tmp_path / "out")
        wait_until(lambda: _complete(batch) == DONE, 60, f"{DONE} committed results")
        damage(batch / "results.jsonl")
        (tmp_path / "release").touch()
        _out, err = engine.communicate(timeout=120)
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait()
    stderr = err.decode()
    assert engine.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    results = _results(batch)  # every line is there: none lost
    assert all(r["result"]["line"] == key(s) for s, r in results.items())
    assert "while this engine ran: rebuilt it from items.db" in stderr, stderr[-3000:]
    warnings = read_live(batch)["warnings"]
    assert any("rebuilt it from items.db" in w for w in warnings), warnings  # type: ignore[union-attr]
    # The committed offset is the rebuilt file's size: a resume finds nothing to adopt or rebuild.
    again = _resume(batch, tmp_path)
    assert "rebuilt" not in again.stderr and "adopted" not in again.stderr and "invalid" not in again.stderr
