"""Values and files the CLI accepts, tried as a hostile user would (issue 15, points 6, 7, 8,
11 and 13): a manifest of a newer batchtui or with nonsense settings, infinite and huge
numbers, seqs beyond SQLite's integers, links among the batches, control characters on a
terminal, and a batchtui.toml that came with a downloaded folder. Each ends with a clear line
and the exit code of DESIGN section 8, never a traceback, and nothing runs that should not."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest

from batchtui.engine.config import MAX_SECONDS, check_number, load_config, stored_config
from batchtui.engine.errors import UserError
from batchtui.engine.models import ControlCommand

from .conftest import CLI, cli_env, invoke_in_process, only_batch, read_json, read_live

RunCli = Callable[..., subprocess.CompletedProcess[str]]
NEWER = "made by a newer batchtui (format 99; this one reads up to 1): upgrade"
HUGE = "99999999999999999999999"


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, (proc.args, proc.stderr[-3000:])


def _failed_batch(tmp_path: Path, invoke_cli: RunCli, out_dir: Path, n: int = 3) -> Path:
    """A finished batch of ``n`` items that all failed (exit 3): resumable after a retry."""
    src = tmp_path / "in.txt"
    src.write_text("".join(f"item-{i}\n" for i in range(n)))
    proc = invoke_cli(["run", str(src), "--cmd", "exit 3", "--headless", "--max-attempts", "1"])
    assert proc.returncode == 1, proc.stderr
    return only_batch(out_dir)


def _edit_manifest(batch: Path, **changes: object) -> None:
    """Change the manifest and its backup alike (so no fall-back hides the change)."""
    for name in ("manifest.json", "manifest.json.bak"):
        path = batch / name
        if path.exists() or name == "manifest.json":
            data = read_json(batch / "manifest.json") if name == "manifest.json.bak" else read_json(path)
            for key, value in changes.items():
                if key == "config":
                    data["config"] = {**data["config"], **value}  # type: ignore[dict-item]
                else:
                    data[key] = value
            path.write_bytes(orjson.dumps(data))


def _statuses(batch: Path) -> list[str]:
    with sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM items ORDER BY seq")]


# -- point 6: manifests ----------------------------------------------------------------------------


def test_a_newer_manifest_is_refused_by_every_verb_and_left_untouched(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli
) -> None:
    batch = _failed_batch(tmp_path, invoke_cli, out_dir)
    _edit_manifest(batch, version=99)
    before = (batch / "manifest.json").read_bytes()
    name = batch.name
    for args in (
        ["resume", name, "--headless"],
        ["show", name],
        ["retry", name],
        ["skip", name, "0"],
        ["export", name],
        ["recover", name, "--force"],
        ["check", "--batch", name],
        ["watch", name],
    ):
        proc = invoke_cli(args)
        _no_traceback(proc)
        assert proc.returncode == 2 and NEWER in proc.stderr, (args, proc.returncode, proc.stderr)
    # Nothing was changed on the way: not the store (retry/skip offline), not the manifest.
    assert _statuses(batch) == ["failed"] * 3
    assert (batch / "manifest.json").read_bytes() == before
    # Listings name it and go on; cleanup keeps it whatever its age.
    listed = invoke_cli(["ls"])
    assert listed.returncode == 0 and NEWER in listed.stdout, listed.stderr
    cleaned = invoke_cli(["cleanup", "--max-age-days", "0", "--include-unfinished"])
    assert cleaned.returncode == 0 and "made by a newer batchtui" in cleaned.stdout, cleaned.stderr
    assert batch.exists()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"workers": -3}, ["workers = -3: must be at least 1", "manifest.json"]),
        ({"timeout": 1e10}, ["timeout = 10000000000.0", "30 days"]),
        ({"frobnicate": 1}, ["frobnicate", "unknown setting", "newer batchtui"]),
    ],
)
def test_bad_stored_config_is_a_user_error_naming_key_and_value(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli, config: dict[str, object], words: list[str]
) -> None:
    batch = _failed_batch(tmp_path, invoke_cli, out_dir, n=1)
    _edit_manifest(batch, config=config)
    for args in (["resume", batch.name, "--headless", "--retry-failed"], ["check", "--batch", batch.name]):
        proc = invoke_cli(args)
        _no_traceback(proc)
        assert proc.returncode == 2, (args, proc.stderr)
        assert all(w in proc.stderr for w in words), (args, proc.stderr)
    assert _statuses(batch) == ["failed"]  # refused before anything ran


def test_a_fall_back_to_the_backup_is_said_on_stderr_and_in_the_engines_warnings(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli
) -> None:
    batch = _failed_batch(tmp_path, invoke_cli, out_dir, n=2)
    assert invoke_cli(["retry", batch.name]).returncode == 0  # offline: manifest rewritten, .bak kept
    (batch / "manifest.json").write_text('{"version": 1, "batch_id": ')  # torn by hand
    shown = invoke_cli(["show", batch.name])
    assert shown.returncode == 0, shown.stderr
    assert "warning:" in shown.stderr and "manifest.json is damaged" in shown.stderr, shown.stderr
    assert "manifest.json.bak" in shown.stderr
    resumed = invoke_cli(["resume", batch.name, "--headless"])
    assert resumed.returncode == 1, resumed.stderr  # the two items ran (and failed) again
    assert resumed.stderr.count("read manifest.json.bak") == 1, resumed.stderr  # said once, not per read
    warnings = read_live(batch)["warnings"]
    assert any("manifest.json is damaged" in w and "manifest.json.bak" in w for w in warnings), warnings  # type: ignore[attr-defined]
    # A manifest that is gone (only the backup left) is said too.
    (batch / "manifest.json").unlink()
    gone = invoke_cli(["show", batch.name])
    assert "manifest.json is missing: read manifest.json.bak" in gone.stderr, gone.stderr


# -- point 7: numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--timeout", "inf", "not a finite number"),
        ("--timeout", "1e10", "30 days"),
        ("--timeout", "nan", "not a finite number"),
        ("--grace", "1e400", "1e400 is not a finite number"),  # as typed, not "inf"
        ("--timeout", "1e400", "1e400 is not a finite number"),
        ("--progress-interval", "-1e999", "-1e999 is not a finite number"),
        ("--backoff", "-inf", "not a finite number"),
        ("--backoff-max", "1e10", "30 days"),
        ("--max-failure-rate", "nan", "not a finite number"),
        ("--max-cost", "inf", "not a finite number"),
        ("--memory-limit-mb", "inf", "not a finite number"),
        # Under a floor: every item "timed out after 1e-300s"; dispatch waited for good.
        ("--timeout", "1e-300", "1e-300 must be at least 0.01 (10 ms,"),
        ("--timeout", "0.005", "0.005 must be at least 0.01 (10 ms,"),
        ("--memory-limit-mb", "1e-9", "1e-09 must be at least 128 (the engine alone uses about 50 MB"),
        ("--memory-limit-mb", "100", "100 must be at least 128 (the engine alone uses about 50 MB"),
        ("--progress-interval", "1e12", "30 days"),
        ("--rate", "99999999999/s", "rate"),
        ("--window", HUGE, "window"),
        ("--retry-exit-codes", HUGE, "0 to 255"),
    ],
)
def test_non_finite_or_huge_flags_are_refused_at_parse_time(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli, flag: str, value: str, words: str
) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    proc = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", flag, value])
    _no_traceback(proc)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert flag.lstrip("-").replace("-", "_") in proc.stderr or flag in proc.stderr, proc.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())  # refused before a batch was made


def test_the_maximum_is_a_value_that_works(tmp_path: Path, invoke_cli: RunCli) -> None:
    """30 days is accepted and runs: poll() takes at most 24.8 days of milliseconds, so the shell
    processor waits in slices of an hour rather than overflowing at the item."""
    (tmp_path / "in.txt").write_text("a\n")
    proc = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--json", "--timeout", str(MAX_SECONDS)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert json.loads(proc.stdout)["totals"]["complete"] == 1


def test_the_same_values_from_the_config_file_and_the_environment(tmp_path: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "inf.toml").write_text("timeout = inf\n")
    (tmp_path / "huge.toml").write_text("grace = 1e10\nmemory-limit-mb = 1e300\n")
    (tmp_path / "nan.toml").write_text("max-failure-rate = nan\nrate = 0.0000001\n")
    from_file = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--config", "inf.toml"])
    assert from_file.returncode == 2 and "timeout = inf" in from_file.stderr, from_file.stderr
    assert "not a finite number" in from_file.stderr and "inf.toml" in from_file.stderr
    huge = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--config", "huge.toml"])
    assert huge.returncode == 2 and "grace" in huge.stderr and "memory_limit_mb" in huge.stderr, huge.stderr
    nan = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--config", "nan.toml"])
    assert nan.returncode == 2, nan.stderr
    assert "max_failure_rate = nan: nan is not a finite number" in nan.stderr, nan.stderr
    assert "rate = 1e-07: 1e-07 must be at least" in nan.stderr, nan.stderr  # one item in 30 days
    env = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless"], env={"BATCHTUI_TIMEOUT": "1e10"})
    assert env.returncode == 2 and "timeout" in env.stderr and "environment" in env.stderr, env.stderr
    for proc in (from_file, huge, nan, env):
        _no_traceback(proc)


def test_the_floors_hold_in_the_config_file_and_the_environment_too(tmp_path: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "low.toml").write_text("timeout = 1e-300\nmemory-limit-mb = 1e-9\n")
    from_file = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--config", "low.toml"])
    assert from_file.returncode == 2, from_file.stderr
    assert "timeout = 1e-300: 1e-300 must be at least 0.01 (10 ms" in from_file.stderr
    assert "memory_limit_mb = 1e-09: 1e-09 must be at least 128 (the engine alone" in from_file.stderr
    assert "(from low.toml)" in from_file.stderr
    env = {"BATCHTUI_TIMEOUT": "0.001", "BATCHTUI_MEMORY_LIMIT_MB": "1"}
    from_env = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless"], env=env)
    assert from_env.returncode == 2, from_env.stderr
    assert "timeout = 0.001: 0.001 must be at least 0.01" in from_env.stderr
    assert "memory_limit_mb = '1': 1 must be at least 128" in from_env.stderr
    assert (
        check_number("timeout", 0.01) == 0.01 and check_number("memory_limit_mb", 128) == 128
    )  # the floors themselves
    for proc in (from_file, from_env):
        _no_traceback(proc)


def test_one_validator_bounds_every_number() -> None:
    assert check_number("timeout", MAX_SECONDS) == MAX_SECONDS
    for name, value in (("timeout", float("inf")), ("wait", float("nan")), ("max_age_days", 1e6)):
        with pytest.raises(ValueError):
            check_number(name, value)
    with pytest.raises(UserError, match="rate"):
        load_config({"rate": "9999999/s"}, environ={})
    with pytest.raises(UserError, match="not a finite number"):
        load_config({}, environ={"BATCHTUI_MAX_COST": "inf"})
    with pytest.raises(UserError, match="log_limit"):
        stored_config({"log_limit": 10**30}, Path("manifest.json"))


def test_help_says_the_maximum() -> None:
    proc = subprocess.run([*CLI, "run", "--help"], capture_output=True, text=True, check=False)
    assert "at most 30 days" in " ".join(proc.stdout.split()), proc.stdout


def test_cleanup_with_nan_days_removes_nothing(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    batch = _failed_batch(tmp_path, invoke_cli, out_dir, n=1)
    proc = invoke_cli(["cleanup", "--max-age-days", "nan", "--include-unfinished"])
    _no_traceback(proc)
    assert proc.returncode == 2 and "not a finite number" in proc.stderr, proc.stderr
    assert batch.exists()
    waited = invoke_cli(["stop", batch.name, "--wait", "inf"])
    assert waited.returncode == 2 and "--wait" in waited.stderr, waited.stderr


# -- point 8: seqs and paths -----------------------------------------------------------------------


def test_seqs_beyond_sqlite_integers(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    batch = _failed_batch(tmp_path, invoke_cli, out_dir, n=2)
    for args in (["skip", batch.name, HUGE], ["skip", batch.name, "0", HUGE], ["retry", batch.name, "--seq", HUGE]):
        proc = invoke_cli(args)
        _no_traceback(proc)
        assert proc.returncode == 2 and "9223372036854775807" in proc.stderr, (args, proc.stderr)
    assert _statuses(batch) == ["failed", "failed"]
    # The largest possible seq is a valid number: it names no item, which an empty selection
    # says (exit 1, nothing changed), as any other.
    ok = invoke_cli(["skip", batch.name, str((1 << 63) - 1)])
    _no_traceback(ok)
    assert ok.returncode == 1 and "nothing to skip: no item matches --seq 9223372036854775807" in ok.stderr
    assert _statuses(batch) == ["failed", "failed"]
    # A line appended to control.jsonl by hand with such a seq is refused, not applied.
    with pytest.raises(ValueError):
        ControlCommand.model_validate(orjson.loads(b'{"id":"x","ts":"t","op":"skip","seqs":[' + HUGE.encode() + b"]}"))


def test_cleanup_keeps_a_linked_batch_and_goes_on(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    other_out = tmp_path / "other_out"
    src = tmp_path / "one.txt"
    src.write_text("x\n")
    made = invoke_cli(["run", str(src), "--cmd", "true", "--headless"], env={"BATCHTUI_OUTPUT_DIR": str(other_out)})
    assert made.returncode == 0, made.stderr
    target = only_batch(other_out)
    real = _failed_batch(tmp_path, invoke_cli, out_dir, n=1)
    _edit_manifest(real, state="finished")
    link = out_dir / "20000101_000000_0badc0de"
    link.symlink_to(target, target_is_directory=True)
    proc = invoke_cli(["cleanup", "--max-age-days", "0"])
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "symbolic link" in proc.stdout and link.name in proc.stdout, proc.stdout
    assert not real.exists()  # the real old batch went
    assert link.is_symlink() and (target / "manifest.json").exists()  # the link and its batch stay


def test_paths_the_os_refuses_are_no_batch(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    batch = _failed_batch(tmp_path, invoke_cli, out_dir, n=1)
    long_name = "a" * 5000
    for args in (["show", long_name], ["export", long_name], ["resume", long_name], ["skip", long_name, "0"]):
        proc = invoke_cli(args)
        _no_traceback(proc)
        assert proc.returncode == 2 and "no batch" in proc.stderr and len(proc.stderr) < 400, (args, proc.stderr)
    nowhere = invoke_cli(["export", batch.name, "--out", str(tmp_path / "no" / "such" / "dir" / "x.csv")])
    assert nowhere.returncode == 2 and "cannot write" in nowhere.stderr, nowhere.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    listed = invoke_cli(["ls"], env={"BATCHTUI_OUTPUT_DIR": str(a_file)})  # (-o FILE: click refuses it)
    assert listed.returncode == 2 and "cannot list" in listed.stderr, listed.stderr
    for proc in (nowhere, listed):
        _no_traceback(proc)


# -- point 11: control characters on a terminal ----------------------------------------------------

NASTY = ["a\x1b[2Jb", "c\x07d", "e\x00f", "g\x9b31mh"]


def _nasty_batch(tmp_path: Path, invoke_cli: RunCli, out_dir: Path) -> Path:
    src = tmp_path / "nasty.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"k": k}) + b"\n" for k in NASTY))
    cmd = "printf 'boom \\033]0;owned\\007 \\033[31m\\n' >&2; exit 3"
    proc = invoke_cli(["run", str(src), "--key-field", "k", "--cmd", cmd, "--headless", "--max-attempts", "1"])
    assert proc.returncode == 1, proc.stderr
    return only_batch(out_dir)


def _on_a_terminal(args: Sequence[str], out_dir: Path, cwd: Path, env: dict[str, str] | None = None) -> bytes:
    """What ``batchtui ARGS`` writes to stdout when stdout is a terminal (a pty)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=cli_env(out_dir, env),
        cwd=cwd,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks)


