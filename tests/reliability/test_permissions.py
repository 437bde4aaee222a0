"""Permissions: batch dir 0700 and every file in it 0600 under any umask; nothing written outside.

Every command runs with HOME, XDG_* dirs, TMPDIR and the working directory inside the test's
tree, so a write anywhere else a batchtui process might reach shows up in the before/after diff.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

from batchtui.engine.batchdir import engine_alive

from .helpers import (
    PROCS,
    assert_invariants,
    cli,
    exited,
    kill_group,
    only_batch,
    start,
    tree_snapshot,
    wait_until,
)


def _modes(batch: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(batch):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            out[str(p.relative_to(batch))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def _bad_modes(batch: Path) -> list[str]:
    bad = []
    if stat.S_IMODE(batch.stat().st_mode) != 0o700:
        bad.append(f". {oct(stat.S_IMODE(batch.stat().st_mode))}")
    for rel, mode in _modes(batch).items():
        is_dir = (batch / rel).is_dir()
        if rel.startswith("out/") and not is_dir:
            continue  # files the user's own command wrote in {out}: its umask, its business
        want = 0o700 if is_dir else 0o600
        if mode != want:
            bad.append(f"{rel} {oct(mode)}")
    return bad


def test_modes_and_nothing_written_outside(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A detached shell run steered while it runs (umask 000), then a process-pool run killed,
    steered offline, resumed, viewed and recovered (umask 022)."""
    # Items from seq 10 on wait for this file: the detached engine is still running when it is
    # steered and while the second run goes on. It lies outside the tree the test compares.
    gate = tmp_path_factory.mktemp("gate") / "go"
    work = tmp_path / "work"
    home = tmp_path / "home"
    tmpdir = tmp_path / "tmp"
    for d in (work, home, tmpdir):
        d.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    source = work / "items.txt"
    source.write_text("".join(f"it-{i}\n" for i in range(120)))
    small = work / "small.txt"
    small.write_text("".join(f"s-{i}\n" for i in range(30)))
    env = {
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
    }
    before = tree_snapshot(tmp_path)

    mask = {"now": 0o000}

    def umask() -> None:
        os.umask(mask["now"])

    def run(*args: str, ok: tuple[int, ...] = (0,)) -> str:
        proc = cli(list(args), out=out, cwd=work, env=env, preexec_fn=umask)
        assert proc.returncode in ok, (args, proc.returncode, proc.stderr[-2000:])
        return proc.stdout

    # A detached shell run with logs and {out} folders, steered while it runs.
    info = json.loads(
        run(
            "run",
            str(source),
            "--cmd",
            "echo out {}; echo err {} >&2; echo x > {out}/f.txt; "
            f"[ {{seq}} -lt 10 ] || while [ ! -e {gate} ]; do sleep 0.05; done",
            "-j",
            "2",
            "--detach",
            "--json",
        )
    )
    batch = Path(info["batch_dir"])
    wal_modes: set[int] = set()

    def sample_wal() -> bool:
        for name in ("items.db-wal", "items.db-shm"):
            p = batch / name
            if p.exists():
                wal_modes.add(stat.S_IMODE(p.stat().st_mode))
        return len(wal_modes) > 0

    wait_until(sample_wal, 20, "items.db-wal while running")
    run("pause", batch.name)
    sample_wal()
    run("unpause", batch.name)
    pid = int(info["pid"])

    mask["now"] = 0o022
    # Meanwhile, a Python run in a process pool, killed and resumed; views; offline commands;
    # recover.
    engine = start(
        ["run", str(small), "--call", f"{PROCS}:slow", "--executor", "process", "-j", "2", "--headless"],
        out=out,
        cwd=work,
        env=env,
        preexec_fn=umask,
    )
    wait_until(lambda: len(list(out.iterdir())) == 2 and all((b / "items.db").exists() for b in out.iterdir()), 30)
    second = next(b for b in out.iterdir() if b != batch)
    wait_until(lambda: (second / "results.jsonl").exists() and (second / "results.jsonl").stat().st_size > 0, 30)
    kill_group(engine, signal.SIGKILL)
    # The engine is reaped; its pool workers (killed with it) may hold the batch's lock a moment
    # longer, and a skip sent then goes to control.jsonl for an engine that is gone (CI, once).
    wait_until(lambda: engine_alive(second) is None, 30, "the killed engine's lock released")
    run("skip", second.name, "28", "29")
    run("retry", second.name, ok=(1,))  # nothing has failed: an empty selection is exit 1
    run("resume", second.name, "--headless", "-j", "8", "--executor", "thread", ok=(1,))
    run("show", second.name)
    run("show", second.name, "--json")
    run("ls")
    run("export", second.name)
    run("recover", second.name, "--force")
    run("resume", second.name, "--headless", ok=(0, 1))
    assert not exited(pid)(), "the detached engine ended before its gate opened"
    gate.touch()
    wait_until(exited(pid), 60, "the detached engine's end")
    assert wal_modes == {0o600}, [oct(m) for m in wal_modes]

    for b in (batch, second):
        bad = _bad_modes(b)
        assert not bad, f"wrong modes in {b.name}: {bad}"
    names = set(os.listdir(batch))
    assert {"engine.log", "control.jsonl", "report.json", "logs", "live_progress.json", "lock"} <= names
    assert list(second.glob("items.db.corrupt-*"))
    assert_invariants(batch, n_items=120, state="finished")
    run("show", batch.name)

    after = tree_snapshot(tmp_path)
    outside = {
        k: v
        for k, v in after.items()
        if not any(k == f"out/{b.name}" or k.startswith(f"out/{b.name}/") for b in (batch, second))
    }
    # The one thing written elsewhere: the per-user registry of batch dirs (DESIGN section 2),
    # under $XDG_STATE_HOME (here home/.local/state), its folders 0700 and its files 0600.
    state = "home/.local"
    registry = {k: mode for k, (mode, _size) in outside.items() if k == state or k.startswith(f"{state}/")}
    assert f"{state}/state/batchtui/batches.jsonl" in registry, sorted(registry)
    wrong = {
        k: oct(stat.S_IMODE(m)) for k, m in registry.items() if stat.S_IMODE(m) != (0o700 if stat.S_ISDIR(m) else 0o600)
    }
    assert not wrong, wrong
    outside = {k: v for k, v in outside.items() if k not in registry}
    added = sorted(set(outside) - set(before))
    removed = sorted(set(before) - set(outside))
    changed = sorted(k for k in set(before) & set(outside) if before[k] != outside[k])
    assert (added, removed, changed) == ([], [], []), f"written outside the batch dirs: {added} {removed} {changed}"


