"""The commands batchtui suggests (``Retry: batchtui resume ID --output-dir DIR``, ``stop it with
...``, ``rebuild it with ...``) paste into a shell as they read, whatever the folder's name holds.

The output dir went into them as it was: for a batch under ``/tmp/x $(touch PWNED) ;a``, pasting
the summary's Retry line ran ``touch PWNED``; a newline in a folder's name split it in two, and
an ESC in it reached the terminal raw.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from batchtui.engine.fmt import shell_line, shell_word

from .conftest import cli_env, only_batch, read_json

BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="no bash here")

WORDS = [
    "20261204_181302_428254c4",
    "/plain/path-1.2_x",
    "",
    "a b",
    "it's",
    "$(touch PWNED)",
    "`id`",
    ";a&b|c>d<e",
    "*?[x]~",
    "back\\slash",
    "new\nline",
    "esc\x1b[31mred",
    "tab\tand\x7fdel",
    "bidi\u202eevil",
    "raw byte \udcff\udc80",  # os.fsdecode of a name that is not UTF-8
    "$'already' \"dq\" !bang",
    "宽字符",
]


def _argv_through_bash(line: str) -> list[bytes]:
    """The words bash reads from ``line`` (``printf '%s\\0'`` in front of it)."""
    assert BASH is not None
    done = subprocess.run([BASH, "-c", f"printf '%s\\0' {line}"], capture_output=True, timeout=30, check=True)
    return done.stdout.split(b"\0")[:-1]


@needs_bash
def test_every_word_pastes_into_bash_as_itself(tmp_path: Path) -> None:
    line = shell_line(*WORDS)
    assert _argv_through_bash(line) == [os.fsencode(w) for w in WORDS]
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("word", WORDS)
def test_a_suggested_command_is_one_printable_line(word: str) -> None:
    quoted = shell_word(word)
    assert quoted.isprintable()  # no newline, ESC or bidi override reaches the terminal


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("20261204_181302_428254c4", "20261204_181302_428254c4"),  # an id, a plain path: as they are
        ("/tmp/batch_output", "/tmp/batch_output"),
        ("a b", "'a b'"),
        ("", "''"),
        ("new\nline", "$'new\\x0aline'"),
    ],
)
def test_plain_words_stay_as_they_are_and_others_are_quoted(word: str, quoted: str) -> None:
    assert shell_word(word) == quoted


@needs_bash
def test_the_retry_line_of_a_summary_resumes_the_batch_when_pasted(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """End to end: a batch under a hostile folder name fails, and its summary's Retry line, run
    by bash as a user would paste it, resumes that batch (and runs nothing the name holds)."""
    assert BASH is not None
    home = tmp_path / "x $(touch PWNED) `touch TICKED` ;a\nb"
    home.mkdir()
    out = home / "batch_output"
    items = tmp_path / "items.txt"
    items.write_text("1\n2\n")
    flag = tmp_path / "ok"
    cmd = f"test -e {flag} || exit 1"
    done = run_cli(["run", str(items), "--cmd", cmd, "--headless", "-o", str(out), "--max-attempts", "1"], cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    retry = [line for line in done.stdout.splitlines() if line.strip().startswith("Retry:")]
    assert len(retry) == 1, done.stdout
    line = retry[0].split("Retry:", 1)[1].strip()
    assert line.isprintable()
    assert line.startswith("batchtui resume ")

    flag.touch()
    shim = f'batchtui() {{ {sys.executable} -m batchtui.tui.cli "$@"; }}\n'
    pasted = subprocess.run(
        [BASH, "-c", shim + line],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=cli_env(tmp_path / "elsewhere"),
        check=False,
    )
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    manifest = read_json(only_batch(out) / "manifest.json")
    assert manifest["state"] == "finished"
    assert manifest["totals"]["complete"] == 2  # type: ignore[index]
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "TICKED").exists()
    assert not (home / "PWNED").exists()
