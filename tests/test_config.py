"""Config precedence and validation: defaults < batchtui.toml < BATCHTUI_* env < flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from batchtui.engine.config import BatchConfig, load_config, operational_overrides, parse_rate
from batchtui.engine.config_env import ENV_NOT_SETTINGS
from batchtui.engine.errors import UserError


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config({}, environ={}, cwd=tmp_path)
    assert cfg.max_attempts == 3
    assert cfg.output_dir == "./batch_output"
    assert cfg.workers >= 2


def test_precedence_each_layer_wins_over_the_one_below(tmp_path: Path) -> None:
    (tmp_path / "batchtui.toml").write_text("workers = 3\nmax_attempts = 5\ntimeout = 9\nrate = '2/s'\n")
    env = {"BATCHTUI_WORKERS": "4", "BATCHTUI_MAX_ATTEMPTS": "6"}
    cfg = load_config({"workers": 7}, environ=env, cwd=tmp_path)
    assert cfg.workers == 7  # flag beats env
    assert cfg.max_attempts == 6  # env beats file
    assert cfg.timeout == 9  # file beats default
    assert cfg.rate == 2.0
    assert cfg.backoff == 1.0  # default


def test_config_file_flag_and_section(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[batchtui]\nmax-failure-rate = 0.25\nretry-exit-codes = [3, 4]\n")
    cfg = load_config({}, config_file=other, environ={}, cwd=tmp_path)
    assert cfg.max_failure_rate == 0.25
    assert cfg.retry_exit_codes == (3, 4)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("workers = 3\ntimeout = 5\n[batchtui]\nmax_attempts = 5\n", "workers, timeout are"),
        ("[batchtui]\nmax_attempts = 5\n[run]\nworkers = 3\n", "run is"),
    ],
)
def test_a_setting_outside_the_batchtui_table_is_refused_not_ignored(tmp_path: Path, text: str, named: str) -> None:
    # Only the [batchtui] table was read: `workers = 3` above it was accepted and ignored.
    other = tmp_path / "other.toml"
    other.write_text(text)
    with pytest.raises(UserError) as err:
        load_config({}, config_file=other, environ={}, cwd=tmp_path)
    assert str(err.value) == (
        f"config file {other}: {named} outside its [batchtui] table, whose keys are the settings:"
        " move them into it (or drop the table line)"
    )


def test_a_config_file_with_a_bom_is_read(tmp_path: Path) -> None:
    (tmp_path / "batchtui.toml").write_bytes(b"\xef\xbb\xbfworkers = 3\n")  # as Notepad saves it
    assert load_config({}, environ={}, cwd=tmp_path).workers == 3


def test_a_config_file_that_is_no_regular_file_is_said_to_be_so(tmp_path: Path) -> None:
    fifo = tmp_path / "cfg.toml"
    os.mkfifo(fifo)
    for path, what in ((fifo, "is not a regular file"), (tmp_path / "nope.toml", "does not exist")):
        with pytest.raises(UserError) as err:
            load_config({}, config_file=path, environ={}, cwd=tmp_path)
        assert str(err.value) == f"config file {path} {what}"


def test_unknown_setting_is_an_error_naming_its_source(tmp_path: Path) -> None:
    (tmp_path / "batchtui.toml").write_text("max_atempts = 5\n")
    with pytest.raises(UserError) as err:
        load_config({}, environ={}, cwd=tmp_path)
    assert "max_atempts: unknown setting; did you mean max_attempts? (from " in str(err.value)
    assert "batchtui.toml" in str(err.value)


def test_an_unknown_setting_far_from_any_is_named_without_a_guess(tmp_path: Path) -> None:
    (tmp_path / "batchtui.toml").write_text("zzzz = 5\n")
    with pytest.raises(UserError) as err:
        load_config({}, environ={}, cwd=tmp_path)
    assert "  zzzz: unknown setting (from " in str(err.value) and "did you mean" not in str(err.value)


def test_a_table_of_settings_is_told_the_settings_are_top_level(tmp_path: Path) -> None:
    # Other tools' files group settings in a [run] table; ours takes them at the top level.
    (tmp_path / "batchtui.toml").write_text("[run]\nworkers = 4\n")
    with pytest.raises(UserError) as err:
        load_config({}, environ={}, cwd=tmp_path)
    said = "  run: unknown setting: a table; the settings are top-level keys (workers = 4), not in a [run] table"
    assert said in str(err.value)


def test_bad_env_value_names_the_environment(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_config({}, environ={"BATCHTUI_WORKERS": "zero"}, cwd=tmp_path)
    assert "workers" in str(err.value) and "environment" in str(err.value)


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        ({"BATCHTUI_WORKERS": "0"}, "workers = '0': must be at least 1 (from environment)"),
        ({"BATCHTUI_WORKERS": "1.5"}, "workers = '1.5': must be a whole number (from environment)"),
        ({"BATCHTUI_MAX_FAILURE_RATE": "2"}, "max_failure_rate = '2': must be at most 1 (from environment)"),
        ({"BATCHTUI_FSYNC": "maybe"}, "fsync = 'maybe': must be true or false (from environment)"),
        ({"BATCHTUI_EXECUTOR": "gpu"}, "executor = 'gpu': must be 'thread', 'process' or 'dask' (from environment)"),
        # A setting of two kinds: one line saying both, under the name the user wrote.
        ({"BATCHTUI_CHUNK_SIZE": "abc"}, "chunk_size = 'abc': must be a whole number or 'auto' (from environment)"),
        # An item of a list: which one, and its value.
        (
            {"BATCHTUI_RETRY_EXIT_CODES": "3,x"},
            "retry_exit_codes = 'x': must be a whole number (item 2 of the list) (from environment)",
        ),
        ({"BATCHTUI_RATE": "0/m"}, "rate = '0/m': rate '0/m' must be more than 0 (e.g. 5/s, 100/m or 1/h)"),
        # The floor said as the flag says it (not pydantic's "greater than 0", which 0.001 passed).
        ({"BATCHTUI_TIMEOUT": "0"}, "timeout = 0.0: 0 must be at least 0.01 (10 ms"),
    ],
)
def test_a_bad_value_is_one_line_in_the_flags_words(tmp_path: Path, environ: dict[str, str], line: str) -> None:
    with pytest.raises(UserError) as err:
        load_config({}, environ=environ, cwd=tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert len(lines) == 2, lines
    assert lines[1].startswith("  " + line), lines
    assert "Input should" not in lines[1]


def test_several_bad_values_each_get_their_line(tmp_path: Path) -> None:
    toml = tmp_path / "batchtui.toml"
    toml.write_text('workers = 0\nchunk_size = "big"\nwrokers = 2\n')
    with pytest.raises(UserError) as err:
        load_config({}, config_file=toml, environ={}, cwd=tmp_path)
    lines = str(err.value).splitlines()[1:]
    assert sorted(line.split(":")[0].strip() for line in lines) == ["chunk_size = 'big'", "workers = 0", "wrokers"]
    assert any("did you mean workers?" in line for line in lines)


def test_a_setting_that_is_a_model_names_each_bad_field(tmp_path: Path) -> None:
    """adaptive_timeout is a table of its own fields: each bad one is its line, under its own
    name (not merged as if they were the kinds of a setting of several kinds, as chunk_size's)."""
    toml = tmp_path / "batchtui.toml"
    toml.write_text('adaptive_timeout = {percent = 0, after = "x"}\n')
    with pytest.raises(UserError) as err:
        load_config({}, config_file=toml, environ={}, cwd=tmp_path)
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 2, lines
    assert lines[0].startswith("  adaptive_timeout.percent = 0: 0% must be more than 100%"), lines
    assert lines[1] == f"  adaptive_timeout.after = 'x': must be a whole number (from {toml})", lines


def test_item_env_vars_are_not_settings(tmp_path: Path) -> None:
    # Commands run by batchtui see BATCHTUI_SEQ etc.; a nested batchtui must not choke on them.
    cfg = load_config({}, environ={"BATCHTUI_SEQ": "3", "BATCHTUI_ITEM_JSON": "{}"}, cwd=tmp_path)
    assert cfg.max_attempts == 3


def test_invalid_toml_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "batchtui.toml").write_text("workers = = 3\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config({}, environ={}, cwd=tmp_path)


def test_consistency_checks() -> None:
    with pytest.raises(UserError, match="both retryable and fatal"):
        load_config({"retry_exit_codes": "3,4", "fatal_exit_codes": "4"}, environ={})
    with pytest.raises(UserError, match="backoff_max"):
        load_config({"backoff": 10, "backoff_max": 1}, environ={})


def test_frozen_and_round_trips_through_the_manifest() -> None:
    cfg = load_config({"rate": "120/m", "chunk_size": "auto"}, environ={})
    with pytest.raises(ValidationError, match="frozen"):
        cfg.workers = 3  # type: ignore[misc]
    again = BatchConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg
    assert again.rate == 2.0


def test_operational_overrides() -> None:
    stored = load_config({"workers": 2}, environ={})
    new = load_config({"workers": 5, "timeout": 3}, base=stored.model_dump(mode="json"), environ={})
    assert operational_overrides(stored, new) == {"timeout": 3.0, "workers": 5}


@pytest.mark.parametrize(("text", "per_s"), [("10", 10.0), ("10/s", 10.0), ("60/m", 1.0), ("3600/h", 1.0)])
def test_parse_rate(text: str, per_s: float) -> None:
    assert parse_rate(text) == per_s


def test_parse_rate_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_an_unknown_batchtui_variable_is_refused_with_the_setting_it_likely_meant() -> None:
    """BATCHTUI_WOKERS=8 (a typo) changed nothing, silently: it is refused as an unknown key of
    batchtui.toml is, with the setting it most likely meant. The names batchtui sets for an
    item's command and a hook, and the switches it reads itself, are no settings and pass."""
    with pytest.raises(UserError) as info:
        load_config({}, environ={"BATCHTUI_WOKERS": "8", "BATCHTUI_ZZZ": "1"})
    assert str(info.value) == (
        "invalid configuration:\n"
        "  BATCHTUI_WOKERS: unknown setting (from the environment; did you mean BATCHTUI_WORKERS?)\n"
        "  BATCHTUI_ZZZ: unknown setting (from the environment)"
    )
    passed = {f"BATCHTUI_{name}": "1" for name in ENV_NOT_SETTINGS}
    assert load_config({}, environ={**passed, "BATCHTUI_WORKERS": "3"}).workers == 3


def test_a_config_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    """A batchtui.toml of binary bytes ended in a UnicodeDecodeError traceback."""
    path = tmp_path / "batchtui.toml"
    path.write_bytes(b"workers = 2\n\xff\xfe garbage [[[")
    with pytest.raises(UserError, match=r"is not valid TOML: byte 12 is not UTF-8 text"):
        load_config({}, config_file=path, environ={})


# Every setting that takes a number, with the TOML boolean that pydantic would otherwise read as
# 1 or 0 (`timeout = true` was a one-second timeout, `max-failure-rate = true` a rate that never
# halts, `log-limit = false` no logs at all).
NUMERIC_SETTINGS = [
    "workers",
    "window",
    "max-attempts",
    "backoff",
    "backoff-max",
    "timeout",
    "grace",
    "max-failure-rate",
    "min-items",
    "max-cost",
    "rate",
    "memory-limit-mb",
    "chunk-size",
    "hook-timeout",
    "progress-interval",
    "log-limit",
    "max-result-bytes",
    "retry-exit-codes",
    "fatal-exit-codes",
]


BOOLEAN_CASES = [(name, value) for name in NUMERIC_SETTINGS for value in ("true", "false")] + [
    (name, "[3, true]") for name in NUMERIC_SETTINGS if name.endswith("exit-codes")
]


@pytest.mark.parametrize(("name", "value"), BOOLEAN_CASES)
def test_a_boolean_for_a_number_is_refused_naming_the_setting_and_the_file(
    tmp_path: Path, name: str, value: str
) -> None:
    path = tmp_path / "b.toml"
    path.write_text(f"{name} = {value}\n")
    with pytest.raises(UserError) as err:
        load_config({}, config_file=path, environ={}, cwd=tmp_path)
    text = str(err.value)
    assert f"  {name.replace('-', '_')} = {value}: must be a number, not true or false (from {path})" in text, text
    assert "Value error" not in text


def test_every_numeric_setting_is_guarded_and_fsync_still_takes_a_boolean(tmp_path: Path) -> None:
    # A setting added later with a number type is in the guarded list, or this fails.
    numeric = {
        name
        for name, field in BatchConfig.model_fields.items()
        if any(t in str(field.annotation) for t in ("int", "float"))
    }
    assert numeric == {n.replace("-", "_") for n in NUMERIC_SETTINGS}
    path = tmp_path / "f.toml"
    path.write_text("fsync = false\nworkers = 3\ntimeout = 2.5\nretry-exit-codes = [3, 4]\n")
    cfg = load_config({}, config_file=path, environ={}, cwd=tmp_path)
    assert (cfg.fsync, cfg.workers, cfg.timeout, cfg.retry_exit_codes) == (False, 3, 2.5, (3, 4))


def test_one_setting_spelt_both_ways_in_a_config_file_is_refused_naming_both(tmp_path: Path) -> None:
    """max-attempts = 3 and max_attempts = 7 are two TOML keys (no TOML duplicate), one setting:
    the last one silently won."""
    path = tmp_path / "dup.toml"
    path.write_text("max-attempts = 3\nmax_attempts = 7\n")
    with pytest.raises(UserError) as err:
        load_config(config_file=path, environ={}, cwd=tmp_path)
    assert str(err.value) == f"config file {path}: max-attempts and max_attempts are the same setting: keep one"
    (tmp_path / "batchtui.toml").write_text("[batchtui]\nwork_ers = 1\nmax_attempts = 7\nmax-attempts = 3\n")
    with pytest.raises(UserError, match="max_attempts and max-attempts are the same setting: keep one"):
        load_config(environ={}, cwd=tmp_path)


def test_a_stored_value_under_a_later_floor_still_resumes_and_a_new_one_is_refused(tmp_path: Path) -> None:
    """The floors of --timeout (10 ms) and --memory-limit-mb (128) came after batches stored
    less: resuming such a batch (with a flag that replaces the value, say) must not be refused
    as an "invalid stored configuration"; a value given now is."""
    from batchtui.engine.config import stored_config

    made = load_config({"output_dir": str(tmp_path)}, environ={}, cwd=tmp_path).model_dump(mode="json")
    old = {**made, "timeout": 1e-300, "memory_limit_mb": 100.0}
    stored = stored_config(old, tmp_path / "manifest.json")
    assert (stored.timeout, stored.memory_limit_mb) == (1e-300, 100.0)
    resumed = load_config({"timeout": 30}, base=stored.model_dump(mode="json"), environ={})
    assert (resumed.timeout, resumed.memory_limit_mb) == (30.0, 100.0)
    with pytest.raises(UserError, match=r"memory_limit_mb = 100: 100 must be at least 128"):
        load_config({"memory_limit_mb": 100}, base=stored.model_dump(mode="json"), environ={})


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        (
            {"BATCHTUI_WORKERS": "2", "BATCHTUI_workers": "8"},
            "the environment: BATCHTUI_WORKERS and BATCHTUI_workers are the same setting: keep one",
        ),
        (
            {"BATCHTUI_Max_Attempts": "2", "BATCHTUI_MAX_ATTEMPTS": "5"},
            "the environment: BATCHTUI_MAX_ATTEMPTS and BATCHTUI_Max_Attempts are the same setting: keep one",
        ),
        (
            {"BATCHTUI_TIMEOUT": "300%", "BATCHTUI_ADAPTIVE_TIMEOUT": "200%"},
            "the environment: BATCHTUI_TIMEOUT=300% and BATCHTUI_ADAPTIVE_TIMEOUT are the same setting"
            " (the adaptive timeout rule): keep one",
        ),
    ],
)
def test_one_setting_given_twice_in_the_environment_is_refused_naming_both(environ: dict[str, str], said: str) -> None:
    """Environment names are case-sensitive, settings are not: the variable listed last won in
    silence; and BATCHTUI_TIMEOUT=300% is the adaptive rule, whose own variable it overrode."""
    with pytest.raises(UserError) as err:
        load_config({}, environ=environ)
    assert str(err.value) == said
    one = {k: v for k, v in environ.items() if k != next(iter(environ))}  # either alone is fine
    load_config({}, environ=one)


