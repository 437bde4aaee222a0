"""Pool workers started ahead (engine/warmstart.py, tui/cli/warmup.py): `run --call` starts its
worker processes before the CLI imports the engine, the run adopts them, and what it does not
adopt ends; none is left behind by a run that is refused, none prints on a Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from batchtui.tui.cli.warmup import workers_wanted

from .conftest import CLI, cli_env

CPUS = max(2, os.cpu_count() or 2)


LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.mark.parametrize(
    ("args", "environ", "toml", "wanted"),
    [
        (["items.txt", "--call", "f.py:f"], {}, None, CPUS),
        (["items.txt", "--call=f.py:f", "-j", "1"], {}, None, 1),
        (["items.txt", "--call", "f.py:f", "-j1"], {}, None, 1),
        (["items.txt", "--call", "f.py:f", "--workers=1"], {}, None, 1),
        (["items.txt", "--call", "f.py:f", "--workers", "1", "--executor", "process"], {}, None, 1),
        (["items.txt", "--call", "f.py:f", "--workers", "4096"], {}, None, CPUS),  # a worker a core at most
        (["items.txt", "--cmd", "true"], {}, None, 0),
        (["items.txt", "--cmd=true", "-j", "2"], {}, None, 0),
        (["items.txt", "--call", "f.py:f", "--executor", "thread"], {}, None, 0),
        (["items.txt", "--call", "f.py:f", "--executor=dask"], {}, None, 0),
        (["items.txt", "--call", "f.py:f", "--detach"], {}, None, 0),
        (["items.txt", "--call", "f.py:f", "--dry-run"], {}, None, 0),
        (["items.txt", "--call", "f.py:f", "--help"], {}, None, 0),
        (["items.txt", "--", "--call"], {}, None, 0),
        (["items.txt", "--call", "f.py:f"], {"BATCHTUI_EXECUTOR": "thread"}, None, 0),
        (["items.txt", "--call", "f.py:f"], {"BATCHTUI_WORKERS": "1"}, None, 1),
        (["items.txt", "--call", "f.py:f"], {"BATCHTUI_workers": "1"}, None, 1),  # as the config reads it
        (["items.txt", "--call", "f.py:f", "-j", "2"], {"BATCHTUI_WORKERS": "1"}, None, 2),  # the flag wins
        (["items.txt", "--call", "f.py:f"], {}, 'executor = "thread"\n', 0),
        (["items.txt", "--call", "f.py:f"], {}, "workers = 1\n", 1),
        (["items.txt", "--call", "f.py:f"], {"BATCHTUI_WORKERS": "2"}, "workers = 1\n", 2),  # env over file
        (["items.txt", "--call", "f.py:f"], {}, "workers = [\n", CPUS),  # damaged: the run reports it
        (["items.txt", "--call", "f.py:f", "-j", "abc"], {}, None, 0),  # the run refuses it
        (["items.txt", "--call", "f.py:f", "-j", "0"], {}, None, 0),
    ],
)
def test_what_a_run_is_guessed_to_want(
    tmp_path: Path, args: list[str], environ: dict[str, str], toml: str | None, wanted: int
) -> None:
    if toml is not None:
        (tmp_path / "batchtui.toml").write_text(toml)
    assert workers_wanted(args, environ, tmp_path) == wanted


def test_an_explicit_config_file_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('executor = "thread"\n')
    assert workers_wanted(["x", "--call", "f.py:f", "--config", str(tmp_path / "c.toml")], {}, tmp_path) == 0
    assert workers_wanted(["x", "--call", "f.py:f", f"--config={tmp_path / 'c.toml'}"], {}, tmp_path) == 0


CALLS = textwrap.dedent(
    """
    import os, time

    import psutil

    def born(pid):
        # When the process started, on the wall clock, to the clock tick: /proc's start time is
        # on the boot clock (psutil's create_time adds a boot time rounded to the second).
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age

    def whoami(item):
        return {"pid": os.getpid(), "born": born(os.getpid())}

    def whoami_chunk(items):
        # The engine's other pool workers, still there (not zombies) while this chunk runs.
        workers = []
        for p in psutil.Process(os.getppid()).children():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and "--multiprocessing-fork" in p.cmdline():
                    workers.append(p.pid)
            except psutil.Error:  # gone, or a zombie by now
                pass
        return [{**whoami(item), "workers_born": [born(pid) for pid in workers]} for item in items]
    """
)


def _run(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None, call: str = "calls.py:whoami"
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "calls.py").write_text(CALLS)
    (tmp_path / "items.txt").write_text("".join(f"item {i}\n" for i in range(20)))
    return subprocess.run(
        [*CLI, "run", "items.txt", "--call", call, "--headless", "--max-attempts", "1", *extra],
        cwd=tmp_path,
        env=cli_env(tmp_path / "out", env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _results(tmp_path: Path) -> tuple[float, list[dict[str, float]]]:
    (batch,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    started = datetime.fromisoformat(json.loads((batch / "report.json").read_text())["started_at"]).timestamp()
    rows = [json.loads(line)["result"] for line in (batch / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    return started, rows


@LINUX
def test_a_call_run_adopts_the_workers_started_before_it_began(tmp_path: Path) -> None:
    """Every item ran in a worker process born before the run began (report.json's started_at:
    the engine's own workers start after it), and only in the two it asked for."""
    done = _run(tmp_path, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    started, rows = _results(tmp_path)
    assert len({row["pid"] for row in rows}) <= 2
    late = [row for row in rows if row["born"] >= started - 0.05]
    assert not late, f"workers started after the run began ({started}): {late}"


@LINUX
def test_workers_a_run_cannot_adopt_are_ended_and_it_starts_its_own(tmp_path: Path) -> None:
    """--chunk-size 1000 needs gates bigger than a warm worker's: the run starts its own workers
    (after it began) and the warm ones end; the run is not held up by them."""
    marker = uuid.uuid4().hex
    done = _run(
        tmp_path, "--workers", "2", "--chunk-size", "1000", env={"WARM_TEST_MARK": marker}, call="calls.py:whoami_chunk"
    )
    assert done.returncode == 0, done.stderr
    started, rows = _results(tmp_path)
    assert all(row["born"] >= started - 0.015 for row in rows)  # a clock tick: 10 ms
    # The warm ones were gone before any item ran (not left waiting the whole run).
    assert all(b >= started - 0.015 for row in rows for b in row["workers_born"]), rows
    assert _carriers(marker) == []


def _carriers(marker: str, within: float = 5.0) -> list[int]:
    """Pids of live processes whose environment holds WARM_TEST_MARK=marker (after ``within``
    seconds of waiting for them to go)."""
    deadline = time.monotonic() + within
    while True:
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get("WARM_TEST_MARK") == marker and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
            except psutil.Error:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--call", "calls.py:nothing_here"], id="preflight-refuses"),
        pytest.param(["--call", "calls.py:whoami", "--max-failure-rate", "2"], id="bad-setting"),
        pytest.param(["--call", "calls.py:whoami", "--glob", "*.txt"], id="bad-option-use"),
    ],
)
def test_a_refused_run_leaves_no_worker_behind_and_prints_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "calls.py").write_text(CALLS)
    (tmp_path / "items.txt").write_text("a\nb\n")
    marker = uuid.uuid4().hex
    done = subprocess.run(
        [*CLI, "run", "items.txt", *args, "--headless"],
        cwd=tmp_path,
        env=cli_env(tmp_path / "out", {"WARM_TEST_MARK": marker}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert _carriers(marker) == []


START_AND_INTERRUPT = textwrap.dedent(
    """
    import os, signal, sys
    from batchtui.engine import warmstart
    from batchtui.engine.attempts import Classifier
    from batchtui.engine.poolworker import WorkerSettings, WorkerSpec

    if __name__ == "__main__":
        warmstart.start(2)
        procs = [p for p, _, _ in warmstart._warm]
        for p in procs:
            os.kill(p.pid, signal.SIGINT)  # a Ctrl-C while they start: their imports go on
        token = warmstart.claim_token()
        assert warmstart.claim_token() is None  # given once
        # One is adopted: it answers ready (it lived through the SIGINT), then leaves when told.
        proc, conn, _ = warmstart.take(8)
        conn.send((WorkerSpec("python", None, sys.argv[1], os.getcwd(), False), WorkerSettings(None, 1 << 20, 1 << 20, Classifier())))
        answer = conn.recv()[0] if conn.poll(60) else "silent"
        # (read once both have long been exec'd: during its exec a process's environ reads empty)
        carried = [open(f"/proc/{p.pid}/environ", "rb").read().split(b"\\0") for p in procs]
        conn.send(None)
        warmstart.discard()  # the other one
        for p in procs:
            p.join(10)
        print(answer, [p.exitcode for p in procs], [("BATCHTUI_RUN_TOKEN=" + token).encode() in env for env in carried])
        print(os.environ.get("BATCHTUI_RUN_TOKEN"))
    """
)


def _script(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``text`` run as a script of its own (its pipes and shared arrays are not this process's)."""
    script = tmp_path / "script.py"
    script.write_text(text)
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=cli_env(tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@LINUX
def test_warm_workers_ignore_a_ctrl_c_carry_the_token_and_end_when_discarded(tmp_path: Path) -> None:
    (tmp_path / "calls.py").write_text("def noop(item):\n    return None\n")
    done = _script(tmp_path, START_AND_INTERRUPT, f"{tmp_path}/calls.py:noop")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    lines = done.stdout.splitlines()
    # The adopted one was ready and left (0), the other was killed (-9); both carried the token.
    assert lines[0] == "ready [0, -9] [True, True]"
    assert lines[1] == "None"  # this process's own environment is as it was


A_THREAD_RUN_AFTER_A_WARM_START = textwrap.dedent(
    """
    import sys
    import orjson
    from batchtui.engine import warmstart
    from batchtui.engine.config import BatchConfig
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import python_spec
    from batchtui.engine.runner import BatchRunner
    from batchtui.engine.sources import build_spec

    if __name__ == "__main__":
        warmstart.start(2)  # a guess: the process executor
        procs = [p for p, _, _ in warmstart._warm]
        config = BatchConfig(output_dir=sys.argv[1], workers=2, executor="thread", fsync=False)
        batch = create_batch(config, build_spec([sys.argv[2]]), python_spec(sys.argv[3]))
        result = BatchRunner(batch, config=config, action="run").run()
        alive = [orjson.loads(line)["result"] for line in (batch.path / "results.jsonl").read_bytes().splitlines()]
        print(result.exit_code, alive, warmstart.count())
    """
)


def test_warm_workers_a_thread_run_does_not_want_are_ended_as_it_begins(tmp_path: Path) -> None:
    # The items run in the script's process (thread executor): each counts the pool workers
    # still alive there as it runs.
    (tmp_path / "calls.py").write_text(
        "import multiprocessing\n\n"
        "def noop(item):\n"
        "    return sum(p.name == 'batchtui-pool-worker' for p in multiprocessing.active_children())\n"
    )
    (tmp_path / "items.txt").write_text("a\nb\n")
    done = _script(
        tmp_path,
        A_THREAD_RUN_AFTER_A_WARM_START,
        str(tmp_path / "out"),
        str(tmp_path / "items.txt"),
        f"{tmp_path}/calls.py:noop",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "0 [0, 0] 0"
    assert "Traceback" not in done.stderr


LAUNCH_IN_A_THREAD_AND_INTERRUPT = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, threading
    from batchtui.engine import warmstart
    from batchtui.engine.attempts import Classifier
    from batchtui.engine.poolworker import WorkerSettings, WorkerSpec

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        got, done = [], threading.Event()

        def feeder():  # as the pool's feeder thread replaces a worker (and outlives it)
            got.append(warmstart.launch(ctx, 8, 2))
            done.wait()

        thread = threading.Thread(target=feeder)
        thread.start()
        while not got:
            pass
        proc, conn, _ = got[0]
        os.kill(proc.pid, signal.SIGINT)  # a Ctrl-C and a hang-up while it starts
        os.kill(proc.pid, signal.SIGHUP)
        conn.send((WorkerSpec("python", None, sys.argv[1], os.getcwd(), False), WorkerSettings(None, 1 << 20, 1 << 20, Classifier())))
        answer = conn.recv()[0] if conn.poll(60) else "silent"
        conn.send(None)
        proc.join(10)
        done.set()
        print(answer, proc.exitcode)
    """
)


@LINUX
def test_a_worker_the_pool_starts_lives_through_a_ctrl_c_and_a_hang_up_as_it_starts(tmp_path: Path) -> None:
    """Workers the pool starts itself (more than were started ahead, or one replaced) had the
    default SIGINT and SIGHUP while they imported: a Ctrl-C or a hang-up to the process group
    printed a KeyboardInterrupt traceback from each, or killed it."""
    (tmp_path / "calls.py").write_text("def noop(item):\n    return None\n")
    done = _script(tmp_path, LAUNCH_IN_A_THREAD_AND_INTERRUPT, f"{tmp_path}/calls.py:noop")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert done.stdout.splitlines() == ["ready 0"]
