"""A batch whose creation was killed (kill -9) before its manifest was written leaves a folder
with a lock file and a temporary manifest at most: no listing showed it and `resume <path>`
called it "no such path". `cleanup` removes it (nothing in it can be resumed); one younger than
a minute may be a creation under way and is left alone, as is any folder holding more."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .conftest import CLI, cli_env


def _stillborn(out: Path, name: str, *, age_s: float, extra: str | None = None) -> Path:
    path = out / name
    path.mkdir(parents=True)
    (path / "lock").write_text("")
    (path / f".manifest.json.{os.getpid()}.tmp").write_text('{"batch_id": "')
    if extra is not None:
        (path / extra).write_text("x")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_cleanup_removes_a_batch_folder_whose_creation_was_killed_before_its_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = _stillborn(out, "20261201_101010_0123abcd", age_s=3600)
    young = _stillborn(out, "20261201_101011_0123abce", age_s=0)
    more = _stillborn(out, "20261201_101012_0123abcf", age_s=3600, extra="items.db")
    other = _stillborn(out, "not-a-batch", age_s=3600)

    def cleanup(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "cleanup", *args], env=cli_env(out), capture_output=True, text=True, timeout=60, check=False
        )

    dry = cleanup("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {old.name}: its creation was killed before its manifest was written" in dry.stdout
    assert old.exists()
    done = cleanup()
    assert done.returncode == 0, done.stderr
    assert f"removing {old.name}: its creation was killed" in done.stdout
    assert not old.exists() and young.exists() and more.exists() and other.exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([young.name, more.name, other.name])
