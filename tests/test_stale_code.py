"""An edited --call file is never run stale (issue 15, point 13a).

A long-lived process (the TUI running a second batch, a dask worker serving a second engine)
had the first version of a ``--call`` module cached by its path: every result of the next run
came from the old code. load_callable now keys what it imported by the source's hash; a dask
worker checks that the code it loads is the code the engine read, and a worker holding another
copy is named and the run refused.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchtui.engine.config import BatchConfig
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import StaleCode, code_digest, load_callable, python_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

from .conftest import CLI, cli_env, read_jsonl
from .test_dask import needs_dask


def _version(n: int) -> str:
    # Every version has the same size: an mtime-and-size check (a .pyc's) cannot tell them apart.
    return f"def f(item):\n    return {{'version': {n}, 'seq': item.seq}}\n"


def _items(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"item-{i}\n" for i in range(n)))
    return path


def _versions(batch: Path) -> set[object]:
    return {r["result"]["version"] for r in read_jsonl(batch / "results.jsonl")}  # type: ignore[index]


def _run_in_process(tmp_path: Path, call: str, n: int = 6) -> Path:
    """One batch run by the engine in this process, as the TUI runs one in its worker thread."""
    config = BatchConfig(output_dir=str(tmp_path / "out"), fsync=False, executor="thread", workers=2)
    batch = create_batch(config, build_spec([str(_items(tmp_path, n))]), python_spec(call))
    result = BatchRunner(batch).run()
    assert result.exit_code == 0, result
    return batch.path


def test_a_second_run_in_the_same_process_runs_the_edited_file(tmp_path: Path) -> None:
    code = tmp_path / "v.py"
    code.write_text(_version(1))
    first = _run_in_process(tmp_path, f"{code}:f")
    code.write_text(_version(2))  # same size, same second
    second = _run_in_process(tmp_path, f"{code}:f")
    assert _versions(first) == {1}
    assert _versions(second) == {2}


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of a name no other test uses, importable from tmp_path (the batch's cwd)."""
    name = f"stale_mod_{os.getpid()}_{tmp_path.name.replace('-', '_')}"
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_a_module_call_is_run_again_when_its_source_changed(tmp_path: Path, module_dir: str) -> None:
    source = tmp_path / f"{module_dir}.py"
    source.write_text(_version(1))
    first = _run_in_process(tmp_path, f"{module_dir}:f")
    source.write_text(_version(2))
    second = _run_in_process(tmp_path, f"{module_dir}:f")
    assert _versions(first) == {1}
    assert _versions(second) == {2}


def test_load_callable_refuses_code_other_than_the_engines(tmp_path: Path) -> None:
    code = tmp_path / "w.py"
    code.write_text(_version(1))
    call = f"{code}:f"
    engine_saw = code_digest(call)
    assert load_callable(call, code=engine_saw)(type("I", (), {"seq": 4})()) == {"version": 1, "seq": 4}
    code.write_text(_version(3))  # edited after the engine read it
    with pytest.raises(StaleCode, match=r"not the code this run started with \(sha256 [0-9a-f]{12} here"):
        load_callable(call, code=engine_saw)


def test_a_module_that_failed_to_import_is_not_handed_out_later(tmp_path: Path) -> None:
    code = tmp_path / "broken.py"
    code.write_text("def f(item):\n    return 1\nraise RuntimeError('half way')\n")
    for _ in range(2):  # the second try imports it again (it used to return the half-run module)
        with pytest.raises(Exception, match="half way"):
            load_callable(f"{code}:f")


# -- a long-lived dask cluster ----------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[str]:
    from distributed import LocalCluster

    local = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None)
    try:
        yield str(local.scheduler_address)
    finally:
        local.close()


@needs_dask
def test_an_existing_cluster_runs_the_edited_file(tmp_path: Path, cluster: str) -> None:
    code = tmp_path / "v.py"
    code.write_text(_version(1))
    items = _items(tmp_path, 20)
    batches = []
    for version in (1, 2):
        code.write_text(_version(version))
        out = tmp_path / f"out{version}"
        proc = subprocess.run(
            [*CLI, "run", str(items), "--call", f"{code}:f", "--executor", "dask", "--headless"],
            env=cli_env(out, {"BATCHTUI_SCHEDULER": cluster}),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (batch,) = out.iterdir()
        batches.append(batch)
    assert _versions(batches[0]) == {1}
    assert _versions(batches[1]) == {2}  # the worker that ran version 1 re-imported the file


@needs_dask
def test_a_worker_with_another_copy_is_named_and_the_run_refused(tmp_path: Path, cluster: str) -> None:
    from batchtui.engine.dask_cluster import DaskWorkerError
    from batchtui.engine.dask_executor import DaskExecutor

    code = tmp_path / "v.py"
    code.write_text(_version(1))
    spec = python_spec(f"{code}:f")
    config = BatchConfig(output_dir=str(tmp_path / "out"), executor="dask", scheduler=cluster)
    executor = DaskExecutor(spec, config, queue.SimpleQueue())
    assert executor.task.code == code_digest(f"{code}:f")
    # As if the engine's copy differed from the one on the worker's machine.
    executor.task = dataclasses.replace(executor.task, code="0" * 64)
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        workers = sorted(client.scheduler_info()["workers"])
    with pytest.raises(DaskWorkerError) as refused:
        executor.start()
    message = str(refused.value)
    assert f"1 dask worker has another {code} than this engine (sha256 000000000000 here)" in message, message
    assert all(address in message for address in workers), (workers, message)
