"""A ``--call`` that cannot work is refused before the batch is made, with what to fix: a
module that exits as it is imported, and an async function; and a resume refused so changes
nothing."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.callables import load_callable
from batchtui.engine.errors import UserError

from .conftest import only_batch


def _module(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.py"
    path.write_text(text)
    return path


#: The module as it is since the first run: it exits as it is imported.
BROKEN = "import sys\ndef f(item):\n    return 1\nsys.exit(4)\n"


def _rows(batch: Path, columns: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(batch / "items.db")) as db:
        return db.execute(f"SELECT {columns} FROM items ORDER BY seq").fetchall()


def _source(tmp_path: Path) -> Path:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    return items


@pytest.mark.parametrize("exit_line", ["sys.exit(4)", "raise SystemExit('bye')", "sys.exit()"])
def test_a_module_that_exits_as_it_is_imported_is_a_user_error(tmp_path: Path, exit_line: str) -> None:
    # A script's `sys.exit(main())` at module level: it rose through the preflight and ended
    # batchtui with the script's status and no word.
    module = _module(tmp_path, f"import sys\ndef f(item):\n    return 1\n{exit_line}\n")
    with pytest.raises(UserError, match=r"exited as it was imported \(SystemExit: .*__name__ == "):
        load_callable(f"{module}:f")


def test_run_refuses_a_module_that_exits_as_it_is_imported(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    module = _module(tmp_path, "import sys\ndef f(item):\n    return 1\nsys.exit(4)\n")
    out = tmp_path / "out"
    proc = invoke_cli(["run", str(_source(tmp_path)), "--call", f"{module}:f", "--headless", "-o", str(out)])
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "exited as it was imported (SystemExit: 4)" in proc.stderr
    assert "FIX_ISSUES" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or not any(p.is_dir() for p in out.iterdir())  # no batch was made


@pytest.mark.parametrize(
    "body",
    ["async def f(item):\n    return 1\n", "async def f(items):\n    yield 1\n"],
    ids=["coroutine", "async-generator"],
)
@pytest.mark.parametrize("chunked", [False, True])
def test_run_refuses_an_async_function(tmp_path: Path, invoke_cli, body: str, chunked: bool) -> None:  # type: ignore[no-untyped-def]
    # Called as it is, an async def returns a coroutine that never runs: every item failed with
    # "Type is not JSON serializable: coroutine".
    module = _module(tmp_path, body)
    out = tmp_path / "out"
    args = ["run", str(_source(tmp_path)), "--call", f"{module}:f", "--headless", "-o", str(out)]
    proc = invoke_cli([*args, "--chunk-size", "2"] if chunked else args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert f"{module}:f is an async function" in proc.stderr
    assert "asyncio.run(f(item))" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or not any(p.is_dir() for p in out.iterdir())


def test_a_refused_resume_retry_failed_leaves_the_failed_items_failed(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    module = _module(tmp_path, "def f(item):\n    raise ValueError('bad ' + item.data)\n")
    out = tmp_path / "out"
    first = invoke_cli(["run", str(_source(tmp_path)), "--call", f"{module}:f", "--headless", "-o", str(out)])
    assert first.returncode == 1, (first.stdout, first.stderr)
    batch = only_batch(out)
    module.write_text(BROKEN)
    proc = invoke_cli(["resume", batch.name, "--retry-failed", "--headless", "-o", str(out)])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "exited as it was imported" in proc.stderr and "requeued" not in proc.stderr
    assert _rows(batch, "status, error_type, error_message") == [
        ("failed", "ValueError", "bad a"),
        ("failed", "ValueError", "bad b"),
    ]


def test_a_refused_resume_rescan_adds_nothing_to_the_batch(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """The rescan read the source before the preflight: the new keys were pending after a
    command that did not run, and ran at the next resume of any kind."""
    module = _module(tmp_path, "def f(item):\n    return item.data\n")
    source = _source(tmp_path)
    out = tmp_path / "out"
    first = invoke_cli(["run", str(source), "--call", f"{module}:f", "--headless", "-o", str(out)])
    assert first.returncode == 0, (first.stdout, first.stderr)
    batch = only_batch(out)
    source.write_text("a\nb\nc\n")  # a new key
    module.write_text(BROKEN)
    proc = invoke_cli(["resume", batch.name, "--rescan", "--headless", "-o", str(out)])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "exited as it was imported" in proc.stderr and "rescan:" not in proc.stderr
    assert _rows(batch, "key, status") == [("a", "complete"), ("b", "complete")]

    module.write_text("def f(item):\n    return item.data\n")  # fixed: the rescan runs the new key
    again = invoke_cli(["resume", batch.name, "--rescan", "--headless", "-o", str(out)])
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "rescan: 1 new, 0 missing" in again.stderr
    assert _rows(batch, "key, status") == [("a", "complete"), ("b", "complete"), ("c", "complete")]
