"""Commands started without dash (engine/shell/direct.py): the same outcome as through dash.

Each case runs the same template twice, once as the engine runs it and once with the direct
start turned off (every command through ``/bin/sh -c``), and compares everything the engine
keeps of an attempt: the result or the error (type, exit code, stderr tail), the log files and
the files the command wrote.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.errors import CommandFailed, CommandKilled
from batchtui.engine.shell import direct, spawn, spawn_glibc
from batchtui.engine.shell.item import Item
from batchtui.engine.shell.processor import ShellProcessor

pytestmark = pytest.mark.skipif(
    spawn.backend() != "glibc" or not direct.is_dash("/bin/sh"),
    reason="the direct start needs the glibc spawner and dash as /bin/sh",
)
PY = sys.executable
W, A = os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_WRONLY | os.O_CREAT | os.O_APPEND


@pytest.mark.parametrize(
    ("cmd", "argv", "redirects"),
    [
        ("gzip -n -c /a/b", ("gzip", "-n", "-c", "/a/b"), ()),
        ("gzip -c 'x y'\"'\"'z' > out/1.gz", ("gzip", "-c", "x y'z"), ((1, "out/1.gz", W),)),
        ("cat <in >>log 2> 'e r'", ("cat",), ((0, "in", os.O_RDONLY), (1, "log", A), (2, "e r", W))),
        ("wc a=b --x=1,2:3+4@5%", ("wc", "a=b", "--x=1,2:3+4@5%"), ()),
        ("./run ''", ("./run", ""), ()),
    ],
)
def test_plain_commands_are_parsed(cmd: str, argv: tuple[str, ...], redirects: tuple[Any, ...]) -> None:
    assert direct.parse(cmd) == direct.Plan(argv, redirects)


@pytest.mark.parametrize(
    "cmd",
    [
        "true",  # a builtin
        "echo hi",
        "if x",
        "A=1 cmd",
        "cmd; other",
        "cmd && other",
        "cmd | other",
        "cmd &",
        "cmd $HOME",
        'cmd "$x"',
        "cmd `x`",
        "cmd *.txt",
        "cmd a?",
        "cmd [ab]",
        "cmd ~/x",
        "cmd \\x",
        "cmd # note",
        "cmd > a > b",
        "cmd 2>&1",
        "cmd >| f",
        "cmd <> f",
        "cmd << EOF",
        "cmd 3> f",
        "cmd>f",
        "cmd >",
        "(cmd)",
        "{ cmd; }",
        "! cmd",
        "cmd 'open",
        "cmd\nother",
        "''",
        "",
    ],
)
def test_shell_syntax_goes_through_dash(cmd: str) -> None:
    assert direct.parse(cmd) is None


def _item(batch: Path, data: str, seq: int) -> Item:
    return Item(seq=seq, key=data, data=data, attempt=1, batch_dir=str(batch))


def _outcome(
    batch: Path, work: Path, template: str, data: str, seq: int, env: dict[str, str] | None
) -> tuple[Any, ...]:
    """What the engine keeps of one attempt: result or error, logs, the files written in ``work``."""
    proc = ShellProcessor(template, cwd=str(work), env=env)
    try:
        out: Any = ("ok", proc.run(_item(batch, data, seq)))
    except (CommandFailed, CommandKilled) as exc:
        out = (type(exc).__name__, getattr(exc, "exit_code", getattr(exc, "signum", None)), exc.stderr_tail)
    logs = batch / "logs"
    written = {p.name: p.read_bytes() for p in sorted(work.iterdir()) if p.is_file()}
    kept = {p.name.split(".", 1)[1]: p.read_bytes() for p in sorted(logs.iterdir())} if logs.exists() else {}
    return out, kept, written


def both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str, data: str = "x", env: dict[str, str] | None = None
) -> tuple[tuple[Any, ...], bool]:
    """The outcome through dash and the direct one (they must be equal), and whether the
    direct start was used. Both run in the same fresh folders, the engine's own folder (the
    spawner starts commands only there)."""
    started: list[bool] = []
    real = spawn_glibc.GlibcLauncher._spawn_direct

    def spy(self: spawn_glibc.GlibcLauncher, cmd: str, values: tuple[bytes, ...]) -> Any:
        child = real(self, cmd, values)
        started.append(child is not None)
        return child

    monkeypatch.setattr(spawn_glibc.GlibcLauncher, "_spawn_direct", spy)
    batch, work = tmp_path / "batch", tmp_path / "work"
    outcomes = []
    for on in (False, True):
        monkeypatch.setattr(spawn_glibc, "DIRECT", on)
        for folder in (batch, work):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(mode=0o700)
        (work / "in.txt").write_bytes(b"line one\nline two\n")
        script = work / "script.sh"
        script.write_text("echo from the script\n")
        script.chmod(0o755)
        (work / "not-executable").write_text("echo no\n")
        monkeypatch.chdir(work)
        outcomes.append(_outcome(batch, work, template, data, 0, env))
    assert outcomes[1] == outcomes[0]
    return outcomes[0], any(started)


def test_a_plain_command_runs_without_the_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The command's parent is the engine itself, not a shell.
    template = f"{PY} -c 'import os; print(os.getppid() == {os.getpid()})'"
    monkeypatch.setattr(spawn_glibc, "DIRECT", True)
    batch = tmp_path / "b"
    batch.mkdir(mode=0o700)
    assert ShellProcessor(template).run(_item(batch, "x", 0)).result == {"stdout_tail": "True"}
    monkeypatch.setattr(spawn_glibc, "DIRECT", False)
    assert ShellProcessor(template).run(_item(batch, "x", 1)).result == {"stdout_tail": "False"}


def test_redirections_write_what_dash_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (out, _, written), used = both_ways(tmp_path, monkeypatch, "cat {} < in.txt > copy 2>> err", data="in.txt")
    assert used and out[0] == "ok"
    assert written["copy"] == b"line one\nline two\n" and written["err"] == b""


def test_the_environment_is_dashs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # dash drops names it cannot hold and sets PWD to the folder it runs in.
    env = {"BAD-NAME": "1", "1X": "2", "GOOD_NAME": "3", "PWD": "/nowhere"}
    show = f"{PY} -c 'import os; print(*sorted(os.environb.items()), sep=chr(10))'"
    (out, logs, _), used = both_ways(tmp_path, monkeypatch, show, env=env)
    assert used and out[0] == "ok"
    lines = {eval(line) for line in logs["1.out"].splitlines()}  # (name, value) pairs, as Python shows them
    lines = {name + b"=" + value for name, value in lines}
    assert b"GOOD_NAME=3" in lines and not any(line.startswith((b"BAD-NAME=", b"1X=")) for line in lines)
    assert f"PWD={tmp_path / 'work'}".encode() in lines


@pytest.mark.parametrize(
    ("sig", "code", "note"),
    [
        ("SIGTERM", 143, "Terminated"),
        ("SIGKILL", 137, "Killed"),
        ("SIGSEGV", 139, "Segmentation fault"),
        ("SIGPIPE", 141, ""),
    ],
)
def test_a_death_by_signal_is_reported_as_dash_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: str, code: int, note: str
) -> None:
    kill = f"os.kill(os.getpid(), signal.{sig})"
    if sig != "SIGKILL":  # Python handles or ignores the others: back to the default first
        kill = f"signal.signal(signal.{sig}, signal.SIG_DFL); {kill}"
    template = f"{PY} -c 'import os, signal; {kill}'"
    (out, logs, _), used = both_ways(tmp_path, monkeypatch, template)
    assert used
    assert out == ("CommandFailed", code, f"{note}\n" if note else "")
    assert logs.get("1.err", b"") == (f"{note}\n".encode() if note else b"")


@pytest.mark.parametrize(
    "template",
    [
        "no-such-command-here {}",  # not found: 127
        "cat {} > no/such/folder/out",  # the redirection fails: dash's message, exit 2
        "cat < missing-input",
        "./script.sh",  # no #! line: dash runs it as a script
        "./not-executable",
    ],
)
def test_what_the_spawn_cannot_do_is_left_to_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    (out, _, _), _used = both_ways(tmp_path, monkeypatch, template, data="in.txt")
    if template == "./script.sh":
        assert out[0] == "ok" and out[1].result == {"stdout_tail": "from the script"}
    else:
        assert out[0] == "CommandFailed" and out[1] in (2, 126, 127) and out[2]


def test_each_command_line_gets_its_own_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A constant line is parsed once (the launcher keeps the last plan), but a line that differs
    # from the last one is parsed again: a plain command after a dash builtin starts without
    # dash, and the builtin after the plain command goes through it, in one processor.
    monkeypatch.setattr(spawn_glibc, "DIRECT", True)
    parsed: list[str] = []
    real = direct.parse

    def counting(cmd: str) -> Any:
        parsed.append(cmd)
        return real(cmd)

    monkeypatch.setattr(direct, "parse", counting)
    batch = tmp_path / "b"
    batch.mkdir(mode=0o700)
    code = f"import os; print(os.getppid() == {os.getpid()})"
    proc = ShellProcessor("{} -c '" + code + "'")
    programs = [PY, PY, "echo", PY, "echo"]
    got = [proc.run(_item(batch, program, seq)).result["stdout_tail"] for seq, program in enumerate(programs)]
    assert got == ["True", "True", f"-c {code}", "True", f"-c {code}"]
    assert len(parsed) == 4  # the second item's line was the first's