def test_export_escapes_control_characters_on_a_terminal_only(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli
) -> None:
    batch = _nasty_batch(tmp_path, invoke_cli, out_dir)
    # To a pipe or a file: the exact bytes.
    piped = invoke_cli(["export", batch.name, "--format", "csv"])
    assert piped.returncode == 0, piped.stderr
    for key in NASTY:
        assert key in piped.stdout
    assert "\x1b]0;owned\x07" in piped.stdout
    (tmp_path / "x.jsonl").unlink(missing_ok=True)
    assert invoke_cli(["export", batch.name, "--out", str(tmp_path / "x.jsonl")]).returncode == 0
    assert sorted(json.loads(line)["key"] for line in (tmp_path / "x.jsonl").read_text().splitlines()) == sorted(NASTY)
    # To a terminal: nothing a terminal would act on; the characters are shown escaped.
    for fmt in ("csv", "jsonl"):
        shown = _on_a_terminal(["export", batch.name, "--format", fmt], out_dir, tmp_path)
        text = shown.decode()
        assert not any(ch in text for ch in "\x1b\x07\x00\x9b"), (fmt, shown[:2000])
        assert len(text.replace("\r\n", "\n").strip().splitlines()) == len(NASTY) + (fmt == "csv")
        if fmt == "jsonl":  # still JSON, and the same values
            rows = [json.loads(line) for line in text.replace("\r\n", "\n").strip().splitlines()]
            assert sorted(r["key"] for r in rows) == sorted(NASTY)
        else:
            assert "\\x1b" in text and "\\x07" in text and "\\x00" in text, text[:2000]
    # show (and its error breakdown) on a terminal too.
    shown = _on_a_terminal(["show", batch.name], out_dir, tmp_path).decode()
    assert "boom" in shown and not any(ch in shown for ch in "\x1b\x07\x00\x9b"), shown[:2000]