def test_the_timeout_rule_twice_in_a_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('timeout = "300%"\nadaptive-timeout = "200%"\n')
    with pytest.raises(UserError) as err:
        load_config(config_file=path, environ={}, cwd=tmp_path)
    assert str(err.value) == (
        f"config file {path}: timeout=300% and adaptive_timeout are the same setting (the adaptive timeout rule):"
        " keep one"
    )
    path.write_text('timeout = "300%,max=60s"\n')
    assert load_config(config_file=path, environ={}, cwd=tmp_path).timeout == 60


def test_the_cli_refuses_a_setting_given_twice_in_the_environment_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_")}
    env.update({"BATCHTUI_OUTPUT_DIR": str(tmp_path / "out"), "BATCHTUI_WORKERS": "2", "BATCHTUI_workers": "8"})
    for args in (["run", "n.txt", "--cmd", "true", "--headless"], ["ls"]):
        got = subprocess.run(
            [sys.executable, "-m", "batchtui.tui.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert got.returncode == 2, got.stdout + got.stderr
        assert (
            got.stderr
            == "error: the environment: BATCHTUI_WORKERS and BATCHTUI_workers are the same setting: keep one\n"
        )
    assert not (tmp_path / "out").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"name": "  "}, "name = '  ': is blank: give a name"),
        ({"transient_errors": "HTTPError,x y"}, "'x y' is no exception name"),
        ({"transient_errors": ["Timeout", "exit 3"]}, "'exit 3' is an exit code: give it to --retry-exit-codes"),
        ({"transient_errors": "1abc"}, "'1abc' is no exception name"),
        ({"transient_errors": "signal 9"}, "'signal 9' is no exception name"),  # a kill is never transient
    ],
)
def test_values_that_could_never_mean_anything_are_refused(settings: dict[str, object], said: str) -> None:
    """A blank name showed as nothing; an error name no error type can equal retried nothing."""
    with pytest.raises(UserError, match=said):
        load_config(settings, environ={})


