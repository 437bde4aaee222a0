"""What README.md promises of the command line, checked as a new user would meet it: a flag it
names exists, and a verb's own defaults sit below batchtui.toml and BATCHTUI_* as every default."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import invoke_in_process


def _only_batch(out: Path) -> Path:
    (batch,) = [p for p in out.iterdir() if p.is_dir()]
    return batch


def test_run_log_limit_keeps_the_last_bytes_of_each_attempts_output(tmp_path: Path) -> None:
    # README: "the last `--log-limit` bytes, 1 MiB by default, are kept" (and DESIGN's contract);
    # the setting existed in batchtui.toml and BATCHTUI_LOG_LIMIT only: `run --log-limit` was
    # "No such option".
    out = tmp_path / "batch_output"
    (tmp_path / "one.txt").write_text("a\n")
    got = invoke_in_process(
        ["run", "one.txt", "--cmd", "printf 0123456789abcdef", "--log-limit", "4", "--headless"],
        out=out,
        cwd=tmp_path,
    )
    assert got.returncode == 0, got.stderr
    batch = _only_batch(out)
    assert (batch / "logs" / "0.1.out").read_bytes() == b"cdef"
    assert json.loads((batch / "manifest.json").read_text())["config"]["log_limit"] == 4
    assert "--log-limit" in invoke_in_process(["run", "--help"], out=out, cwd=tmp_path).stdout


def test_demo_defaults_give_way_to_the_environment_and_the_config_file(tmp_path: Path) -> None:
    # README: "Defaults < batchtui.toml < environment BATCHTUI_* < flags". The demo's own
    # defaults (8 workers, backoff 0.2) were applied as if given as flags: BATCHTUI_WORKERS and
    # batchtui.toml's workers were ignored by `batchtui demo`.
    out = tmp_path / "batch_output"
    (tmp_path / "batchtui.toml").write_text("backoff = 0.5\n")
    got = invoke_in_process(
        ["demo", "--items", "3", "--headless"], out=out, cwd=tmp_path, env={"BATCHTUI_WORKERS": "3"}
    )
    assert got.returncode in (0, 1), got.stderr
    config = json.loads((_only_batch(out) / "manifest.json").read_text())["config"]
    assert (config["workers"], config["backoff"], config["executor"]) == (3, 0.5, "thread")


def test_demo_keeps_its_own_defaults_when_nothing_sets_them(tmp_path: Path) -> None:
    out = tmp_path / "batch_output"
    got = invoke_in_process(["demo", "--items", "3", "--headless"], out=out, cwd=tmp_path)
    assert got.returncode in (0, 1), got.stderr
    config = json.loads((_only_batch(out) / "manifest.json").read_text())["config"]
    assert (config["workers"], config["backoff"], config["executor"]) == (8, 0.2, "thread")
    help_text = invoke_in_process(["demo", "--help"], out=out, cwd=tmp_path).stdout
    assert "[default: 8]" in " ".join(help_text.split())
