"""Preflight never refuses a valid command (issue 20, point 6): the first word of each simple
command it can parse with certainty is checked, what it cannot tell is a warning.

Each command of the table is first shown to be one /bin/sh accepts (``sh -n``), then the
preflight must let it through (no FAIL) having found exactly the programs listed. A plain
missing program, wherever it sits, is still refused.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from batchtui.engine.preflight import Preflight, check_processor
from batchtui.engine.processors import shell_spec
from batchtui.engine.shell.programs import scan_programs

#: (template, the programs the preflight finds in it, in order). Every template is valid sh.
VALID: list[tuple[str, list[str]]] = [
    ("n=$(cat {path}); echo $n", ["cat", "echo"]),
    ("wc -l < {path}", ["wc"]),
    ("gzip -k {path}", ["gzip"]),
    ("LANG=C sort {path} > {out}/sorted.txt", ["sort"]),
    ("a=1 b=2 env", ["env"]),
    ("cat {path} | tr a-z A-Z | head -n 3", ["cat", "tr", "head"]),
    ("test -s {path} && wc -c < {path} || echo empty", ["test", "wc", "echo"]),
    ("grep -q x {path}; echo $?", ["grep", "echo"]),
    ("x=`date +%s` && echo $x", ["date", "echo"]),
    ('echo "$(date +%s) $(basename {path})"', ["date", "basename", "echo"]),
    ("( cd {parent} && ls -la )", ["cd", "ls"]),
    ("{{ sort {path}; uniq -c {path}; }} > {out}/x", ["sort", "uniq"]),
    ("if grep -q x {path}; then echo yes; else echo no; fi", ["grep", "echo", "echo"]),
    ("for f in a b c; do printf '%s\\n' $f; done", ["printf"]),
    ("while read -r line; do echo $line; done < {path}", ["read", "echo"]),
    ("until true; do sleep 1; done", ["true", "sleep"]),
    ("case {name} in *.gz) zcat {path};; *) cat {path};; esac", ["zcat", "cat"]),
    # count is a first word too, of a function the template defines: not looked for on PATH.
    ("count() {{ wc -l; }}; count < {path}", ["wc", "count"]),
    ("cat <<EOF\nhello $(nosuchprog_in_a_heredoc)\nEOF", ["cat"]),
    ("cat <<'EOF' | sort\nb\na\nEOF\n", ["cat", "sort"]),
    ("echo $(( 6 * 7 ))", ["echo"]),
    ("[ -f {path} ] && cat {path}", ["[", "cat"]),
    ("exec 3< {path}; cat <&3", ["exec", "cat"]),
    ("cat {path} 2>&1 >/dev/null | tee -a {out}/log", ["cat", "tee"]),
    ("! grep -q secret {path}", ["grep"]),
    ("set -e; mkdir -p {out}; cp {path} {out}/", ["set", "mkdir", "cp"]),
    ("echo {path} # a comment; nosuchprog", ["echo"]),
    ("'cat' {path}", ["cat"]),
    ("/bin/sh -c 'exit 0'", ["/bin/sh"]),
    ("n=$(cat {path} | wc -l); test $n -gt 0 && echo $n", ["cat", "wc", "test", "echo"]),
    ("echo a \\\n  b", ["echo"]),
    ("time sleep 0", ["sleep"]),
]

#: Commands whose program is made at run time: a warning, no refusal.
UNTELLABLE: list[str] = [
    "$CMD {path}",
    "{path} --version",
    '"$(command -v cat)" {path}',
]

#: A program that is nowhere, wherever it sits: refused.
MISSING: list[str] = [
    "nosuchprog {path}",
    "cat {path} | nosuchprog",
    "n=$(nosuchprog {path}); echo $n",
    "if true; then nosuchprog; fi",
    "x=1 nosuchprog {path} > /dev/null",
]


def _sh_accepts(template: str) -> bool:
    text = template.replace("{{", "\x01").replace("}}", "\x02")
    for name in ("path", "out", "parent", "name"):
        text = text.replace("{" + name + "}", "'/tmp/a b$c'")
    text = text.replace("\x01", "{").replace("\x02", "}")
    return subprocess.run(["/bin/sh", "-n", "-c", text], capture_output=True, check=False).returncode == 0


def _preflight(template: str, cwd: Path) -> Preflight:
    pf = Preflight()
    spec = shell_spec(template).model_copy(update={"cwd": str(cwd)})
    check_processor(pf, spec, None)
    return pf


@pytest.mark.parametrize(("template", "programs"), VALID, ids=[t for t, _ in VALID])
def test_a_valid_command_is_never_refused(template: str, programs: list[str], tmp_path: Path) -> None:
    assert _sh_accepts(template), "the table holds only commands sh accepts"
    scan = scan_programs(template)
    assert scan.programs == programs
    assert scan.uncertain == []
    pf = _preflight(template, tmp_path)
    assert pf.proceed, [c for c in pf.checks if c.level != "ok"]
    assert [c.level for c in pf.checks if c.name == "command"] == ["ok"]


@pytest.mark.parametrize("template", UNTELLABLE)
def test_a_program_made_at_run_time_is_a_warning(template: str, tmp_path: Path) -> None:
    assert _sh_accepts(template)
    pf = _preflight(template, tmp_path)
    assert pf.proceed
    warned = [c for c in pf.checks if c.level == "warn"]
    assert len(warned) == 1 and warned[0].message.startswith("not checked: the command ")


@pytest.mark.parametrize("template", MISSING)
def test_a_missing_program_is_refused(template: str, tmp_path: Path) -> None:
    pf = _preflight(template, tmp_path)
    assert not pf.proceed
    assert [c.message for c in pf.checks if c.level == "fail"] == ["'nosuchprog' is not on PATH"]


def test_what_it_cannot_parse_is_a_warning_never_a_refusal(tmp_path: Path) -> None:
    # An unclosed here-document: sh itself would complain at run time; the preflight only warns.
    pf = _preflight("cat <<EOF\nno end", tmp_path)
    assert pf.proceed
    assert [c.message for c in pf.checks if c.level == "warn"] == ["not checked: a here-document with no end"]


def test_the_run_command_starts_with_such_a_command(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    res = invoke_cli(["run", str(src), "--cmd", "n=$(echo {}); echo $n", "--headless"])
    assert res.returncode == 0, res.stderr
    assert "is not on PATH" not in res.stderr


def test_dry_run_shows_the_commands_exactly_as_they_would_run(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "sp ace"
    src.mkdir()
    names = ["a $HOME b.txt", "it's.txt", "c.txt", "d.txt", "e.txt", "f.txt", "g.txt"]
    for name in names:
        (src / name).write_text(f"<{name}>")
    res = invoke_cli(["run", str(src), "--cmd", 'cat {path}; echo " {name}"', "--dry-run"])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"the first 5 items would run (in {tmp_path}):"
    assert lines[1] == f"""  [0] cat '{src}/a $HOME b.txt'; echo " "'a $HOME b.txt'"\""""
    assert len([line for line in lines if line.startswith("  [")]) == 5  # the default

    # What --json gives is the argv itself: run it, and the item's own file is what it reads.
    res = invoke_cli(["run", str(src), "--cmd", 'cat {path}; echo " {name}"', "--dry-run", "--json"])
    runs = json.loads(res.stdout)["runs"]
    assert [r["seq"] for r in runs] == [0, 1, 2, 3, 4]
    for run, name in zip(runs, sorted(names), strict=False):  # a directory is walked in name order
        assert run["argv"][:2] == ["/bin/sh", "-c"]
        done = subprocess.run(run["argv"], capture_output=True, text=True, check=False)
        assert done.stdout == f"<{name}> {name}\n"

    none = invoke_cli(["run", str(src), "--cmd", "cat {path}", "--dry-run", "--show-commands", "0"])
    assert "would run" not in none.stdout


