"""items.db (or its -wal, -shm) as a symbolic link or a folder: the views never follow a link
(SQLite makes its -wal and -shm next to the target, so `show` wrote files outside the batch
and served another folder's store), and ``recover`` is the way out it names: it sets aside
whatever is in the store's place, unfollowed, and rebuilds the store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import CLI, cli_env, only_batch, read_json

CMD = "echo {}; [ {} = 2 ] && exit 4; true"


def _cli(args: list[str], out_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=cli_env(out_dir), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _batch(tmp_path: Path, out_dir: Path) -> Path:
    (tmp_path / "in.txt").write_text("1\n2\n3\n")
    res = _cli(["run", "in.txt", "--cmd", CMD, "--headless"], out_dir, tmp_path)
    assert res.returncode == 1, res.stderr  # item 2 failed
    return only_batch(out_dir)


def _moved_away(batch: Path, tmp_path: Path) -> Path:
    """The batch's store files moved to a folder outside it; that folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for p in batch.glob("items.db*"):
        p.rename(elsewhere / p.name)
    return elsewhere


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("name", ["items.db", "items.db-wal"])
def test_the_views_refuse_a_linked_store_and_write_nothing_next_to_its_target(
    tmp_path: Path, out_dir: Path, name: str
) -> None:
    batch = _batch(tmp_path, out_dir)
    if name == "items.db":
        elsewhere = _moved_away(batch, tmp_path)
    else:  # a -wal planted as a link next to the real store
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (batch / "items.db-wal").unlink(missing_ok=True)
        (elsewhere / "items.db-wal").write_bytes(b"")
    (batch / name).symlink_to(elsewhere / name)
    before = _listing(elsewhere)
    for args in (["show", batch.name], ["errors", batch.name], ["export", batch.name], ["logs", batch.name, "1"]):
        res = _cli(args, out_dir, tmp_path)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert f"{name} is a symbolic link (to {elsewhere / name})" in res.stderr, (args, res.stderr)
        assert f"batchtui recover {batch.name}" in res.stderr and "Traceback" not in res.stderr
        assert res.stdout == "", args  # nothing read through it
    assert _listing(elsewhere) == before  # no -wal, no -shm made there, nothing changed


@pytest.mark.parametrize("dangling", [False, True])
def test_recover_sets_a_linked_store_aside_as_a_link_and_rebuilds(
    tmp_path: Path, out_dir: Path, dangling: bool
) -> None:
    batch = _batch(tmp_path, out_dir)
    elsewhere = _moved_away(batch, tmp_path)
    (batch / "items.db").symlink_to(elsewhere / "items.db")
    if dangling:
        (elsewhere / "items.db").unlink()
    before = _listing(elsewhere)
    if not dangling:
        res = _cli(["resume", batch.name, "--headless"], out_dir, tmp_path)
        assert res.returncode == 2 and "items.db is a symbolic link" in res.stderr, res.stderr
        assert f"put the real file there, or `batchtui recover {batch.name}`" in res.stderr
    res = _cli(["recover", batch.name], out_dir, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    kept = [p for p in batch.iterdir() if p.name.startswith("items.db.corrupt-")]
    assert [p.name for p in kept if p.is_symlink()] and all(os.readlink(p) == str(elsewhere / "items.db") for p in kept)
    assert not (batch / "items.db").is_symlink() and (batch / "items.db").is_file()
    assert _listing(elsewhere) == before  # the target was neither opened for writing nor moved
    res = _cli(["resume", batch.name, "--headless"], out_dir, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr  # item 2 (its failure not salvaged) ran and failed again
    totals = read_json(batch / "manifest.json")["totals"]
    assert isinstance(totals, dict) and (totals["total"], totals["complete"], totals["failed"]) == (3, 2, 1)


def test_a_folder_in_place_of_the_store_names_recover_and_recover_rebuilds(tmp_path: Path, out_dir: Path) -> None:
    batch = _batch(tmp_path, out_dir)
    for p in batch.glob("items.db*"):
        p.unlink()
    (batch / "items.db").mkdir()
    (batch / "items.db" / "something").write_text("kept")
    res = _cli(["resume", batch.name, "--headless"], out_dir, tmp_path)
    assert res.returncode == 2, res.stderr
    assert "items.db is not a regular file (a folder); the item store is damaged:" in res.stderr, res.stderr
    assert f"`batchtui recover {batch.name}` sets the item store aside and rebuilds it" in res.stderr
    assert "the engine makes it anew" not in res.stderr  # it does not: recover does
    res = _cli(["recover", batch.name], out_dir, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (kept,) = [p for p in batch.iterdir() if p.name.startswith("items.db.corrupt-")]
    assert (kept / "something").read_text() == "kept"
    res = _cli(["resume", batch.name, "--headless"], out_dir, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = (batch / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2  # 1 and 3: kept from before, not run again
