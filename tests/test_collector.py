"""The garbage collector while the ``batchtui`` process starts (tui/cli/collector.py): off during
the imports, then back on with what they made frozen, before any work of the verb runs.

Real processes, each told apart by what a ``--call`` function of the thread executor (user code
in the engine's own process) sees of the collector, and by what the group saw as it imported
the verb's module.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from batchtui.tui.cli import main

from .conftest import cli_env, only_batch, read_jsonl

#: The user's function: what the collector looks like while the engine runs items.
PROBE = """
import gc

def probe(item):
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
"""

#: Runs in the child before the entry point: notes whether the collector was on while the group
#: imported the verb's module (the bulk of the start). ``HOST`` may put its own policy first.
WRAP = """
import gc, json, sys
from pathlib import Path
note = Path(sys.argv.pop(1))
HOST
from batchtui.tui.cli import group
real = group.Main.get_command
def get_command(self, ctx, name):
    seen.append(gc.isenabled())
    return real(self, ctx, name)
seen = []
group.Main.get_command = get_command
import atexit
atexit.register(lambda: note.write_text(json.dumps({"verb": seen, "exit": gc.isenabled()})))
from batchtui.tui.cli.entry import run
sys.argv[0] = "batchtui"
run()
"""


def _run(tmp_path: Path, host: str = "") -> tuple[list[bool], list[dict[str, object]]]:
    (tmp_path / "probe.py").write_text(PROBE)
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(5)))
    seen = tmp_path / "seen.json"
    out = tmp_path / "out"
    args = ["run", str(items), "--call", "probe.py:probe", "--executor", "thread", "--headless"]
    done = subprocess.run(
        [sys.executable, "-c", WRAP.replace("HOST", host), str(seen), *args],
        capture_output=True,
        text=True,
        env=cli_env(out),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = read_jsonl(only_batch(out) / "results.jsonl")
    return json.loads(seen.read_text())["verb"], [r["result"] for r in results]  # type: ignore[misc]


def test_off_while_the_verb_is_imported_on_with_the_start_frozen_once_work_runs(tmp_path: Path) -> None:
    seen, results = _run(tmp_path)
    assert seen and not any(seen), "the collector ran while the verb's module was imported"
    assert len(results) == 5
    for result in results:
        assert result["enabled"] is True  # the user's code never runs with it off
        # What the start made (click, pydantic, the engine's modules: some 4*10^4 objects).
        assert isinstance(result["frozen"], int) and result["frozen"] > 10_000


def test_a_host_that_turned_the_collector_off_keeps_it_off(tmp_path: Path) -> None:
    seen, results = _run(tmp_path, host="gc.disable()")
    assert seen and not any(seen)
    assert [r["enabled"] for r in results] == [False] * 5  # not turned on behind its back
    assert {r["frozen"] for r in results} == {0}  # and nothing of it frozen


def test_without_a_verb_the_collector_is_back_too(tmp_path: Path) -> None:
    """`batchtui` alone starts the batch browser (a long-lived app) on a terminal, `ls`
    elsewhere: no verb's module is imported, and the collector comes back all the same."""
    note = tmp_path / "seen.json"
    done = subprocess.run(
        [sys.executable, "-c", WRAP.replace("HOST", ""), str(note)],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path / "out"),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no batches" in (done.stdout + done.stderr).lower()  # ls ran
    assert json.loads(note.read_text())["exit"] is True


def test_the_group_called_in_process_leaves_the_collector_alone(tmp_path: Path) -> None:
    """Tests and scripts call the click group itself: it neither freezes their objects nor
    turns the collector off or on."""
    before = gc.get_freeze_count()
    done = CliRunner().invoke(main, ["-o", str(tmp_path / "none"), "ls"], env=cli_env(tmp_path / "none"))
    assert done.exit_code == 0, done.output
    assert gc.isenabled()
    # Frozen objects freed since leave the count; a freeze would add every object made since.
    assert gc.get_freeze_count() <= before