def test_error_names_and_blank_hooks_that_mean_something_are_taken() -> None:
    config = load_config(
        {"transient_errors": "HTTPError, requests.exceptions.HTTPError", "on_finish": "  "}, environ={}
    )
    assert config.transient_errors == ("HTTPError", "requests.exceptions.HTTPError")
    assert config.on_finish == ""  # blanks run nothing: no hook, as for ''
    # A batch's stored config keeps what it was made with: its resume is not refused.
    from batchtui.engine.config import stored_config

    kept = stored_config({"name": " ", "transient_errors": ["x y"]}, Path("manifest.json"))
    assert (kept.name, kept.transient_errors) == (" ", ("x y",))


@pytest.mark.parametrize("kind", ["folder", "fifo", "broken link", "link to a device"])
def test_a_batchtui_toml_here_that_is_no_file_is_refused_not_passed_over(tmp_path: Path, kind: str) -> None:
    """It was ignored without a word, and the settings meant to be in it were not in force."""
    toml = tmp_path / "batchtui.toml"
    if kind == "folder":
        toml.mkdir()
    elif kind == "fifo":
        os.mkfifo(toml)
    else:
        toml.symlink_to(tmp_path / "gone" if kind == "broken link" else Path("/dev/null"))
    with pytest.raises(UserError, match=r"batchtui\.toml is not a regular file \((a folder|a fifo|a broken)"):
        load_config({}, environ={}, cwd=tmp_path)
    # A link to a file is read as the file.
    if kind == "folder":
        toml.rmdir()
    else:
        toml.unlink()
    (tmp_path / "real.toml").write_text("workers = 3\n")
    toml.symlink_to(tmp_path / "real.toml")
    assert load_config({}, environ={}, cwd=tmp_path).workers == 3
