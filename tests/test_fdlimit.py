"""Open files (engine/fdlimit.py): a run raises the soft limit as far as its workers may need,
and says when the hard one is too low for them; the control watcher survives running out of them.

Under the soft limit many sessions start with (1024; 48 here, to make it quick), shell items
failed with "Too many open files" before their command started, counted as the items' own
failures, and the control watcher's thread died with a traceback on the operator's terminal."""

from __future__ import annotations

import errno
import importlib.abc
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine import inotify
from batchtui.engine.control import ControlWatcher
from batchtui.engine.fdlimit import shortfall

from .conftest import CLI, cli_env, only_batch, read_json, wait_until

_SOFT, _HARD = resource.getrlimit(resource.RLIMIT_NOFILE)


def _run_limited(ulimit: str, tmp_path: Path, out_dir: Path) -> subprocess.CompletedProcess[str]:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(300)))
    run = [*CLI, "run", str(items), "--cmd", "sleep 0.05", "--workers", "32", "--headless"]
    return subprocess.run(
        ["sh", "-c", f'ulimit {ulimit}; exec "$@"', "sh", *run],
        env=cli_env(out_dir),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.skipif(_HARD != resource.RLIM_INFINITY and _HARD < 1024, reason="this machine's hard limit is low")
def test_a_low_soft_limit_is_raised_and_every_item_runs(tmp_path: Path, out_dir: Path) -> None:
    done = _run_limited("-Sn 48", tmp_path, out_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Too many open files" not in done.stderr
    assert read_json(only_batch(out_dir) / "manifest.json")["totals"]["complete"] == 300  # type: ignore[index]


def test_a_hard_limit_too_low_for_the_workers_is_said(tmp_path: Path, out_dir: Path) -> None:
    done = _run_limited("-n 100", tmp_path, out_dir)
    assert (
        "32 workers may need about 224 open files, and this process may open 100 (ulimit -n; its hard"
        " limit is 100)" in done.stderr
    ), done.stderr[-2000:]
    assert "it runs at most 7 workers. Raise the limit (ulimit -n 224) for all 32" in done.stderr
    assert "Traceback" not in done.stderr


def test_shortfall_counts_what_the_engine_can_count() -> None:
    assert shortfall(8, "shell", (1024, 1024)) is None  # 64 + 40
    assert shortfall(200, "shell", (1024, 1024)) is not None  # 64 + 1,000
    assert shortfall(240, "process", (1024, 4096)) is None  # 64 + 960 = 1,024: just fits
    assert shortfall(241, "process", (1024, 4096)) is not None
    assert shortfall(1000, "", (64, 64)) is None  # a callable's threads: nothing to count


def _python_under(ulimit: str, code: str) -> str:
    """What ``python -c CODE`` prints under ``ulimit ULIMIT``."""
    run = ["sh", "-c", f'ulimit {ulimit}; exec "$@"', "sh", sys.executable, "-c", code]
    return subprocess.run(run, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(_HARD != resource.RLIM_INFINITY and _HARD < 1024, reason="this machine's hard limit is low")
def test_the_soft_limit_is_raised_only_as_far_as_the_workers_need() -> None:
    """Twice what they may need (64 + 5 x 32 = 224: 448), not the hard limit: the processes a run
    starts inherit it. Never lowered."""
    code = (
        "import resource; from batchtui.engine.fdlimit import ensure\n"
        "print(ensure(32, 'shell'), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(ensure(1, 'shell'), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(ensure(1000, ''), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    assert _python_under("-Sn 64", code).splitlines() == ["None 448", "None 448", "None 448"]


def test_raising_the_workers_makes_room_or_says_there_is_none() -> None:
    code = (
        "import resource; from batchtui.engine.fdlimit import ensure\n"
        "print(ensure(8, 'process')); print(ensure(200, 'process'))"
    )
    first, second = _python_under("-n 512", code).splitlines()
    assert first == "None"
    assert second.startswith("200 workers may need about 864 open files, and this process may open 512")
    assert second.endswith("it runs at most 112 workers. Raise the limit (ulimit -n 864) for all 200")


class _NoDescriptors(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "watchfiles":
            raise OSError(errno.EMFILE, "Too many open files")


def test_the_control_watcher_survives_no_descriptor_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its import of watchfiles failed with EMFILE: the thread died with a traceback. The
    runner's loop still reads control.jsonl by itself (a stat each turn); the watcher only
    wakes it sooner, so it ends quietly."""
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    monkeypatch.setattr(inotify, "available", lambda: False)  # watchfiles, as off Linux
    monkeypatch.delitem(sys.modules, "watchfiles", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoDescriptors(), *sys.meta_path])
    watcher = ControlWatcher(tmp_path, lambda: None, delay=0)
    watcher.start()
    watcher.stop()
    assert errors == []


@pytest.mark.skipif(_HARD != resource.RLIM_INFINITY and _HARD < 1024, reason="this machine's hard limit is low")
def test_more_workers_asked_of_a_running_engine_get_room_first(tmp_path: Path, out_dir: Path) -> None:
    """`batchtui workers B 40` on an engine started with 1 worker under a soft limit of 64: its
    soft limit is raised for the 40 (64 + 5 x 40 = 264: 528) before they start."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(60)))
    gate = tmp_path / "gate"
    cmd = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    run = [*CLI, "run", str(items), "--cmd", cmd, "--headless", "--workers", "1"]
    engine = subprocess.Popen(
        ["sh", "-c", 'ulimit -Sn 64; exec "$@"', "sh", *run],
        env=cli_env(out_dir),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def soft_limit() -> int:
        line = next(x for x in Path(f"/proc/{engine.pid}/limits").read_text().splitlines() if "open files" in x)
        return int(line.split()[3])

    try:
        wait_until(lambda: (out_dir.exists() and any(out_dir.iterdir())) and soft_limit() == 138, 60, "the engine")
        asked = subprocess.run(
            [*CLI, "workers", only_batch(out_dir).name, "40"],
            env=cli_env(out_dir),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert asked.returncode == 0, asked.stderr
        assert soft_limit() == 528
    finally:
        gate.touch()
        engine.wait(timeout=120)
        engine.kill()
    assert engine.returncode == 0
