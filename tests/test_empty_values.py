"""An empty value (most often an unset shell variable) is refused, never read as "not given".

`batchtui skip "$B" 3` with B unset skipped item 3 of the latest batch; `retry B --type ''`
retried every failed item; `--output-dir ''` made batches in the current folder; `serve --host
''` listened on every interface. Every text option and BATCH argument of every verb refuses
an empty value now, but for the few where empty means "none" (EMPTY_MEANS_NONE).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from batchtui.engine.batches import resolve_batch
from batchtui.engine.errors import UserError
from batchtui.tui.cli import main
from batchtui.tui.cli.group import EMPTY_MEANS_NONE, VERBS
from tests.conftest import invoke_in_process


def _text_params() -> list[tuple[str, str, int]]:
    """(verb, how the parameter is given, how many values it takes) for every text option and
    BATCH argument."""
    ctx = click.Context(main)
    found = []
    for verb in sorted(VERBS):
        command = main.get_command(ctx, verb)
        assert command is not None
        for param in command.params:
            if param.name in EMPTY_MEANS_NONE:
                continue
            if not isinstance(param.type, click.types.StringParamType | click.Path):
                continue
            if isinstance(param, click.Option) and not param.is_flag:
                found.append((verb, max(param.opts, key=len), param.nargs))
            elif isinstance(param, click.Argument) and param.name == "batch":
                found.append((verb, "BATCH", 1))
    return found


PARAMS = _text_params()


def test_the_list_is_the_whole_cli() -> None:
    # Not an empty parametrization by accident: the options this file is about are all there.
    given = {(verb, how) for verb, how, _ in PARAMS}
    assert {("skip", "--type"), ("retry", "--match"), ("export", "--out"), ("serve", "--host")} <= given
    assert {("show", "BATCH"), ("skip", "BATCH"), ("resume", "BATCH"), ("run", "--output-dir")} <= given
    assert len(PARAMS) > 60


@pytest.mark.parametrize(("verb", "given", "nargs"), PARAMS, ids=[f"{v} {g}" for v, g, _ in PARAMS])
def test_an_empty_value_is_refused(tmp_path: Path, verb: str, given: str, nargs: int) -> None:
    out = tmp_path / "out"
    # An option of two values (--limit-by TEMPLATE RATE, --on-event KINDS CMD) gets the empty first.
    args = [verb, ""] if given == "BATCH" else [verb, given, "", *["x"] * (nargs - 1)]
    done = invoke_in_process(args, out=out, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "is empty (an unset shell variable?)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()  # nothing was made


@pytest.mark.parametrize("option", ["--output-dir", "--theme"])
def test_the_groups_own_options_refuse_it_too(tmp_path: Path, option: str) -> None:
    done = invoke_in_process([option, "", "ls"], out=tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 2 and "is empty" in done.stderr, done.stderr


def test_a_steering_verb_with_an_empty_batch_leaves_the_latest_batch_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("a\nb\nc\n")
    made = invoke_in_process(["run", "items.txt", "--cmd", "exit 1", "--headless"], out=out, cwd=tmp_path)
    assert made.returncode == 1, made.stderr
    for args in (["skip", "", "1"], ["retry", ""], ["prioritize", "", "1"], ["resume", "", "--headless"]):
        done = invoke_in_process(args, out=out, cwd=tmp_path)
        assert done.returncode == 2 and "is empty" in done.stderr, (args, done.stderr)
    shown = invoke_in_process(["export"], out=out, cwd=tmp_path)
    assert [json.loads(line)["status"] for line in shown.stdout.splitlines()] == ["failed"] * 3


def test_an_empty_list_still_clears_the_config_files(tmp_path: Path) -> None:
    """EMPTY_MEANS_NONE: `--retry-exit-codes ''` is how a run says "none" over batchtui.toml."""
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("a\n")
    (tmp_path / "c.toml").write_text('retry-exit-codes = [3]\non-finish = "true"\n')
    args = ["run", "items.txt", "--cmd", "true", "--headless", "--config", "c.toml"]
    args += ["--retry-exit-codes", "", "--on-finish", ""]
    done = invoke_in_process(args, out=out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (batch,) = out.iterdir()
    config = json.loads((batch / "manifest.json").read_text())["config"]
    assert config["retry_exit_codes"] == [] and config["on_finish"] == ""


def test_the_engine_refuses_an_empty_batch_name_too(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="the batch given is empty"):
        resolve_batch("", tmp_path)


@pytest.mark.parametrize("setting", ["output-dir", "name", "scheduler", "theme"])
@pytest.mark.parametrize("form", ["environment", "config file"])
def test_an_empty_setting_in_the_environment_or_a_config_file_is_refused(
    tmp_path: Path, setting: str, form: str
) -> None:
    """`BATCHTUI_OUTPUT_DIR=` or `output-dir = ""` made batches in the current folder; `BATCHTUI_NAME=`
    was "no name". Refused as the empty flag is; EMPTY_MEANS_NONE still clear a list."""
    (tmp_path / "items.txt").write_text("a\n")
    field = setting.replace("-", "_")
    args = ["run", "items.txt", "--cmd", "true", "--headless"]
    env = {f"BATCHTUI_{field.upper()}": ""} if form == "environment" else {}
    if form == "config file":
        (tmp_path / "c.toml").write_text(f'{setting} = ""\n')
        args += ["--config", "c.toml"]
    done = invoke_in_process(args, out=tmp_path / "out", cwd=tmp_path, env=env)
    named = f"BATCHTUI_{field.upper()}" if form == "environment" else field
    where = "environment" if form == "environment" else "c.toml"
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{named}: is empty (an unset shell variable?): give a value, or leave it out (from {where})" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "items.txt"][form == "environment" :]


def test_an_empty_list_in_a_config_file_still_means_none(tmp_path: Path) -> None:
    (tmp_path / "items.txt").write_text("a\n")
    (tmp_path / "c.toml").write_text('on-finish = ""\ntransient-errors = ""\n')
    done = invoke_in_process(
        ["run", "items.txt", "--cmd", "true", "--headless", "--config", "c.toml"], out=tmp_path / "out", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
