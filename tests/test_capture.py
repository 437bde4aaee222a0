"""What a Python callable prints is kept as a shell item's output is (engine/capture.py): in its
item's logs, read by `batchtui logs`, and never on the terminal, where it ran through the
dashboard (seen in tmux: a worker's print landed in the middle of the progress bar) and the
headless progress lines.

Real runs through the CLI in a subprocess, on both executors: the run's own stdout and stderr
are what a terminal would show.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CLI, cli_env, only_batch, wait_until

NOISY = """
import logging, os, sys, warnings
print("IMPORT-TIME")  # before any item: the workers' log (process executor)

def noisy(item):
    print("out of", item.data, end=" ")
    sys.stdout.buffer.write(b"bytes\\n")  # as a real stdout takes them
    print("err of", item.data, file=sys.stderr)
    logging.getLogger("x").warning("logged %s", item.data)
    if item.data == "b":
        warnings.warn("careful with b")
        raise ValueError("b is bad")
    return item.data

def fd_level(item):
    os.write(1, b"FD1 " + item.data.encode() + b"\\n")
    return 1

def big(item):
    for i in range(2000):
        print(f"line {i:05d} " + "x" * 40)
    return 1
"""


def _run(
    tmp_path: Path, call: str, executor: str, lines: list[str], *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "mod.py").write_text(NOISY)
    (tmp_path / "items.txt").write_text("".join(f"{line}\n" for line in lines))
    out = tmp_path / "out"
    proc = subprocess.run(
        [*CLI, "run", "items.txt", "--call", f"mod.py:{call}", "--executor", executor, "-j", "2", "--headless", *extra],
        check=False,
        cwd=tmp_path,
        env=cli_env(out, env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, only_batch(out)


def _results(batch: Path) -> int:
    path = batch / "results.jsonl"
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _logs(batch: Path, seq: int, *flags: str) -> str:
    got = subprocess.run(
        [*CLI, "logs", str(batch), str(seq), *flags], check=False, capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stderr
    return got.stdout


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_what_a_callable_prints_goes_to_its_items_logs_and_never_to_the_terminal(tmp_path: Path, executor: str) -> None:
    proc, batch = _run(tmp_path, "noisy", executor, ["a", "b", "c"], "--backoff", "0", "--max-attempts", "1")
    assert proc.returncode == 1, proc.stderr  # b failed
    for word in ("out of", "err of", "logged", "careful"):
        assert word not in proc.stdout and word not in proc.stderr, (word, proc.stdout, proc.stderr)
    assert "BATCH SUMMARY" in proc.stdout and "Progress:" in proc.stderr  # the run's own lines are still there
    assert _logs(batch, 0) == "out of a bytes\n"
    assert _logs(batch, 2) == "out of c bytes\n"
    err_b = _logs(batch, 1, "--err")
    assert err_b.startswith("err of b\nlogged b\n"), err_b
    assert "UserWarning: careful with b" in err_b
    results = [json.loads(line) for line in (batch / "results.jsonl").read_text().splitlines()]
    assert sorted(r["result"] for r in results) == ["a", "c"]  # what is printed never becomes a result


def test_the_process_workers_descriptors_write_to_the_workers_logs(tmp_path: Path) -> None:
    proc, batch = _run(tmp_path, "fd_level", "process", ["a", "b"], "--json")
    assert proc.returncode == 0, proc.stderr
    # stdout is the JSON alone: the preflight's import printed to stderr, the workers to their log.
    assert json.loads(proc.stdout)["state"] == "finished"
    assert proc.stderr.count("IMPORT-TIME") == 1 and "FD1" not in proc.stderr
    workers = (batch / "workers.log").read_text()
    assert sorted(workers.split("\n")) == [
        "",
        "FD1 a",
        "FD1 b",
        "IMPORT-TIME",
        "IMPORT-TIME",
    ]  # two workers imported it
    assert (batch / "workers.log").stat().st_mode & 0o777 == 0o600
    assert not (batch / "logs").exists()  # nothing printed through sys.stdout: no item log


def test_an_items_printed_log_keeps_its_last_log_limit_bytes(tmp_path: Path) -> None:
    proc, batch = _run(tmp_path, "big", "process", ["a"], env={"BATCHTUI_LOG_LIMIT": "4096"})
    assert proc.returncode == 0, proc.stderr
    log = (batch / "logs" / "0.1.out").read_bytes()
    assert len(log) == 4096
    assert log.endswith(b"line 01999 " + b"x" * 40 + b"\n")


def test_the_engines_streams_are_given_back_after_a_thread_executor_run(tmp_path: Path) -> None:
    from batchtui.engine.config import load_config
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import python_spec
    from batchtui.engine.runner import BatchRunner
    from batchtui.engine.sources import build_spec

    before = (sys.stdout, sys.stderr)
    (tmp_path / "items.txt").write_text("a\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "executor": "thread"}, environ={})
    batch = create_batch(config, build_spec([str(tmp_path / "items.txt")]), python_spec("tests.procs:noop"))
    BatchRunner(batch, config=config).run()
    assert (sys.stdout, sys.stderr) == before


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_logging_handler_made_at_import_writes_to_the_items_log(tmp_path: Path, executor: str) -> None:
    # basicConfig at import: on the thread executor the preflight imported the module in the
    # engine's process, so its handler holds the stream the run then replaces.
    (tmp_path / "basic.py").write_text(
        "import logging\nlogging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "def f(item):\n    logging.info('info of %s', item.data)\n    return 1\n"
    )
    (tmp_path / "items.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [*CLI, "run", "items.txt", "--call", "basic.py:f", "--executor", executor, "--headless"],
        check=False,
        cwd=tmp_path,
        env=cli_env(out),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "info of" not in proc.stderr and "info of" not in proc.stdout
    batch = only_batch(out)
    assert _logs(batch, 1, "--err") == "INFO info of b\n"


def test_a_module_that_logs_at_info_does_not_get_batchtuis_own_watcher_lines(tmp_path: Path) -> None:
    # Seen over SSH in the dashboard: "INFO:watchfiles.main:1 change detected", once the
    # preflight had imported a module calling logging.basicConfig(level=logging.INFO).
    (tmp_path / "slow.py").write_text(
        "import logging, time\nlogging.basicConfig(level=logging.INFO)\n"
        "def f(item):\n    time.sleep(0.05)\n    return 1\n"
    )
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(100)))
    out = tmp_path / "out"
    env = cli_env(out)
    run = subprocess.Popen(
        [*CLI, "run", "items.txt", "--call", "slow.py:f", "-j", "1", "--headless"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Some items done: the engine's control watcher (it starts half a second in) is watching.
        wait_until(lambda: out.exists() and any(out.iterdir()) and _results(only_batch(out)) >= 15, 30)
        for verb in ("pause", "unpause"):  # control.jsonl changes: what the engine's watcher sees
            got = subprocess.run(
                [*CLI, verb, only_batch(out).name, "--wait", "30"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert got.returncode == 0, got.stderr
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert "watchfiles" not in err and "change detected" not in err, err


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """A fake terminal as the process's own stderr (and sys.stderr), and a logger whose one
    handler writes to it, as ``logging.basicConfig()`` run at a module's import leaves them."""
    screen = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    logger = logging.getLogger("test_capture.user")
    handler = logging.StreamHandler(screen)
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "propagate", False)
    yield screen, logger
    logger.removeHandler(handler)


