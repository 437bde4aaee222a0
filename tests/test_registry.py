"""The per-user batch registry (engine/registry.py) and addressing a batch by any unique handle:
a batch made in one folder is listed, shown, steered, watched and resumed from another; a moved
or deleted one is `gone`; `--output-dir` narrows; concurrent writers lose nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from batchtui.engine.batches import BatchScope, resolve_batch
from batchtui.engine.registry import registered, registry_path, state_dir

from .conftest import cli_env, invoke_in_process, only_batch


def _cli(args: list[str], cwd: Path, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``batchtui ARGS`` in ``cwd``, whose configured output dir is its ./batch_output (no
    --output-dir given: every registered batch is in reach)."""
    return invoke_in_process(args, out=out or cwd / "batch_output", cwd=cwd)


@pytest.fixture
def made(tmp_path: Path) -> dict[str, Any]:
    """Two batches made in folder a/: `triage` (both items fail) and `other` (both complete);
    an empty folder b/ to work from."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "in.txt").write_text("x\ny\n")
    for name, cmd in (("triage", "exit 3"), ("other", "true")):
        done = _cli(["run", "in.txt", "--cmd", cmd, "--headless", "--name", name], a)
        assert done.returncode in (0, 1), done.stderr
    ids = {json.loads(r)["name"]: json.loads(r)["batch_id"] for r in registry_path().read_text().splitlines()}
    return {"a": a, "b": b, "triage": ids["triage"], "other": ids["other"]}


def _shown_id(args: list[str], cwd: Path) -> str:
    done = _cli(["show", *args, "--json"], cwd)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["batch_id"])


def test_a_batch_made_in_one_folder_is_listed_shown_and_steered_from_another(made: dict[str, Any]) -> None:
    b = made["b"]
    listed = _cli(["ls", "--json"], b)
    assert listed.returncode == 0, listed.stderr
    assert {r["batch_id"] for r in json.loads(listed.stdout)} == {made["triage"], made["other"]}
    assert _shown_id(["triage"], b) == made["triage"]
    # The issue's own example: `batchtui retry triage` said "no batch 'triage'".
    retried = _cli(["retry", "triage", "--status", "failed"], b)
    assert retried.returncode == 0, retried.stderr
    assert "2 failed items back to pending" in retried.stdout
    assert not (b / "batch_output").exists()  # nothing was made where the command ran


def test_every_form_of_handle_finds_its_batch(made: dict[str, Any]) -> None:
    b, tid, oid = made["b"], made["triage"], made["other"]
    suffix = tid.rsplit("_", 1)[1]
    part = next(suffix[i : i + 4] for i in range(5) if suffix[i : i + 4] not in oid and not tid.startswith(suffix[i:]))
    path = made["a"] / "batch_output" / tid
    for handle in (tid, tid[:-3], suffix, part, "triage", str(path)):
        assert _shown_id([handle], b) == tid, handle
    assert _shown_id(["other"], b) == oid


def test_an_ambiguous_handle_is_exit_2_listing_the_candidates(made: dict[str, Any]) -> None:
    b = made["b"]
    tid, oid = made["triage"], made["other"]
    common = tid[: next(i for i, (x, y) in enumerate(zip(tid, oid, strict=True)) if x != y)]
    done = _cli(["show", common], b)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "matches 2 batches by part of their id" in done.stderr
    for key in ("triage", "other"):
        assert made[key] in done.stderr and key in done.stderr
    assert str(made["a"] / "batch_output") in done.stderr and "finished" in done.stderr
    assert "pick one by its full id" in done.stderr
    # Two batches of one name: the name alone names neither.
    again = _cli(["run", "in.txt", "--cmd", "true", "--headless", "--name", "triage"], made["a"])
    assert again.returncode == 0, again.stderr
    named = _cli(["retry", "triage", "--status", "failed"], b)
    assert named.returncode == 2 and "matches 2 batches by name" in named.stderr
    assert _shown_id([made["triage"]], b) == made["triage"]  # the full id still picks one


def test_output_dir_given_narrows_to_that_folder(made: dict[str, Any]) -> None:
    b = made["b"]
    narrowed = _cli(["ls", "--json", "--output-dir", str(b / "batch_output")], b)
    assert narrowed.returncode == 0 and json.loads(narrowed.stdout) == []
    missing = _cli(["show", "triage", "-o", str(b / "batch_output")], b)
    assert missing.returncode == 2 and "no batch 'triage'" in missing.stderr
    here = _cli(["-o", str(made["a"] / "batch_output"), "ls", "--json"], b)  # the group's flag
    assert len(json.loads(here.stdout)) == 2


def test_resume_and_watch_from_another_folder(made: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    b = made["b"]
    assert _cli(["retry", "triage", "--status", "failed"], b).returncode == 0
    resumed = _cli(["resume", "--headless"], b)  # b has no batch: the latest registered
    assert f"resuming {made['triage']}" in resumed.stderr
    assert f"in {made['a'] / 'batch_output'} (none in the output dir)" in resumed.stderr
    assert resumed.returncode == 1  # its items fail again: the run happened
    by_name = _cli(["resume", "other", "--headless"], b)
    assert by_name.returncode == 0 and made["other"] in by_name.stderr

    # watch: the batch it resolves and the scope its browser lists, without a terminal.
    from batchtui.tui.cli import watching

    seen: dict[str, Any] = {}

    def launch(ctx: click.Context, **kw: Any) -> None:
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(watching, "launch_tui", launch)
    monkeypatch.setattr(watching, "terminal", lambda: True)
    assert _cli(["watch", "triage"], b).returncode == 0
    assert seen["batch"] == made["a"] / "batch_output" / made["triage"]
    assert seen["output_dir"] == BatchScope(b / "batch_output", only=False)


def test_bare_watch_and_show_take_the_current_folder_first(made: dict[str, Any]) -> None:
    b = made["b"]
    (b / "in.txt").write_text("z\n")
    assert _cli(["run", "in.txt", "--cmd", "true", "--headless", "--name", "here"], b).returncode == 0
    mine = only_batch(b / "batch_output").name
    # a/ then makes a newer one: b's own latest still wins in b, the newest overall elsewhere.
    assert _cli(["run", "in.txt", "--cmd", "true", "--headless", "--name", "newest"], made["a"]).returncode == 0
    # (Both may be made within one second: "newest" is the one made last, not the larger id.)
    newest = next(e.batch_id for e in registered() if e.name == "newest")
    assert newest != mine
    assert resolve_batch(None, BatchScope(b / "batch_output")).batch_id == mine
    elsewhere = made["a"].parent / "c"
    elsewhere.mkdir()
    assert resolve_batch(None, BatchScope(elsewhere / "batch_output")).batch_id == newest
    assert _shown_id([], elsewhere) == newest


def test_a_deleted_batch_is_gone_in_ls_refused_by_name_and_forgotten_by_cleanup(made: dict[str, Any]) -> None:
    b = made["b"]
    shutil.rmtree(made["a"] / "batch_output" / made["triage"])
    listed = _cli(["ls"], b)
    assert listed.returncode == 0
    # Not listed (hundreds pile up: each `rm -rf batch_output` leaves one) but counted, last.
    assert made["triage"] not in listed.stdout and made["other"] in listed.stdout
    assert listed.stdout.splitlines()[-1] == (
        "1 more batch is registered but gone (folder moved or deleted): `batchtui ls --all` lists it,"
        " `batchtui cleanup` forgets it"
    )
    every = _cli(["ls", "--all"], b)
    row = next(line for line in every.stdout.splitlines() if made["triage"] in line)
    assert " gone " in row and str(made["a"] / "batch_output") in row
    assert "registered but gone" not in every.stdout
    rows = {r["batch_id"]: r["state"] for r in json.loads(_cli(["ls", "--json"], b).stdout)}
    assert rows == {made["triage"]: "gone", made["other"]: "finished"}
    refused = _cli(["show", "triage"], b)
    assert refused.returncode == 2 and "(triage): its folder " in refused.stderr
    assert "is gone (moved or deleted)" in refused.stderr
    dry = _cli(["cleanup", "--dry-run"], b)
    assert f"would forget {made['triage']}" in dry.stdout
    assert any(e.batch_id == made["triage"] for e in registered())
    cleaned = _cli(["cleanup"], b)
    assert cleaned.returncode == 0 and f"forgetting {made['triage']}" in cleaned.stdout
    assert [e.batch_id for e in registered()] == [made["other"]]
    assert [r["batch_id"] for r in json.loads(_cli(["ls", "--json"], b).stdout)] == [made["other"]]
    assert "gone" not in _cli(["ls"], b).stdout


def test_a_damaged_registry_line_is_skipped_with_a_warning(made: dict[str, Any]) -> None:
    reg = registry_path()
    lines = reg.read_bytes().splitlines(keepends=True)
    reg.write_bytes(lines[0] + b'{"path": "/x", "batch\n' + b"\x00\xff garbage\n" + lines[1] + b'{"path": 3}')
    listed = _cli(["ls", "--json"], made["b"])
    assert listed.returncode == 0, listed.stderr
    assert {r["batch_id"] for r in json.loads(listed.stdout)} == {made["triage"], made["other"]}
    assert "skipped 3 damaged lines in the batch registry" in listed.stderr
    assert _shown_id(["other"], made["b"]) == made["other"]


_WRITER = """
import sys
from pathlib import Path
from batchtui.engine.registry import forget, register
who, n = sys.argv[1], int(sys.argv[2])
sys.stdin.read()  # the start gate: every writer starts at once
if who == "forget":
    for _ in range(n):
        forget([f"/old/{i}" for i in range(50)])