def test_dry_run_shows_the_call_each_item_gets(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    procs = Path(__file__).parent / "procs.py"
    res = invoke_cli(["run", str(src), "--call", f"{procs}:noop", "--dry-run", "--show-commands", "1"])
    assert res.returncode == 0, res.stderr
    assert f"  [0] {procs}:noop(item)  # item.seq=0, item.key='one', item.data='one'" in res.stdout.splitlines()


def test_a_dry_run_says_when_run_would_refuse(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    # The dry run answers "what would run": a program run's preflight cannot find means run
    # would refuse; the dry run says it (exit 2), with the commands still shown.
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    res = invoke_cli(["run", str(src), "--cmd", "n=$(cat {}); echo $n | nosuchprog2", "--dry-run"])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "[FAIL] command: 'nosuchprog2' is not on PATH" in res.stderr
    assert "  [0] n=$(cat one); echo $n | nosuchprog2" in res.stdout.splitlines()
    assert res.stdout.rstrip().endswith("run would refuse to start (preflight FAIL above)")
    res = invoke_cli(["run", str(src), "--cmd", "nosuchprog2 {}", "--dry-run", "--json"])
    assert res.returncode == 2 and json.loads(res.stdout)["preflight"] == "fail"
    ok = invoke_cli(["run", str(src), "--cmd", "cat {}", "--dry-run", "--json"])
    assert ok.returncode == 0 and json.loads(ok.stdout)["preflight"] == "ok"


def test_a_scheduler_without_the_dask_executor_is_refused_not_ignored(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    # The items ran on local threads, the named scheduler accepted and never asked: a user who set
    # BATCHTUI_SCHEDULER (or scheduler in a config file) believed the cluster ran them.
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    out = tmp_path / "out"
    for how in (["--scheduler", "tcp://127.0.0.1:9"], []):
        env = {} if how else {"BATCHTUI_SCHEDULER": "tcp://127.0.0.1:9"}
        res = invoke_cli(["run", str(src), "--cmd", "echo {}", "--headless", "--output-dir", str(out), *how], env=env)
        assert res.returncode == 2, res.stdout + res.stderr
        assert (
            "[FAIL] config: --scheduler applies to the dask executor only; this batch would run on the thread executor"
        ) in res.stderr
    assert not out.exists()  # refused before a batch was made
