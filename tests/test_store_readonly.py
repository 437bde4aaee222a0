"""The views read a batch wherever it is: under a folder whose name holds a URI's characters, and
in a folder this process cannot write (an archive on read-only media, a copy without write
permission). Neither is damage, and neither may make a view write anything anywhere.

- A ``#`` in a folder's name ended the SQLite URI the views opened there: ``file:/x/a#b/...?mode=ro``
  opened ``/x/a``, read-write, creating it, and the batch was called damaged.
- In a read-only folder SQLite could not make the ``-shm`` file WAL mode wants: a healthy
  finished batch was called damaged, with ``batchtui recover`` as the way out.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from batchtui.engine.models import BatchState
from batchtui.engine.store import ItemQueries

from .conftest import CLI, cli_env
from .tui.fixtures import make_batch

#: Characters SQLite's URI parser reads (``?``, ``#``, ``%``) and others a shell would (a space).
ODD_NAME = "a#b?mode=rw&x=1 %41"


def test_a_batch_under_a_folder_named_with_uri_characters_is_read_and_nothing_is_made_beside_it(
    tmp_path: Path, invoke_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    out = tmp_path / ODD_NAME / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=12)
    before = sorted(p.name for p in tmp_path.iterdir())

    with ItemQueries(batch / "items.db") as store:
        assert store.counts().total == 12

    show = invoke_cli(["show", str(batch)])
    assert show.returncode == 0, show.stderr
    assert "is damaged" not in show.stdout + show.stderr
    export = invoke_cli(["export", str(batch)])
    assert export.returncode == 0, export.stderr
    assert len(export.stdout.splitlines()) == 12
    # The URI cut at "#" named tmp_path/"a": nothing may appear beside the batch's folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# -- a folder this process cannot write ------------------------------------------------------------


def _can_make_read_only() -> bool:
    if os.geteuid() != 0:
        return True  # chmod is enough for anyone but root
    try:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_read_only = pytest.mark.skipif(
    not _can_make_read_only(), reason="root without a private mount namespace (unshare -m) here"
)


def _read_only_cli(folder: Path, args: Sequence[str], out: Path) -> subprocess.CompletedProcess[str]:
    """``batchtui ARGS`` with ``folder`` read-only to it: a read-only bind mount in a mount
    namespace of its own for root (chmod does not stop root), the write bits off otherwise."""
    env = cli_env(out)
    if os.geteuid() == 0:
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), *CLI, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    mode = folder.stat().st_mode
    folder.chmod(0o500)
    try:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    finally:
        folder.chmod(mode)


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_size) for p in folder.iterdir())


@needs_read_only
def test_a_finished_batch_in_a_read_only_folder_is_read_by_every_view(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=20)
    assert not (batch / "items.db-wal").exists()  # closed cleanly: every page is in items.db
    before = _files(batch)

    show = _read_only_cli(batch, ["show", str(batch)], out)
    assert show.returncode == 0, show.stderr
    assert "is damaged" not in show.stdout + show.stderr
    assert "finished" in show.stdout
    export = _read_only_cli(batch, ["export", str(batch)], out)
    assert export.returncode == 0, export.stderr
    assert len(export.stdout.splitlines()) == 20
    errors = _read_only_cli(batch, ["errors", str(batch)], out)
    assert errors.returncode == 0, errors.stderr
    assert _files(batch) == before


def _with_pages_in_the_wal(batch: Path) -> None:
    """Leave ``batch``'s items.db as an engine killed mid-run leaves it: committed pages in its
    -wal file, not yet in the store file (copied while a connection holds them there)."""
    db = batch / "items.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("UPDATE items SET result='{\"late\": 1}' WHERE seq=0")
    conn.commit()
    kept = {suffix: Path(f"{db}{suffix}.kept") for suffix in ("", "-wal")}
    for suffix, tmp in kept.items():
        shutil.copyfile(f"{db}{suffix}", tmp)
    conn.close()  # the last connection: checkpoints and removes the -wal and -shm
    for suffix, tmp in kept.items():
        os.replace(tmp, f"{db}{suffix}")
    assert (batch / "items.db-wal").stat().st_size > 0
    assert not (batch / "items.db-shm").exists()


@needs_read_only
def test_pages_left_in_the_wal_of_a_read_only_copy_are_not_called_damage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED, n=20)
    _with_pages_in_the_wal(batch)
    before = _files(batch)

    show = _read_only_cli(batch, ["show", str(batch)], out)
    assert show.returncode == 2
    assert "copy the batch folder somewhere writable" in show.stderr
    assert "is damaged" not in show.stderr
    assert "rebuild it" not in show.stderr  # the way out of damage, not of this
    assert "Traceback" not in show.stderr
    assert _files(batch) == before

    # Where it can be written, the same files read whole, the late page included.
    with ItemQueries(batch / "items.db") as store:
        assert store.counts().total == 20
        row = store.row(0)
        assert row is not None
        assert row.result == {"late": 1}


@needs_read_only
@pytest.mark.parametrize("verb", ["resume", "recover"])
def test_changing_a_batch_in_a_read_only_folder_says_so_without_a_traceback(tmp_path: Path, verb: str) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.PAUSED, n=20)
    before = _files(batch)

    done = _read_only_cli(batch, [verb, str(batch)], out)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"batch {batch.name} cannot be changed here" in done.stderr
    assert _files(batch) == before


def test_the_read_only_cli_helper_really_makes_the_folder_read_only(tmp_path: Path) -> None:
    """The tests above prove nothing if the folder could be written after all."""
    if not _can_make_read_only():
        pytest.skip("root without a private mount namespace (unshare -m) here")
    folder = tmp_path / "f"
    folder.mkdir()
    probe = "import pathlib, sys; pathlib.Path(sys.argv[-1], 'x').touch()"
    env = cli_env(tmp_path)
    if os.geteuid() == 0:
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, "-c", probe, str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    else:
        folder.chmod(0o500)
        try:
            done = subprocess.run(
                [sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, timeout=60, check=False
            )
        finally:
            folder.chmod(0o700)
    assert done.returncode != 0
    assert "Read-only file system" in done.stderr or "Permission denied" in done.stderr
    assert not (folder / "x").exists()


def _immutable(path: Path, on: bool) -> bool:
    """``chattr +i`` (root, and a file system with the flag); whether it took."""
    chattr = shutil.which("chattr")
    if chattr is None or os.geteuid() != 0:
        return False
    return subprocess.run([chattr, "+i" if on else "-i", str(path)], capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize(
    "verb",
    [
        ["retry", "{b}", "1"],
        ["skip", "{b}", "1"],
        ["prioritize", "{b}", "1"],
        ["resume", "{b}", "--retry-failed", "--headless"],
        ["resume", "{b}", "--rescan", "--headless"],
        ["recover", "{b}", "--force"],
    ],
)
def test_changing_a_batch_whose_store_cannot_be_written_says_so_without_a_traceback(
    tmp_path: Path, verb: list[str]
) -> None:
    """items.db read-only or immutable, its folder writable: SQLite's 'attempt to write a
    readonly database' came out as a traceback (and recover's rename as a PermissionError)."""
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(6)))
    made = subprocess.run(
        [*CLI, "run", str(tmp_path / "items.txt"), "--cmd", "[ {} -gt 2 ]", "--headless"],
        env=cli_env(out), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 1, made.stderr
    (batch,) = [p for p in out.iterdir() if p.is_dir()]
    db = batch / "items.db"
    if not _immutable(db, True):
        pytest.skip("chattr +i is not available here (root on a file system with the flag)")
    try:
        before = _files(batch)
        done = subprocess.run(
            [*CLI, *[w.replace("{b}", str(batch)) for w in verb]],
            env=cli_env(out), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        after = _files(batch)
    finally:
        _immutable(db, False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "items.db cannot be changed" in done.stderr or "cannot replace" in done.stderr, done.stderr
    assert "damaged" not in done.stderr
    # The store as it was: no kept copy made, nothing renamed (the -shm index may come and go).
    assert [f for f in after if f[0] == "items.db" or ".corrupt" in f[0]] == [
        f for f in before if f[0] == "items.db" or ".corrupt" in f[0]
    ]