def test_error_lines_show_control_characters_escaped(tmp_path: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    proc = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--config", "x\x1b]0;owned\x07.toml"])
    assert proc.returncode == 2, proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr, proc.stderr
    assert "x\\x1b]0;owned\\x07.toml" in proc.stderr, proc.stderr


# -- point 13: a batchtui.toml that came with the data ---------------------------------------------


def test_a_config_file_in_the_current_folder_may_not_run_commands(tmp_path: Path, invoke_cli: RunCli) -> None:
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "in.txt").write_text("a\n")
    toml = folder / "batchtui.toml"
    toml.write_text('on-finish = "touch PWNED"\nworkers = 2\n')
    out = folder / "batch_output"
    refused = invoke_cli(
        ["run", "in.txt", "--cmd", "true", "--headless"], cwd=folder, env={"BATCHTUI_OUTPUT_DIR": str(out)}
    )
    _no_traceback(refused)
    assert refused.returncode == 2, refused.stderr
    assert f"config: {toml}" in refused.stderr  # which file was read, said first
    assert "on_finish" in refused.stderr and f"--config {toml}" in refused.stderr, refused.stderr
    assert not (folder / "PWNED").exists() and not out.exists()
    # `ls` there works (it runs nothing) and says which file it read.
    listed = invoke_cli(["ls"], cwd=folder, env={"BATCHTUI_OUTPUT_DIR": str(out)})
    assert listed.returncode == 0 and f"config: {toml}" in listed.stderr, listed.stderr
    # Named explicitly, it is trusted: the hook runs.
    trusted = invoke_cli(
        ["run", "in.txt", "--cmd", "true", "--headless", "--config", str(toml)],
        cwd=folder,
        env={"BATCHTUI_OUTPUT_DIR": str(out)},
    )
    assert trusted.returncode == 0, trusted.stderr
    assert f"config: {toml}" in trusted.stderr
    assert (folder / "PWNED").exists()
    # A scheduler (whose results this process unpickles) is refused the same way.
    toml.write_text('scheduler = "tcp://203.0.113.1:8786"\nexecutor = "dask"\n')
    dask = invoke_cli(
        ["run", "in.txt", "--cmd", "true", "--headless"], cwd=folder, env={"BATCHTUI_OUTPUT_DIR": str(out)}
    )
    assert dask.returncode == 2 and "scheduler" in dask.stderr and "--config" in dask.stderr, dask.stderr
    # Harmless settings are read, and said.
    toml.write_text("workers = 3\n")
    plain = invoke_cli(
        ["run", "in.txt", "--cmd", "true", "--headless", "--json"], cwd=folder, env={"BATCHTUI_OUTPUT_DIR": str(out)}
    )
    assert plain.returncode == 0, plain.stderr
    assert f"config: {toml} (found in the current folder)" in plain.stderr
    assert read_json(Path(json.loads(plain.stdout)["batch_dir"]) / "manifest.json")["config"]["workers"] == 3  # type: ignore[index]


