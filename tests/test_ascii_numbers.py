"""A number is written with the digits 0-9, whichever way it comes (engine/numbers.py).

Python's int() and float() read any script's digits: `-j ٣` ran 3 workers and `--rate ٣/s` 3
a second, while `BATCHTUI_WORKERS=٣` was refused by the config's validator. The same value is now
refused the same way from a flag, the environment and a config file, before anything runs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from batchtui.engine.adaptive import parse_duration, split_timeout
from batchtui.engine.config import BatchConfig, parse_rate
from batchtui.engine.limits import parse_limit_by

RunCli = Callable[..., subprocess.CompletedProcess[str]]

ARABIC_3, FULLWIDTH_4 = "\u0663", "\uff14"  # ٣ and ４


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-j", ARABIC_3], "--workers"),
        (["-j", FULLWIDTH_4], "--workers"),
        (["--max-attempts", ARABIC_3], "--max-attempts"),
        (["--window", ARABIC_3], "--window"),
        (["--timeout", f"1.{ARABIC_3}"], "--timeout"),
        (["--timeout", f"{ARABIC_3}00%"], "--timeout"),
        (["--timeout", f"300%,after={ARABIC_3}"], "--timeout"),
        (["--timeout", f"300%,min={ARABIC_3}s"], "--timeout"),
        (["--grace", ARABIC_3], "--grace"),
        (["--rate", f"{ARABIC_3}/s"], "rate"),
        (["--limit-by", "{host}", f"5/s,{ARABIC_3}"], "concurrency"),
        (["--limit-by", "{host}", f"{ARABIC_3}/s"], "rate"),
    ],
)
def test_a_flag_in_other_digits_is_refused_before_anything_runs(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli, args: list[str], words: str
) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    proc = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", *args])
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())  # no batch was made
    ascii_args = [a.replace(ARABIC_3, "3").replace(FULLWIDTH_4, "4") for a in args]
    assert invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--dry-run", *ascii_args]).returncode == 0


def test_the_same_value_is_refused_from_a_flag_the_environment_and_a_file(tmp_path: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "odd.toml").write_text(f'rate = "{ARABIC_3}/s"\n')
    run = ["run", "in.txt", "--cmd", "true", "--headless", "--dry-run"]
    flag = invoke_cli([*run, "--rate", f"{ARABIC_3}/s"])
    env = invoke_cli(run, env={"BATCHTUI_RATE": f"{ARABIC_3}/s"})
    env_workers = invoke_cli(run, env={"BATCHTUI_WORKERS": ARABIC_3})
    flag_workers = invoke_cli([*run, "-j", ARABIC_3])
    from_file = invoke_cli([*run, "--config", "odd.toml"])
    for proc in (flag, env, env_workers, flag_workers, from_file):
        assert proc.returncode == 2, proc.stderr


def test_selections_and_verbs_take_ascii_item_numbers_only(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\nb\nc\nd\n")
    assert invoke_cli(["run", "in.txt", "--cmd", "exit 4", "--headless", "--max-attempts", "1"]).returncode == 1
    batch = next(out_dir.iterdir()).name
    for args in (["retry", batch, ARABIC_3], ["retry", batch, "--seq", f"1-{ARABIC_3}"], ["logs", batch, ARABIC_3]):
        proc = invoke_cli(args)
        assert proc.returncode == 2 and "0-9" in proc.stderr + proc.stdout, (args, proc.stderr)
    done = invoke_cli(["retry", batch, "3"])  # the same in ASCII is taken
    assert done.returncode == 0, done.stderr


def test_the_engines_parsers_take_ascii_only() -> None:
    for bad in (f"{ARABIC_3}/s", f"1{FULLWIDTH_4}"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    with pytest.raises(ValueError):
        parse_duration(f"{ARABIC_3}s")
    with pytest.raises(ValueError):
        split_timeout(f"{ARABIC_3}")
    with pytest.raises(ValueError):
        parse_limit_by(f"{{host}} 5/s,{ARABIC_3}")
    with pytest.raises(ValidationError):
        BatchConfig(chunk_size=ARABIC_3)  # --chunk-size, batchtui.toml's chunk-size alike
    assert BatchConfig(chunk_size="3").chunk_size == 3
    assert parse_rate("3/s") == 3.0 and parse_duration("3s") == 3.0 and split_timeout("3") == (3.0, None)
