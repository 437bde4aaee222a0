"""The process executor's start (issue 22.3): its worker processes start while the engine opens
the batch (the store, the files), not after, so their start-up overlaps that work; a run that
ends before they are put to work leaves none behind."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from batchtui.engine import takeover
from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

from .conftest import invoke_in_process
from .test_control_holds import PROCS, lines_file, rows


def _workers() -> list[str]:
    return [p.name for p in multiprocessing.active_children() if p.name == "batchtui-pool-worker" and p.is_alive()]


def _batch(tmp_path: Path) -> Any:
    config = BatchConfig(output_dir=str(tmp_path / "out"), workers=2, executor="process", max_attempts=1, fsync=False)
    return create_batch(config, build_spec([str(lines_file(tmp_path, 4))]), python_spec(f"{PROCS}:noop"))


def test_pool_workers_are_started_before_the_store_is_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _batch(tmp_path)
    real_open = takeover.ItemStore.open
    seen: list[list[str]] = []

    def spy(path: Path, *, durable: bool = True) -> Any:
        seen.append(_workers())
        return real_open(path, durable=durable)

    monkeypatch.setattr(takeover.ItemStore, "open", spy)
    result = BatchRunner(batch).run()
    assert seen == [["batchtui-pool-worker", "batchtui-pool-worker"]]
    assert result.counts.complete == 4
    assert rows(batch.path, "SELECT COUNT(*) FROM items WHERE status = 'complete'") == [(4,)]
    assert _workers() == []


def test_workers_started_ahead_are_stopped_when_the_run_fails_to_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _batch(tmp_path)

    def broken(path: Path, *, durable: bool = True) -> Any:
        raise OSError("the disk went away")

    monkeypatch.setattr(takeover.ItemStore, "open", broken)
    with pytest.raises(OSError, match="the disk went away"):
        BatchRunner(batch).run()
    assert _workers() == []


def test_a_callable_that_fails_to_import_in_the_workers_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """The preflight imports the callable in the engine's process, where it works; the worker
    processes import it again, and there it fails: one ``error:`` line with the worker's own
    message and the way out, exit 2, the batch left resumable, no worker left behind."""
    calls = tmp_path / "calls.py"
    calls.write_text(
        "import multiprocessing\n"
        "if multiprocessing.current_process().name != 'MainProcess':\n"
        "    raise RuntimeError('no licence server from the workers')\n"
        "def f(item):\n"
        "    return 1\n"
    )
    items = tmp_path / "in.txt"
    items.write_text("a\nb\n")
    result = invoke_in_process(
        ["run", str(items), "--call", f"{calls}:f", "--executor", "process", "--workers", "2", "--headless"],
        out=tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: worker start failed: UserError: cannot import "
        + f"{calls}: RuntimeError: no licence server from the workers"
    ]
    assert "then resume the batch" in result.stderr
    assert _workers() == []


def test_a_worker_started_from_the_console_script_does_not_run_the_cli_again(tmp_path: Path) -> None:
    """multiprocessing's spawn runs the parent's main module again in each worker, unless it is
    a package's ``__main__``: pip's console script was, so each worker imported the CLI (click
    and all, 30-50 ms of CPU) before its first item. The wrapper below is pip's, word for word."""
    import json
    import subprocess
    import sys

    wrapper = tmp_path / "batchtui"
    wrapper.write_text(
        "# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom batchtui.tui.cli.entry import run\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(run())\n"
    )
    (tmp_path / "probe.py").write_text(
        "import sys\ndef f(item):\n    return sorted(m for m in ('click', 'batchtui.tui.cli.entry') if m in sys.modules)\n"
    )
    (tmp_path / "items.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    args = ["run", "items.txt", "--call", "probe.py:f", "--executor", "process", "-j", "2", "--headless"]
    done = subprocess.run(
        [sys.executable, str(wrapper), *args, "-o", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (batch,) = out.iterdir()
    results = [json.loads(line)["result"] for line in (batch / "results.jsonl").read_text().splitlines()]
    assert results == [[], []]


def test_a_worker_that_cannot_open_workers_log_says_so_not_that_an_import_failed(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from batchtui.engine.pool import PoolWorkerLogError, ProcessExecutor

    (tmp_path / "workers.log").mkdir()  # a folder where the file would be: the open fails
    # A worker started as the pool starts one, in a process of its own (its pipes and shared
    # arrays must not outlive this test in the suite's process: other tests count descriptors).
    script = (
        "import json, multiprocessing, sys\n"
        "from batchtui.engine.attempts import Classifier\n"
        "from batchtui.engine.handoff import SharedGate\n"
        "from batchtui.engine.poolworker import WorkerSettings, WorkerSpec, child_main\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    parent, child = ctx.Pipe()\n"
        "    gate = SharedGate(ctx.RawArray('b', 8), ctx.RawArray('d', 8), ctx.RawValue('i', -1), ctx.Lock())\n"
        "    spec = WorkerSpec('python', None, 'tests.procs:noop', sys.argv[2], False)\n"
        "    settings = WorkerSettings(None, 1 << 20, 1 << 20, Classifier(), batch_dir=sys.argv[1])\n"
        "    proc = ctx.Process(target=child_main, args=(child, [gate.parts]), daemon=True)\n"
        "    proc.start()\n"
        "    parent.send((spec, settings))\n"
        "    print(json.dumps(parent.recv() if parent.poll(60) else None))\n"
        "    proc.join(10)\n"
    )
    (tmp_path / "start_one.py").write_text(script)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "start_one.py"), str(tmp_path), str(Path.cwd())],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    kind, detail = json.loads(done.stdout)
    assert kind == "log_error" and detail.startswith("cannot open workers.log: ")
    # What the engine makes of that answer (its _ready needs only the slot's pipe and process).
    joined = SimpleNamespace(join=lambda timeout: None)
    slot = SimpleNamespace(conn=SimpleNamespace(recv=lambda: (kind, detail)), proc=joined)
    with pytest.raises(PoolWorkerLogError, match=r"cannot open workers\.log") as err:
        ProcessExecutor._ready(None, slot)  # type: ignore[arg-type]
    assert "workers.log in the batch folder" in err.value.describe()
