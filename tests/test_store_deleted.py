"""items.db deleted while an engine runs: the run halts at its next commit, says how to get the
store back, and recover + resume finish the batch with nothing lost and nothing run twice.

The open connections keep working on a deleted file, so an engine that did not look went on
"committing" to a file nobody would open again and reported success (`show` then found no store).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import invoke_in_process

N = 60

CALLABLE = """
import os, time
def work(item):
    if item.seq == 5 and item.attempt == 1 and os.path.exists(os.path.join(item.batch_dir, "items.db")):
        for name in ("items.db", "items.db-wal", "items.db-shm"):
            try:
                os.unlink(os.path.join(item.batch_dir, name))
            except FileNotFoundError:
                pass
    time.sleep(0.01)
    return {"seq": item.seq}
"""


def test_a_deleted_store_halts_the_run_and_recover_then_resume_finish_it(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{i}\n" for i in range(N)))
    code = tmp_path / "deleter.py"
    code.write_text(CALLABLE)
    out = tmp_path / "out"
    args = ["run", str(items), "--call", f"{code}:work", "--executor", "thread", "-j", "1", "--headless"]
    run = invoke_in_process(args, out=out, cwd=tmp_path)
    assert run.returncode == 3, run.stderr  # halted
    (batch,) = [p for p in out.iterdir() if p.is_dir()]
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["state"] == "halted"
    assert manifest["halt_reason"].startswith("items.db was deleted while this engine ran"), manifest["halt_reason"]
    assert f"batchtui recover {batch.name}" in manifest["halt_reason"]
    assert "Halted:    items.db was deleted" in run.stdout, run.stdout
    done = [json.loads(line)["seq"] for line in (batch / "results.jsonl").read_text().splitlines()]
    assert 6 <= len(done) < N, len(done)  # it stopped soon after, not at the end

    recovered = invoke_in_process(["recover", batch.name], out=out, cwd=tmp_path)
    assert recovered.returncode == 0, recovered.stderr
    resumed = invoke_in_process(["resume", batch.name, "--headless"], out=out, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    seqs = [json.loads(line)["seq"] for line in (batch / "results.jsonl").read_text().splitlines()]
    assert sorted(seqs) == list(range(N))  # each item once
    assert seqs[: len(done)] == done  # the results before the halt were kept as they were


def test_resume_of_a_finished_batch_rebuilds_a_deleted_or_cut_results_file(tmp_path: Path) -> None:
    """`resume` of a finished batch said "nothing to resume" and left a deleted results.jsonl
    deleted for good (no engine would start to check it). It checks the file as an engine
    does, and rebuilds it from items.db, which holds every result."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{i}\n" for i in range(20)))
    out = tmp_path / "out"
    run = invoke_in_process(
        ["run", str(items), "--cmd", 'echo "{{\\"n\\": {seq}}}"', "--headless"], out=out, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    (batch,) = [p for p in out.iterdir() if p.is_dir()]
    results = batch / "results.jsonl"
    whole = results.read_bytes()
    assert len(whole.splitlines()) == 20

    for damage in ("deleted", "cut"):
        if damage == "deleted":
            results.unlink()
            shown = invoke_in_process(["show", batch.name], out=out, cwd=tmp_path)
            assert f"Results:   {results} (missing: `batchtui resume` rebuilds it)" in shown.stdout, shown.stdout
        else:
            results.write_bytes(whole[: len(whole) // 2])
        resumed = invoke_in_process(["resume", batch.name, "--headless"], out=out, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        said = resumed.stdout + resumed.stderr
        assert "results.jsonl did not match items.db" in said and "rebuilt it from items.db (20 lines" in said, said
        assert f"batch {batch.name} is finished; nothing to resume." in said
        # The same lines, byte for byte, in seq order (the engine wrote them as items ended).
        assert sorted(results.read_bytes().splitlines()) == sorted(whole.splitlines()), damage

    again = invoke_in_process(["resume", batch.name, "--headless"], out=out, cwd=tmp_path)
    assert again.returncode == 0 and "did not match" not in again.stdout + again.stderr


MOVER = """
import os, time
def work(item):
    if item.seq == 5 and item.attempt == 1 and os.path.isdir(item.batch_dir):
        os.rename(item.batch_dir, os.environ["MOVED_TO"])
    time.sleep(0.01)
    return {"seq": item.seq}
"""


def test_a_batch_folder_moved_under_the_engine_halts_it_cleanly_and_resumes_where_it_went(tmp_path: Path) -> None:
    """Moving (or deleting) the batch's folder under a running engine crashed it with a
    traceback at its next write of the live files. It halts, says so, and the folder resumes
    where it went with every item once."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{i}\n" for i in range(N)))
    code = tmp_path / "mover.py"
    code.write_text(MOVER)
    out, moved = tmp_path / "out", tmp_path / "elsewhere"
    args = ["run", str(items), "--call", f"{code}:work", "--executor", "thread", "-j", "1", "--headless"]
    run = invoke_in_process(args, out=out, cwd=tmp_path, env={"MOVED_TO": str(moved)})
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "was moved or deleted while this engine ran: it stopped" in run.stderr, run.stderr
    assert "`batchtui resume <its folder now>` goes on from there" in run.stderr
    assert not any(out.iterdir())  # nothing written back at the old place
    done = [json.loads(line)["seq"] for line in (moved / "results.jsonl").read_text().splitlines()]
    assert 6 <= len(done) < N, len(done)

    resumed = invoke_in_process(["resume", str(moved), "--headless"], out=out, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    seqs = [json.loads(line)["seq"] for line in (moved / "results.jsonl").read_text().splitlines()]
    assert sorted(seqs) == list(range(N))


def test_the_tui_says_the_halt_when_the_folder_went_while_its_engine_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the app, the CLI reads the batch back to say who runs it: with the folder gone it
    printed only the missing manifest's path. It says how the run ended instead."""
    from types import SimpleNamespace

    from batchtui.engine.batchdir import BatchDir
    from batchtui.engine.models import BatchState, Counts
    from batchtui.engine.runner import RunResult
    from batchtui.tui.cli.watching import _after_tui

    gone = BatchDir(tmp_path / "out" / "20261203_000000_abcdef12")  # never made: as if moved away
    result = RunResult(gone, BatchState.HALTED, Counts(), "the batch folder X was moved or deleted", 3)
    app = SimpleNamespace(handoff=None, engine_error=None, runner=SimpleNamespace(batch=gone), engine_result=result)
    assert _after_tui(app, None) == 3
    err = capsys.readouterr().err
    assert err == "batch 20261203_000000_abcdef12 halted: the batch folder X was moved or deleted\n", err