def test_new_output_dir_gets_only_the_batch(tmp_path: Path) -> None:
    """An output dir that does not exist yet: created, holding only the batch dir."""
    source = tmp_path / "items.txt"
    source.write_text("a\nb\n")
    before = tree_snapshot(tmp_path)
    out = tmp_path / "deep" / "out"
    proc = cli(["run", str(source), "--cmd", "true", "--headless"], out=out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    batch = only_batch(out)
    after = tree_snapshot(tmp_path, skip=batch)
    assert sorted(set(after) - set(before)) == ["deep", "deep/out", f"deep/out/{batch.name}"]
    assert not _bad_modes(batch)


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_modes_of_a_headless_run(tmp_path: Path, mask: int) -> None:
    source = tmp_path / "items.txt"
    source.write_text("".join(f"i{i}\n" for i in range(8)))
    out = tmp_path / "out"

    def umask() -> None:
        os.umask(mask)

    proc = cli(
        ["run", str(source), "--cmd", "echo o {}; echo e >&2; [ $((BATCHTUI_SEQ % 4)) -ne 1 ]", "--headless"],
        out=out,
        cwd=tmp_path,
        preexec_fn=umask,
    )
    assert proc.returncode == 1, proc.stderr
    batch = only_batch(out)
    retried = cli(["resume", batch.name, "--retry-failed", "--headless"], out=out, cwd=tmp_path, preexec_fn=umask)
    assert retried.returncode == 1, retried.stderr
    assert (batch / "logs").is_dir() and (batch / "report.json").exists()
    assert not _bad_modes(batch), _bad_modes(batch)
