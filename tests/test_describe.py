"""How an item ran (engine/shell/describe.py) against what really ran, and the error detail a
failure keeps: a command's stderr (never the engine's traceback), a callable's own frames."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.attempts import Classifier, run_items
from batchtui.engine.batchdir import BatchDir
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import CallableProcessor, ProcessorSpec, shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.shell.describe import describe_run
from batchtui.engine.shell.item import Item
from batchtui.engine.shell.processor import ShellProcessor
from batchtui.engine.sources import build_spec
from batchtui.engine.store.queries import ItemQueries

ENGINE = "batchtui/engine" if "site-packages" in __file__ else os.sep + "engine" + os.sep


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc/<pid>/cmdline")
def test_the_described_command_and_variables_are_what_the_processor_ran(tmp_path: Path) -> None:
    records = tmp_path / "items.jsonl"
    odd = [
        {"id": "a", "name": "it's a file; rm -rf ~", "n": 1},
        {"id": "b", "name": '$(touch pwned) `x` "q"', "n": 2},
        {"id": "c", "name": "ünïcode\ttab", "n": 3},
    ]
    records.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in odd))
    # The shell writes its own argument list and environment to the item's {out} folder.
    cmd = "tr '\\0' '\\n' < /proc/$$/cmdline > {out}/argv; env -0 > {out}/env; : {} {name} \"{n}\" {key}"
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2}, environ={})
    batch = create_batch(config, build_spec([str(records)], key_field="id"), shell_spec(cmd))
    BatchRunner(batch, config=config).run()
    spec = ProcessorSpec.model_validate(BatchDir(batch.path).read_manifest().processor)
    with ItemQueries(batch.path / "items.db") as store:
        rows = [store.item(seq) for seq in range(len(odd))]
    for detail in rows:
        assert detail is not None and detail.row.status == "complete", detail
        row = detail.row
        ran = describe_run(
            spec,
            seq=row.seq,
            key=row.key,
            data=row.data,
            kind=row.kind,
            attempt=row.attempts,
            batch_dir=str(batch.path),
        )
        out = batch.path / "out" / str(row.seq)
        argv = (out / "argv").read_bytes().decode().split("\n")[:-1]
        # The command line may hold newlines of its own: the shell's three arguments, rejoined.
        assert (argv[0], argv[1], "\n".join(argv[2:])) == ran.argv
        assert ran.command == ran.argv[2] and ran.cwd == spec.cwd
        env = dict(entry.split("=", 1) for entry in (out / "env").read_bytes().decode().split("\0") if entry)
        added = {
            name: value
            for name, value in env.items()
            if name.startswith("BATCHTUI_ITEM") or name in ("BATCHTUI_SEQ", "BATCHTUI_ATTEMPT", "BATCHTUI_BATCH_DIR")
        }
        assert dict(ran.env) == added
        assert [name for name, _ in ran.env] == [
            "BATCHTUI_ITEM_JSON",
            "BATCHTUI_SEQ",
            "BATCHTUI_ATTEMPT",
            "BATCHTUI_BATCH_DIR",
            "BATCHTUI_ITEM_JSON_FILE",
        ]


def test_a_missing_field_is_described_as_why_nothing_ran(tmp_path: Path) -> None:
    spec = ProcessorSpec(kind="shell", command="echo {nope}", cwd=str(tmp_path))
    ran = describe_run(spec, seq=0, key="k", data={"x": 1}, kind="jsonl", attempt=1, batch_dir=str(tmp_path))
    assert ran.command is None and ran.problem == "item has no field 'nope'"
    assert "not run: item has no field 'nope'" in ran.as_text()


#: Values a shown command must paste as: a control character, a tab, a newline, ESC, an
#: undecodable byte of a file name (a surrogate escape), shell syntax and both quotes.
HOSTILE_NAMES = [
    "a\x01b",
    "tab\there",
    "two\nlines",
    "esc\x1b[31mred",
    "byte-\udcff-name",
    '$(touch pwned) `touch pwned2` it\'s "q"',
    "plain",
]


@pytest.mark.skipif(shutil.which("bash") is None, reason="pastes into bash ($'...' quotes)")
@pytest.mark.parametrize(
    "template",
    [
        "printf '[%s]\\n' {name} \"{name}\" '{name}' pre{name}post",
        "printf '[%s]\\n' {name}\nprintf '(%s)\\n' {name}",  # a script of two lines
    ],
    ids=["one line", "two lines"],
)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_shown_command_pastes_into_a_shell_as_what_ran(tmp_path: Path, template: str, name: str) -> None:
    """The detail's ``command:`` line is one line of printable characters (nothing reaches the
    terminal raw) and, pasted into a shell (bash), runs what the engine ran (``/bin/sh -c``)."""
    spec = ProcessorSpec(kind="shell", command=template, cwd=str(tmp_path))
    ran = describe_run(spec, seq=0, key="k", data={"name": name}, kind="jsonl", attempt=1, batch_dir=str(tmp_path))
    assert ran.command is not None and ran.line is not None
    assert ran.line.isprintable()
    shown = ran.as_text().splitlines()[0]
    assert shown == f"command: {ran.line}" and shown.isprintable()
    env = {**os.environ, "LC_ALL": "C"}
    engine = subprocess.run(["/bin/sh", "-c", ran.command], cwd=tmp_path, capture_output=True, env=env, check=True)
    pasted = subprocess.run(["bash", "-c", ran.line], cwd=tmp_path, capture_output=True, env=env, check=True)
    assert pasted.stdout == engine.stdout and os.fsencode(name) in engine.stdout
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_the_shown_variables_paste_as_their_values(tmp_path: Path) -> None:
    spec = ProcessorSpec(kind="shell", command="true {}", cwd=str(tmp_path))
    data = "$(touch pwned)\x1b[2J 'x'"
    ran = describe_run(spec, seq=0, key=data, data=data, kind="lines", attempt=1, batch_dir=str(tmp_path))
    shown = [line for line in ran.as_text().splitlines() if line.startswith("BATCHTUI_")]
    assert all(line.isprintable() for line in shown)
    script = "\n".join([*shown, 'printf %s "$BATCHTUI_ITEM_JSON"'])
    pasted = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, check=True)
    assert pasted.stdout.decode() == dict(ran.env)["BATCHTUI_ITEM_JSON"]
    assert not (tmp_path / "pwned").exists()


def test_a_python_item_is_described_by_its_callable(tmp_path: Path) -> None:
    spec = ProcessorSpec(kind="python", call="pkg.mod:work", cwd=str(tmp_path))
    ran = describe_run(spec, seq=0, key="k", data="x", kind="lines", attempt=1, batch_dir=str(tmp_path))
    assert (ran.call, ran.command, ran.env) == ("pkg.mod:work", None, ())
    assert ran.as_text().splitlines()[0] == "callable: pkg.mod:work"


def _shell_failure(batch: Path, cmd: str, timeout: float | None = None) -> Any:
    proc = ShellProcessor(cmd, timeout=timeout)
    (outcome,) = run_items(proc, [Item(0, "k", "v", 1, str(batch))], Classifier(), chunked=False)
    assert outcome.error is not None
    return outcome.error


@pytest.mark.parametrize(
    ("cmd", "timeout", "error_type", "detail"),
    [
        ("echo 'disk on fire' >&2; exit 4", None, "exit 4", "disk on fire\n"),
        ("echo 'still going' >&2; sleep 30", 0.3, "timeout", "still going\n"),
        ("sleep 30", 0.3, "timeout", ""),  # no stderr: nothing, not batchtui's ItemTimeout traceback
        ("kill -TERM $$", None, "signal 15", ""),
    ],
)
def test_a_command_failure_keeps_its_stderr_never_the_engines_traceback(
    batch: Path, cmd: str, timeout: float | None, error_type: str, detail: str
) -> None:
    error = _shell_failure(batch, cmd, timeout)
    assert (error.error_type, error.detail) == (error_type, detail)


def test_a_callable_failure_shows_its_own_frames_not_the_engines(tmp_path: Path) -> None:
    module = tmp_path / "user_code.py"
    module.write_text(
        "def work(item):\n    return helper(item.data)\n\n\ndef helper(value):\n"
        "    raise ValueError(f'cannot parse {value!r}')\n"
    )
    proc = CallableProcessor(f"{module}:work")
    (outcome,) = run_items(proc, [Item(0, "k", "v1", 1, str(tmp_path))], Classifier(), chunked=False)
    detail = outcome.error.detail
    lines = detail.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert f'File "{module}", line 2, in work' in lines[1]
    assert f'File "{module}", line 6, in helper' in detail
    assert lines[-1] == "ValueError: cannot parse 'v1'"
    assert ENGINE not in detail and "run_items" not in detail


def test_an_error_the_engine_raised_itself_is_its_type_and_message(tmp_path: Path) -> None:
    # A result the engine refuses: no frame of the user's is in the story, so no traceback.
    module = tmp_path / "user_code.py"
    module.write_text("def work(item):\n    return {'cost': -1}\n")
    proc = CallableProcessor(f"{module}:work")
    (outcome,) = run_items(proc, [Item(0, "k", "v1", 1, str(tmp_path))], Classifier(), chunked=False)
    assert outcome.error.error_type == "InvalidCost"
    assert outcome.error.detail == f"batchtui.engine.errors.InvalidCost: {outcome.error.message}\n"


def test_a_chained_failure_keeps_the_users_cause(tmp_path: Path) -> None:
    module = tmp_path / "user_code.py"
    module.write_text(
        "def work(item):\n    try:\n        {}['missing']\n    except KeyError as exc:\n"
        "        raise RuntimeError('lookup failed') from exc\n"
    )
    proc = CallableProcessor(f"{module}:work")
    (outcome,) = run_items(proc, [Item(0, "k", "v1", 1, str(tmp_path))], Classifier(), chunked=False)
    detail = outcome.error.detail
    assert "KeyError: 'missing'" in detail and "direct cause" in detail
    assert detail.rstrip().endswith("RuntimeError: lookup failed") and ENGINE not in detail