def test_the_environment_is_explicit(tmp_path: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    proc = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless"], env={"BATCHTUI_ON_FINISH": "touch HOOKED"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "HOOKED").exists()
    assert "config:" not in proc.stderr  # no file was read


def test_load_config_drops_or_refuses_code_settings_of_an_implicit_file(tmp_path: Path) -> None:
    (tmp_path / "batchtui.toml").write_text('on_finish = "x"\nscheduler = "tcp://h:1"\nworkers = 5\n')
    seen: list[tuple[Path, bool]] = []
    with pytest.raises(UserError, match="on_finish, scheduler"):
        load_config({}, environ={}, cwd=tmp_path, on_file=lambda p, e: seen.append((p, e)))
    assert seen == [(tmp_path / "batchtui.toml", False)]
    dropped = load_config({}, environ={}, cwd=tmp_path, implicit_code="drop")
    assert dropped.on_finish is None and dropped.scheduler is None and dropped.workers == 5
    named = load_config({}, environ={}, config_file=tmp_path / "batchtui.toml")
    assert named.on_finish == "x"


# -- no traceback reaches the user, whatever the verb ----------------------------------------------


def test_no_traceback_from_any_verb_with_hostile_inputs(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    """Every verb against a newer manifest, a manifest with nonsense settings, a linked batch,
    huge seqs, names too long for the OS and infinite numbers: a clear line, exit 2 (or 0/1
    where the verb has nothing to refuse), never a traceback."""
    newer = _failed_batch(tmp_path, invoke_cli, out_dir, n=1)
    _edit_manifest(newer, version=99)
    src = tmp_path / "two.txt"
    src.write_text("p\nq\n")
    assert invoke_cli(["run", str(src), "--cmd", "exit 3", "--headless", "--max-attempts", "1"]).returncode == 1
    bad = next(p for p in out_dir.iterdir() if p != newer)
    _edit_manifest(bad, config={"workers": -3, "brandnew": True})
    link = out_dir / "20000101_000000_0badc0de"
    link.symlink_to(bad, target_is_directory=True)
    long_name = "b" * 5000
    verbs: list[list[str]] = []
    for target in (newer.name, long_name):
        verbs += [
            ["show", target],
            ["show", target, "--json"],
            ["resume", target, "--headless"],
            ["watch", target],
            ["retry", target],
            ["skip", target, "0"],
            ["export", target, "--format", "csv"],
            ["recover", target],
            ["check", "--batch", target],
            ["pause", target],
            ["unpause", target],
            ["stop", target],
            ["workers", target, "2"],
        ]
    verbs += [
        ["resume", bad.name, "--headless"],
        ["resume", link.name, "--headless"],
        ["check", "--batch", bad.name],
        ["skip", bad.name, HUGE],
        ["retry", bad.name, "--seq", HUGE],
        ["workers", bad.name, HUGE],
        ["export", bad.name, "--status", "failed", "--format", "csv", "--out", str(tmp_path / "nope" / "x")],
        ["stop", bad.name, "--wait", "inf"],
        ["resume", bad.name, "--timeout", "inf"],
        ["demo", "--items", "3", "--headless", "--grace", "nan"],
        ["demo", "--items", HUGE],
        ["check", str(src), "--cmd", "true", "--timeout", "1e10"],
        ["cleanup", "--max-age-days", "inf"],
        ["ls", "-o", str(src)],
    ]
    procs = [invoke_in_process(args, out=out_dir, cwd=tmp_path) for args in verbs]
    problems = []
    for args, proc in zip(verbs, procs, strict=True):
        text = proc.stdout + proc.stderr
        # Every verb reads the manifest first: a newer batch is refused (exit 2, "upgrade"), even
        # by pause/stop, which would otherwise say no engine runs it (exit 1).
        if "Traceback" in text or proc.returncode != 2 or "error" not in text.lower():
            problems.append(f"{[a[:40] for a in args]}: exit {proc.returncode}: {text[-800:]}")
    assert not problems, "\n".join(problems)
    # The listings go on past every odd batch.
    for args in (["ls"], ["ls", "--json"], ["cleanup", "--dry-run", "--max-age-days", "0", "--include-unfinished"]):
        proc = invoke_cli(args)
        _no_traceback(proc)
        assert proc.returncode == 0, (args, proc.stderr)


def test_an_ascii_only_stdout_gets_exact_utf8_from_export_and_escapes_on_a_terminal(
    tmp_path: Path, out_dir: Path
) -> None:
    """``PYTHONIOENCODING=ascii`` (or a latin-1 terminal): ``export`` to a pipe writes its formats'
    UTF-8 exactly, and to a terminal shows what the terminal's encoding cannot take as an escape.
    Both ended in a UnicodeEncodeError traceback at the first non-ASCII key."""
    items = tmp_path / "items.txt"
    items.write_text("宽字符é\nplain\n", encoding="utf-8")
    ascii_env = {"PYTHONIOENCODING": "ascii"}

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        env = cli_env(out_dir, ascii_env)
        return subprocess.run([*CLI, *args], capture_output=True, env=env, cwd=tmp_path, timeout=120, check=False)

    ran = cli("run", str(items), "--cmd", "true", "--headless")
    assert ran.returncode == 0, ran.stderr
    batch = str(only_batch(out_dir))

    export = cli("export", batch)
    assert export.returncode == 0, export.stderr
    rows = [json.loads(line) for line in export.stdout.decode("utf-8").splitlines()]
    assert [r["key"] for r in rows] == ["宽字符é", "plain"]
    csv_out = cli("export", batch, "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    assert "宽字符é" in csv_out.stdout.decode("utf-8")

    shown = _on_a_terminal(["export", batch, "--format", "csv"], out_dir, tmp_path, ascii_env)
    text = shown.decode("ascii")  # only ASCII reaches the ASCII terminal
    assert "\\u5bbd\\u5b57\\u7b26\\xe9" in text, text


def test_a_theme_given_to_a_run_without_a_dashboard_is_said_unused(tmp_path: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    note = "note: --theme styles the dashboard, which a {} run does not show: it is not used"
    for flag in ("--headless", "--json"):
        proc = invoke_cli(["run", "in.txt", "--cmd", "true", flag, "--theme", "light"])
        assert proc.returncode == 0, proc.stderr
        assert note.format(flag) in proc.stderr
    # Not on a terminal, a run with no flag shows no dashboard either, but nobody asked for none:
    # the same command line works on a terminal, where the theme is used.
    plain = invoke_cli(["run", "in.txt", "--cmd", "true", "--theme", "light"])
    assert plain.returncode == 0 and "--theme" not in plain.stderr, plain.stderr
    # From the environment it is a standing preference, not a request for this run.
    quiet = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless"], env={"BATCHTUI_THEME": "light"})
    assert quiet.returncode == 0 and "--theme" not in quiet.stderr, quiet.stderr
    demo = invoke_cli(["demo", "--items", "3", "--headless", "--theme", "light"])
    assert note.format("--headless") in demo.stderr


def test_the_creation_line_counts_duplicates_in_words(tmp_path: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "one.txt").write_text("a\na\nb\n")
    (tmp_path / "two.txt").write_text("a\na\na\n")
    one = invoke_cli(["run", "one.txt", "--cmd", "true", "--headless"])
    two = invoke_cli(["run", "two.txt", "--cmd", "true", "--headless"])
    assert ": 2 items, 1 duplicate dropped -> " in one.stderr, one.stderr
    assert ": 1 item, 2 duplicates dropped -> " in two.stderr, two.stderr
    (tmp_path / "many.txt").write_text("".join(f"k{i}\n" for i in range(1200)) * 2)
    many = invoke_cli(["run", "many.txt", "--cmd", "true", "--headless"])
    assert ": 1,200 items, 1,200 duplicates dropped -> " in many.stderr, many.stderr


def test_an_output_dir_that_does_not_exist_is_said_so(tmp_path: Path, invoke_cli: RunCli) -> None:
    # A user who takes -o for export's output file: told what -o is, not only that no batch is found.
    said = "out.csv, which does not exist (-o/--output-dir is the folder of batches)"
    for args in (["export", "-o", "out.csv"], ["export", "some-id", "-o", "out.csv"]):
        proc = invoke_cli(args)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
        _no_traceback(proc)
        assert not (tmp_path / "out.csv").exists()
    (tmp_path / "batches").mkdir()
    there = invoke_cli(["export", "some-id", "-o", "batches"])
    assert there.returncode == 2 and "does not exist" not in there.stderr, there.stderr


def test_add_and_cleanup_say_their_numbers_in_words(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "more.txt").write_text("".join(f"m{i}\n" for i in range(1500)) * 2)
    assert invoke_cli(["run", "in.txt", "--cmd", "true", "--headless"]).returncode == 0
    batch = only_batch(out_dir)
    added = invoke_cli(["add", batch.name, "more.txt"])
    assert added.returncode == 0, added.stderr
    assert f"batch {batch.name}: 1,500 items added, 1,500 duplicates dropped;" in added.stdout, added.stdout
    cleaned = invoke_cli(["cleanup", "--max-age-days", "0", "--include-unfinished"])
    assert cleaned.returncode == 0 and "removed 1 batch, kept 0" in cleaned.stderr, cleaned.stderr


def test_a_reader_that_cannot_write_the_stores_index_is_not_told_to_resume(tmp_path: Path, out_dir: Path) -> None:
    # export under a file size limit (ulimit -f): reading a WAL store writes items.db-shm (32 KiB),
    # which the limit refuses. Nothing of the batch changes: no "free some space, then resume".
    import resource

    (tmp_path / "in.txt").write_text("a\nb\n")
    env = cli_env(out_dir)
    subprocess.run([*CLI, "run", "in.txt", "--cmd", "true", "--headless"], env=env, cwd=tmp_path, check=True)
    batch = only_batch(out_dir)
    assert not (batch / "items.db-shm").exists()  # the engine's last connection removed it

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    proc = subprocess.run(
        [*CLI, "export", batch.name], env=env, capture_output=True, text=True, preexec_fn=limited, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot read {batch / 'items.db'}: " in proc.stderr and "the batch is not changed" in proc.stderr
    assert "resume" not in proc.stderr and "Nothing finished is lost" not in proc.stderr
    _no_traceback(proc)