else:
    for i in range(n):
        register(Path(f"/w{who}/{i}"), f"20260101_000000_{int(who):04x}{i:04x}", f"n{who}", "t")
"""


def test_processes_registering_and_forgetting_at_once_lose_nothing() -> None:
    from batchtui.engine.registry import register

    for i in range(50):
        register(Path(f"/old/{i}"), f"20250101_000000_{i:08x}", "old", "t")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, who, n], stdin=subprocess.PIPE, env=env)
        for who, n in (("1", "300"), ("2", "300"), ("3", "300"), ("forget", "30"))
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    paths = [e.path for e in registered()]
    assert sorted(paths) == sorted(f"/w{w}/{i}" for w in "123" for i in range(300))
    assert len(registry_path().read_bytes().splitlines()) == 900  # every line whole


def test_no_test_touches_the_real_state_dir(tmp_path: Path, run_cli: Any) -> None:
    real = Path.home() / ".local" / "state"
    assert not state_dir().is_relative_to(real)
    assert cli_env(tmp_path)["XDG_STATE_HOME"] == os.environ["XDG_STATE_HOME"]
    (tmp_path / "in.txt").write_text("x\n")
    done = run_cli(["run", "in.txt", "--cmd", "true", "--headless"])  # a real subprocess
    assert done.returncode == 0, done.stderr
    assert [e.name for e in registered()] == ["in.txt (lines)"]


def test_batches_made_in_the_same_second_are_newest_first_by_their_creation_time(tmp_path: Path) -> None:
    """Ids start with the creation second and end with a random suffix: within one second the
    latest batch is the one made last (its manifest's time), not the larger suffix."""
    from batchtui.engine.batches import iter_batches

    out = tmp_path / "batch_output"
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    made = []
    for name in ("first", "second"):
        assert _cli(["run", str(src), "--cmd", "true", "--headless", "--name", name], tmp_path).returncode == 0
        made.append(next(b for b in out.iterdir() if b.name not in made).name)
    # The same second and the suffixes in the wrong order for "second": rename them so.
    first, second = out / made[0], out / made[1]
    first.rename(out / "20260101_000000_ffffffff")
    second.rename(out / "20260101_000000_00000000")
    assert [b.batch_id for b in iter_batches(out)] == ["20260101_000000_00000000", "20260101_000000_ffffffff"]
    assert resolve_batch(None, BatchScope(out, only=True)).batch_id == "20260101_000000_00000000"


@pytest.fixture(scope="module")
def state_seen_by_a_module_fixture() -> Path:
    """Where a module fixture (set up before any test's own state dir) would register a batch."""
    from batchtui.engine.registry import state_dir

    return state_dir()


def test_module_fixtures_register_in_the_suites_state_dir_not_the_users(
    state_seen_by_a_module_fixture: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The suite never writes the real ~/.local/state: a module fixture's batches once were
    (tests/test_startup.py's), listed as gone by every `batchtui ls` afterwards."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    assert state_seen_by_a_module_fixture.is_relative_to(root), state_seen_by_a_module_fixture


def test_a_cleanup_killed_while_it_deletes_leaves_no_half_batch(tmp_path: Path) -> None:
    """kill -9 of `cleanup` part-way left results.jsonl and the manifest deleted, items.db and
    logs/ kept: `ls` showed it `interrupted 20000/20000` and the next cleanup kept it as
    unfinished. A batch is now renamed out of sight first, and the next cleanup ends the job."""
    import signal
    import time

    from batchtui.engine.models import BatchState

    from .conftest import CLI, cli_env
    from .tui.fixtures import make_batch

    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=10)
    logs = batch / "logs"
    logs.mkdir(exist_ok=True)
    for i in range(20_000):  # enough files for the delete to be caught half-way
        (logs / f"{i}.1.out").write_bytes(b"x")
    hidden = out / f".removing-{batch.name}"
    proc = subprocess.Popen([*CLI, "cleanup", "--max-age-days", "0"], env=cli_env(out), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not hidden.exists():
        assert proc.poll() is None, "cleanup ended before it was caught deleting"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not batch.exists()  # never a half batch under its own name
    assert hidden.exists() and any(hidden.iterdir())  # killed while it deleted
    listed = subprocess.run([*CLI, "ls", "--json"], env=cli_env(out), capture_output=True, text=True, check=True)
    assert batch.name not in listed.stdout
    again = subprocess.run([*CLI, "cleanup"], env=cli_env(out), capture_output=True, text=True, check=True)
    assert f"finishing the removal of {batch.name}" in again.stdout
    assert not hidden.exists()
