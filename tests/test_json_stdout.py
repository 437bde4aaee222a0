"""With ``--json``, stdout is the JSON and nothing else (tui/cli/output.py json_stdout), whatever
user code writes to descriptor 1 below Python: a ``--call`` module's ``os.write(1, ...)`` at
import (the preflight imports it in the CLI's process) or per item on the thread executor, a
child process that inherits the descriptor. Those bytes came before the JSON and broke
``batchtui run ... --json | jq``; they go to stderr now.

Real CLI processes, their stdout a pipe as a script's would be.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import CLI, cli_env, only_batch

LOUD = """
import os, subprocess
os.write(1, b"IMPORT-NOISE\\n")

def run(item):
    os.write(1, b"ITEM-NOISE " + item.data.encode() + b"\\n")
    subprocess.run(["sh", "-c", "echo CHILD-NOISE"], check=True)  # inherits descriptor 1
    return item.data
"""


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "loud.py").write_text(LOUD)
    (tmp_path / "items.txt").write_text("a\nb\nc\n")
    return subprocess.run(
        [*CLI, *args],
        check=False,
        cwd=tmp_path,
        env=cli_env(tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_run_json_stdout_is_only_the_json_whatever_user_code_writes_to_descriptor_1(
    tmp_path: Path, executor: str
) -> None:
    proc = _cli(tmp_path, "run", "items.txt", "--call", "loud.py:run", "--executor", executor, "-j", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # the whole of stdout parses: nothing before or after it
    assert data["state"] == "finished" and data["totals"]["complete"] == 3
    assert "NOISE" not in proc.stdout
    assert "IMPORT-NOISE" in proc.stderr  # the preflight's import, in this process: shown, on stderr
    if executor == "thread":  # the items ran in this process too: their descriptor-1 output is on stderr
        assert proc.stderr.count("ITEM-NOISE") == 3 and proc.stderr.count("CHILD-NOISE") == 3, proc.stderr
    else:  # the workers' descriptors write to workers.log (engine/capture.py)
        log = (only_batch(tmp_path / "out") / "workers.log").read_text()
        assert log.count("ITEM-NOISE") == 3 and log.count("CHILD-NOISE") == 3, log


def test_check_json_stdout_is_only_the_json_when_the_module_writes_at_import(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "check", "items.txt", "--call", "loud.py:run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["recommendation"] == "PROCEED"
    assert "IMPORT-NOISE" in proc.stderr


def test_resume_json_stdout_is_only_the_json(tmp_path: Path) -> None:
    """A resume imports the module again (its preflight) and runs the items: a batch made and
    never run, resumed on the thread executor."""
    from batchtui.engine.config import load_config
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import python_spec
    from batchtui.engine.sources import build_spec

    (tmp_path / "loud.py").write_text(LOUD)
    (tmp_path / "items.txt").write_text("a\nb\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "executor": "thread"}, environ={})
    batch = create_batch(config, build_spec([str(tmp_path / "items.txt")]), python_spec(f"{tmp_path}/loud.py:run"))
    proc = _cli(tmp_path, "resume", str(batch.path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["complete"] == 2
    assert "IMPORT-NOISE" in proc.stderr and proc.stderr.count("ITEM-NOISE") == 2


def test_a_json_verb_in_process_still_writes_its_json_to_the_callers_stdout(tmp_path: Path) -> None:
    """Called in another program (click's CliRunner: a stdout with no descriptor), the JSON goes
    to the stdout it was given, and descriptor 1 is the same one after the verb."""
    import os

    from click.testing import CliRunner

    from batchtui.tui.cli import main

    (tmp_path / "loud.py").write_text(LOUD)
    (tmp_path / "items.txt").write_text("a\n")
    before = os.fstat(1)
    result = CliRunner().invoke(
        main, ["check", str(tmp_path / "items.txt"), "--call", f"{tmp_path}/loud.py:run", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recommendation"] == "PROCEED"
    after = os.fstat(1)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