def test_a_handler_on_the_real_stderr_is_moved_off_the_terminal_under_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal: tuple[io.StringIO, logging.Logger]
) -> None:
    """In the dashboard's process sys.stderr is the app's capture, while a handler made at the
    preflight's import holds the process's own stderr: the terminal. Seen in tmux, on the thread
    executor: "INFO:root:step 43" printed across the progress bar."""
    from batchtui.engine import capture
    from batchtui.engine.shell.item import Item

    screen, logger = terminal
    app_capture = io.StringIO()
    monkeypatch.setattr(sys, "stderr", app_capture)
    capture.install(1 << 20)
    try:
        logger.warning("from the engine's own thread")
        capture.begin(Item(seq=4, key="k", data="d", attempt=1, batch_dir=str(tmp_path)))
        logger.warning("from item 4")
        capture.end()
    finally:
        capture.uninstall()
    assert screen.getvalue() == ""
    assert app_capture.getvalue() == "from the engine's own thread\n"
    assert (tmp_path / "logs" / "4.1.err").read_text() == "from item 4\n"
    assert logger.handlers[0].stream is screen and sys.stderr is app_capture  # type: ignore[attr-defined]


def test_while_the_dashboard_runs_a_handler_on_the_terminal_writes_to_its_capture(
    monkeypatch: pytest.MonkeyPatch, terminal: tuple[io.StringIO, logging.Logger]
) -> None:
    from batchtui.engine.capture import terminal_held

    screen, logger = terminal
    app_capture = io.StringIO()
    with terminal_held():
        monkeypatch.setattr(sys, "stderr", app_capture)  # what the app does once it runs
        logger.warning("while the app runs")
        monkeypatch.setattr(sys, "stderr", screen)  # the app has ended
        logger.warning("as it ends")
    logger.warning("after")
    assert app_capture.getvalue() == "while the app runs\n"
    assert screen.getvalue() == "as it ends\nafter\n"
    assert logger.handlers[0].stream is screen  # type: ignore[attr-defined]


def test_a_link_planted_as_workers_log_is_refused_and_not_written_through(tmp_path: Path) -> None:
    from batchtui.engine.config import load_config
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import python_spec
    from batchtui.engine.sources import build_spec

    (tmp_path / "mod.py").write_text(NOISY)
    (tmp_path / "items.txt").write_text("a\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "executor": "process"}, environ={})
    batch = create_batch(config, build_spec([str(tmp_path / "items.txt")]), python_spec(f"{tmp_path}/mod.py:fd_level"))
    outside = tmp_path / "outside.txt"
    outside.write_text("mine\n")
    (batch.path / "workers.log").symlink_to(outside)
    done = subprocess.run(
        [*CLI, "resume", str(batch.path), "--headless"],
        check=False,
        cwd=tmp_path,
        env=cli_env(tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "refusing to use batch" in done.stderr and "workers.log" in done.stderr
    assert outside.read_text() == "mine\n"
