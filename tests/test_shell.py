"""The shell-template processor: placeholders, quoting, results, failures, kills, logs (real processes)."""

from __future__ import annotations

import os
import signal
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.errors import CommandFailed, CommandKilled, InvalidCost, ItemTimeout, UserError
from batchtui.engine.shell.item import Item, ProcessOutput
from batchtui.engine.shell.processor import ShellProcessor
from batchtui.engine.shell.template import CommandTemplate, MissingField

from .conftest import assert_gone_soon, run_in_thread

# printf '%s\0' separates values with NUL, so values with newlines or spaces compare exactly.
PRINT_NUL = "printf '%s\\0'"


def make_item(
    batch: Path, data: Any, *, seq: int = 0, key: str | None = None, attempt: int = 1, kind: str = "lines"
) -> Item:
    return Item(
        seq=seq,
        key=key if key is not None else str(data),
        data=data,
        attempt=attempt,
        batch_dir=str(batch),
        kind=kind,
    )


def run_to_file(work: Path, batch: Path, template: str, data: Any, **kw: Any) -> bytes:
    """Run ``template`` (which writes to ./out) in ``work``; the bytes it wrote."""
    ShellProcessor(template, cwd=str(work)).run(make_item(batch, data, **kw))
    return (work / "out").read_bytes()


# -- placeholders ------------------------------------------------------------------------------


def test_every_placeholder_on_a_file_item(tmp_path: Path, batch: Path, work: Path) -> None:
    folder = tmp_path / "in put"
    folder.mkdir()
    path = folder / "my file.tar.gz"
    path.write_text("x")
    names = "{} {path} {name} {stem} {suffix} {parent} {seq} {key} {out}"
    template = f"{PRINT_NUL} {names} > out"
    data = run_to_file(work, batch, template, str(path), seq=5, key="k:5", kind="files")
    assert data.split(b"\0")[:-1] == [
        str(path).encode(),
        str(path).encode(),
        b"my file.tar.gz",
        b"my file.tar",
        b".gz",
        str(folder).encode(),
        b"5",
        b"k:5",
        str(batch / "out" / "5").encode(),
    ]
    out_dir = batch / "out" / "5"
    assert out_dir.is_dir()
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((batch / "out").stat().st_mode) == 0o700


def test_path_parts_of_names_without_suffix_or_folder(batch: Path) -> None:
    template = CommandTemplate("x {name} {stem} {suffix} {parent}")
    assert template.render(make_item(batch, "/a/.bashrc"), None) == "x .bashrc .bashrc '' /a"
    assert template.render(make_item(batch, "plain"), None) == "x plain plain '' ."
    assert template.render(make_item(batch, "/top"), None) == "x top top '' /"


def test_every_placeholder_on_a_record_item(batch: Path, work: Path) -> None:
    record = {
        "name": "Ann O'Neil",
        "city": "Paris; touch pwned",
        "age": 42,
        "score": 1.5,
        "ok": True,
        "none": None,
        "tags": ["a", "b"],
        "user-id": "u1",
    }
    template = (
        f"{PRINT_NUL} {{}} {{path}} {{name}} {{city}} {{age}} {{score}} {{ok}} {{none}} {{tags}} "
        "{user-id} {seq} {key} > out"
    )
    data = run_to_file(work, batch, template, record, seq=3, key="rec-3", kind="csv")
    whole = orjson.dumps(record)
    assert data.split(b"\0")[:-1] == [
        whole,
        whole,  # {path}: a record has no path, so its main value
        b"Ann O'Neil",  # a field called "name" stands in for the built-in
        b"Paris; touch pwned",
        b"42",
        b"1.5",
        b"true",
        b"null",
        b'["a","b"]',
        b"u1",
        b"3",
        b"rec-3",
    ]
    assert not list(work.parent.rglob("pwned"))
    fields = {"city", "age", "score", "ok", "none", "tags", "user-id"}
    assert CommandTemplate(template).fields == frozenset(fields)


def test_missing_field_fails_the_item_with_a_clear_message(batch: Path, work: Path) -> None:
    proc = ShellProcessor("touch started; echo {title}", cwd=str(work))
    with pytest.raises(MissingField) as err:
        proc.run(make_item(batch, {"name": "x"}, kind="jsonl"))
    assert str(err.value) == "item has no field 'title'"
    assert isinstance(err.value, KeyError)
    with pytest.raises(MissingField, match="only CSV and JSONL records have fields"):
        proc.run(make_item(batch, "a line"))
    assert not (work / "started").exists()


def test_fields_and_uses_out() -> None:
    template = CommandTemplate("cp {} {out}/{name} && echo {title} {user_id} {seq}")
    assert template.fields == frozenset({"title", "user_id"})
    assert template.uses_out
    assert not CommandTemplate("echo {}").uses_out
    assert CommandTemplate("echo {}").fields == frozenset()


def test_literal_braces(batch: Path, work: Path) -> None:
    template = "printf %s '{{a}}' {{}} \"{{{}}}\" > out; awk 'BEGIN {{ printf \"!\" }}' >> out"
    assert run_to_file(work, batch, template, "v a") == b"{a}{}{v a}!"


@pytest.mark.parametrize(
    "template",
    [
        "",
        "   ",
        "echo {",
        "echo }",
        "echo {a b}",
        "echo { }",
        "echo {0}",
        "echo {x:y}",
        "echo {a,b}",
        "awk '{print $1}' {}",
        "echo {a{b}",
    ],
)
def test_malformed_templates_are_user_errors(template: str) -> None:
    with pytest.raises(UserError):
        CommandTemplate(template)


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("echo ${HOME}", "after a '\\$'"),
        ('echo "${}"', "after a '\\$'"),
        ("echo `cat {}`", "backticks"),
        ('echo "`cat {}`"', "backticks"),
        ("echo hi # {}", "comment"),
        ("echo $(( {} + 1 ))", r"\$\(\(...\)\)"),
        ("(( x = {} ))", r"\$\(\(...\)\)"),
        ("echo ${{x:-{}}}", r"\$\{...\}"),
        ("echo $'a{}'", r"\$'...'"),
        ("cat <<EOF\n{}\nEOF", "here-document"),
        ("cat <<-'E O F'\nx\n\tE O F x\n{}\nE O F", "here-document"),
        ("echo \\{}", "backslash"),
        ('echo "a\\{}"', "backslash"),
        ("echo '{}", "unterminated"),
        ('echo "{}', "unterminated"),
    ],
)
def test_placeholders_where_no_quoting_is_safe_are_refused(template: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        CommandTemplate(template)


@pytest.mark.parametrize(
    "template",
    [
        "echo ${{HOME}} {}",
        "echo $HOME{}",
        "cat <<EOF\nit's $HOME\nEOF\necho {}",
        "cat <<-EOF >{out}/x\n\tbody\n\tEOF\necho {}",
        "echo {} # it's a comment",
        "echo a#{}",
        'echo "$(basename "{}")"',
        "(cd / && echo {}) | cat",
        "echo $((1 + 2)) {}",
        "echo \\\\{}",
    ],
)
def test_ordinary_templates_are_accepted(template: str) -> None:
    CommandTemplate(template)


def test_values_are_wrapped_to_fit_the_templates_own_quotes(batch: Path) -> None:
    item = make_item(batch, "a b$")
    assert CommandTemplate("echo {}").render(item, None) == "echo 'a b$'"
    assert CommandTemplate('echo "x{}y"').render(item, None) == 'echo "x"\'a b$\'"y"'
    assert CommandTemplate("echo 'x{}y'").render(item, None) == "echo 'x''a b$''y'"
    # Values that need no quoting stay as they are, inside quotes too.
    assert CommandTemplate('echo "{name}"').render(make_item(batch, "/d/f.txt"), None) == 'echo "f.txt"'


HOSTILE = [
    "$(touch pwned)",
    "`touch pwned`",
    "; touch pwned; x",
    "&& touch pwned ||",
    "| touch pwned",
    "> pwned",
    "a'b\"c",
    "' ; touch pwned ; '",
    '" ; touch pwned ; "',
    "\\'; touch pwned; \\\"",
    "line1\nline2\ntouch pwned",
    "-n",
    "--help",
    "héllo wörld ✓ 日本",
    "[bold]x[/]",
    "*",
    "~",
    "$HOME ${PATH} $((1+1)) !!",
    "{} {{}}",
    "",
    " leading and trailing spaces ",
    "\ttab\r",
]

QUOTE_TEMPLATES = [
    ("printf %s {} > out", "{}"),
    ('printf %s "{}" > out', "{}"),
    ("printf %s '{}' > out", "{}"),
    ('printf %s "<{}>" > out', "<{}>"),
    ("printf %s 'a {} b' > out", "a {} b"),
    ('printf %s "$(printf %s "{}")" > out', "{}"),
    ('x={}; printf %s "$x" > out', "{}"),
    ("case x in x) printf %s {} > out;; esac", "{}"),
    ('printf %s "$(case x in x) printf %s "{}";; esac)" > out', "{}"),
    ('(case x in (x) printf %s "<{}>";; esac) > out', "<{}>"),
    ("printf %s \"$(case esac in x) ;; esac) (case\"'{}' > out", " (case{}"),
]


SHELLS = [sh for sh in ("/bin/sh", "/bin/bash") if os.path.exists(sh)]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("template", "expected"), QUOTE_TEMPLATES)
def test_hostile_values_reach_the_command_literally(
    tmp_path: Path, batch: Path, work: Path, template: str, expected: str, shell: str
) -> None:
    proc = ShellProcessor(template, cwd=str(work), shell=shell)
    for value in HOSTILE:
        proc.run(make_item(batch, value))
        assert (work / "out").read_bytes() == expected.replace("{}", value).encode(), value
    assert not list(tmp_path.rglob("pwned"))


def test_hostile_record_fields_and_keys(tmp_path: Path, batch: Path, work: Path) -> None:
    for value in HOSTILE:
        record = {"f": value}
        out = run_to_file(work, batch, f"{PRINT_NUL} {{f}} {{key}} > out", record, key=value, kind="jsonl")
        assert out == value.encode() + b"\0" + value.encode() + b"\0"
    assert not list(tmp_path.rglob("pwned"))


def test_a_nul_byte_fails_the_item_before_running(batch: Path, work: Path) -> None:
    proc = ShellProcessor("touch started; printf %s {} > out", cwd=str(work))
    with pytest.raises(ValueError, match=r"value of \{\} contains a NUL byte"):
        proc.run(make_item(batch, "a\x00b"))
    with pytest.raises(ValueError, match=r"value of \{f\} contains a NUL byte"):
        record = make_item(batch, {"f": "\x00"}, kind="csv")
        ShellProcessor("touch started; echo {f}", cwd=str(work)).run(record)
    assert not (work / "started").exists()
    # A record's {} is its JSON text, where a NUL is the escape \u0000: that runs.
    proc.run(make_item(batch, {"f": "a\x00b"}, kind="jsonl"))
    assert (work / "out").read_bytes() == b'{"f":"a\\u0000b"}'


def test_a_value_too_big_for_exec_fails_the_item_clearly(batch: Path) -> None:
    # Named with its size (not "the command line (6 characters)", as the template's length was).
    with pytest.raises(ValueError, match=r"one argument may have .*: \{\} is 300,000 bytes"):
        ShellProcessor("true {}").run(make_item(batch, "x" * 300_000))


# -- results -----------------------------------------------------------------------------------


def run_out(batch: Path, template: str, **kw: Any) -> ProcessOutput:
    return ShellProcessor(template, **kw).run(make_item(batch, "v"))


def test_json_last_line_is_the_result_with_its_cost(batch: Path) -> None:
    got = run_out(batch, "echo noise; echo '{{\"ok\": true, \"cost\": 0.25}}'; echo; echo '  '")
    assert got == ProcessOutput({"ok": True, "cost": 0.25}, 0.25)
    assert run_out(batch, "echo '{{\"cost\": 2}}'") == ProcessOutput({"cost": 2}, 2.0)
    assert isinstance(run_out(batch, "echo '{{\"cost\": 2}}'").cost, float)
    # A cost that is given but no finite number >= 0 fails the item (test_results_checked.py).
    with pytest.raises(InvalidCost):
        run_out(batch, 'echo \'{{"cost": "3"}}\'')
    with pytest.raises(InvalidCost):
        run_out(batch, "echo '{{\"cost\": true}}'")
    assert run_out(batch, "echo '{{\"n\": 1}}'") == ProcessOutput({"n": 1}, None)


def test_other_stdout_becomes_a_tail_and_no_stdout_none(batch: Path) -> None:
    assert run_out(batch, "echo noise; echo '[1, 2]'") == ProcessOutput({"stdout_tail": "noise\n[1, 2]"})
    assert run_out(batch, "echo '{{broken'") == ProcessOutput({"stdout_tail": "{broken"})
    assert run_out(batch, "true") == ProcessOutput(None)
    assert run_out(batch, "echo; echo '   '") == ProcessOutput(None)
    long = run_out(batch, "i=0; while [ $i -lt 100 ]; do printf 0123456789; i=$((i+1)); done; echo END")
    assert long.result == {"stdout_tail": ("0123456789" * 20 + "END")[-200:]}


def test_nonzero_exit_raises_command_failed_with_stderr_tail(batch: Path) -> None:
    with pytest.raises(CommandFailed) as err:
        run_out(batch, "echo first >&2; echo 'bad input' >&2; exit 3")
    assert err.value.exit_code == 3
    assert err.value.stderr_tail == "first\nbad input\n"
    assert str(err.value) == "exit 3: bad input"
    with pytest.raises(CommandFailed) as err:
        run_out(batch, "head -c 20000 /dev/zero | tr '\\0' e >&2; echo END >&2; exit 1")
    assert len(err.value.stderr_tail) == 8192
    assert err.value.stderr_tail.endswith("eeeeEND\n")


def test_death_by_signal_raises_command_killed(batch: Path) -> None:
    with pytest.raises(CommandKilled) as err:
        run_out(batch, "echo dying >&2; kill -TERM $$")
    assert err.value.signum == signal.SIGTERM
    assert err.value.stderr_tail == "dying\n"


# -- process groups ----------------------------------------------------------------------------


def read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def test_timeout_kills_the_whole_group(batch: Path) -> None:
    proc = ShellProcessor(
        "echo $$ > {out}/pids; sleep 30 & echo $! >> {out}/pids; echo late >&2; sleep 30", timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(ItemTimeout) as err:
        proc.run(make_item(batch, "v", seq=4))
    assert time.monotonic() - started < 10  # not the 30 s of its sleeps (a loaded machine adds seconds)
    assert err.value.seconds == 0.5
    assert err.value.stderr_tail == "late\n"
    pids = read_pids(batch / "out" / "4" / "pids")
    assert len(pids) == 2
    for pid in pids:
        assert_gone_soon(pid)


def test_background_children_die_when_the_shell_exits(batch: Path) -> None:
    started = time.monotonic()
    got = ShellProcessor("sleep 30 & echo $! > {out}/bg; echo done").run(make_item(batch, "v"))
    assert time.monotonic() - started < 5
    assert got.result == {"stdout_tail": "done"}
    assert_gone_soon(read_pids(batch / "out" / "0" / "bg")[0])


def counting_kills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The process groups the processor kills, in order (the kills still happen)."""
    from batchtui.engine.shell import processor as processor_mod

    kills: list[int] = []
    real = processor_mod._killpg

    def killpg(pgid: int) -> None:
        kills.append(pgid)
        real(pgid)

    monkeypatch.setattr(processor_mod, "_killpg", killpg)
    return kills


def test_one_group_kill_an_item(batch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the shell's exit is seen its group is killed, and not again before the reap (a
    system call that holds the GIL, on every item)."""
    kills = counting_kills(monkeypatch)
    proc = ShellProcessor("echo $$ > {out}/pid")
    for seq in range(3):
        proc.run(make_item(batch, "v", seq=seq))
    assert kills == [read_pids(batch / "out" / str(seq) / "pid")[0] for seq in range(3)]


def test_a_wait_cut_short_by_an_error_still_kills_the_group_before_the_reap(
    batch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the wait ends another way than the shell's exit (here an error from the poll), the
    group is killed on the way out, before the shell is reaped: reaping a shell that still
    runs would wait for it (30 s here), and its background job would live on."""
    from batchtui.engine.shell import wait as wait_mod

    kills = counting_kills(monkeypatch)
    real_watch = wait_mod.watch
    bg = batch / "out" / "3" / "bg"

    def failing_watch(child: Any) -> Any:
        watch = real_watch(child)

        def wait(timeout_ms: int) -> list[int]:
            deadline = time.monotonic() + 10
            while not (bg.exists() and bg.read_text().endswith("\n")):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            raise RuntimeError("the poll failed")

        watch.wait = wait
        return watch

    monkeypatch.setattr(wait_mod, "watch", failing_watch)
    proc = ShellProcessor("echo $$ > {out}/pid; sleep 30 & echo $! > {out}/bg; sleep 30")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the poll failed"):
        proc.run(make_item(batch, "v", seq=3))
    assert time.monotonic() - started < 10
    shell = read_pids(batch / "out" / "3" / "pid")[0]
    assert kills == [shell]
    assert_gone_soon(read_pids(bg)[0])
    with pytest.raises(ProcessLookupError):
        os.kill(shell, 0)  # reaped, not left a zombie


def test_kill_from_another_thread(batch: Path) -> None:
    proc = ShellProcessor("sleep 30 & echo $! > {out}/bg; sleep 30")
    assert proc.kill(7) is False
    thread, box = run_in_thread(proc, make_item(batch, "v", seq=7))
    deadline = time.monotonic() + 10
    while not ((batch / "out" / "7" / "bg").exists() and (batch / "out" / "7" / "bg").read_text().endswith("\n")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.kill(7) is True  # running (its shell's start may not have returned yet)
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(box["exc"], CommandKilled)
    assert box["exc"].signum == signal.SIGKILL
    assert proc.kill(7) is False
    assert_gone_soon(read_pids(batch / "out" / "7" / "bg")[0])


def test_kill_all(batch: Path) -> None:
    proc = ShellProcessor("touch {out}/started; sleep 30")
    runs = [run_in_thread(proc, make_item(batch, "v", seq=seq)) for seq in (1, 2)]
    deadline = time.monotonic() + 5
    while not all((batch / "out" / str(seq) / "started").exists() for seq in (1, 2)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.kill_all() == 2  # both run (a shell whose start has not returned yet counts)
    for thread, box in runs:
        thread.join(5)
        assert isinstance(box["exc"], CommandKilled)
    assert proc.kill_all() == 0


def test_many_quick_commands_in_parallel(batch: Path) -> None:
    proc = ShellProcessor("true {}")
    items = [make_item(batch, f"v{i}", seq=i) for i in range(300)]
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(proc.run, items))
    assert results == [ProcessOutput(None)] * 300
    assert time.monotonic() - started < 10
    assert not (batch / "logs").exists()


# -- logs and environment ----------------------------------------------------------------------


def test_logs_only_for_non_empty_streams(batch: Path) -> None:
    proc = ShellProcessor("true")
    proc.run(make_item(batch, "v"))
    assert not (batch / "logs").exists()

    ShellProcessor("echo hello").run(make_item(batch, "v", seq=1))
    logs = batch / "logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert (logs / "1.1.out").read_bytes() == b"hello\n"
    assert stat.S_IMODE((logs / "1.1.out").stat().st_mode) == 0o600
    assert not (logs / "1.1.err").exists()

    with pytest.raises(CommandFailed):
        ShellProcessor("echo oops >&2; exit 1").run(make_item(batch, "v", seq=2))
    assert (logs / "2.1.err").read_bytes() == b"oops\n"
    assert stat.S_IMODE((logs / "2.1.err").stat().st_mode) == 0o600
    assert not (logs / "2.1.out").exists()


def test_each_attempt_keeps_its_own_logs(batch: Path) -> None:
    logs = batch / "logs"
    with pytest.raises(CommandFailed):
        ShellProcessor("echo one; echo err1 >&2; exit 1").run(make_item(batch, "v", seq=3))
    ShellProcessor("echo two").run(make_item(batch, "v", seq=3, attempt=2))
    ShellProcessor("true").run(make_item(batch, "v", seq=3, attempt=3))
    assert sorted(p.name for p in logs.iterdir()) == ["3.1.err", "3.1.out", "3.2.out"]
    assert (logs / "3.1.out").read_bytes() == b"one\n"
    assert (logs / "3.1.err").read_bytes() == b"err1\n"
    assert (logs / "3.2.out").read_bytes() == b"two\n"


def test_logs_keep_only_the_last_log_limit_bytes(batch: Path) -> None:
    # 50 MB through the pipe; only a tail is kept in memory and on disk.
    proc = ShellProcessor("head -c 50000000 /dev/zero | tr '\\0' a; echo END", log_limit=1000)
    got = proc.run(make_item(batch, "v"))
    data = (batch / "logs" / "0.1.out").read_bytes()
    assert len(data) == 1000
    assert data == b"a" * 996 + b"END\n"
    assert got.result == {"stdout_tail": ("a" * 200 + "END")[-200:]}
    ShellProcessor("echo quiet", log_limit=0).run(make_item(batch, "v", seq=1))
    assert not (batch / "logs" / "1.1.out").exists()


def test_environment_carries_the_item(batch: Path, work: Path) -> None:
    proc = ShellProcessor(
        'printf \'%s\\0\' "$BATCHTUI_SEQ" "$BATCHTUI_ATTEMPT" "$BATCHTUI_BATCH_DIR" '
        '"$BATCHTUI_ITEM_JSON" "$EXTRA" "$HOME" > out',
        env={"EXTRA": "yes"},
        cwd=str(work),
    )
    record = {"a": "$(touch pwned)", "n": 1}
    proc.run(make_item(batch, record, seq=9, key="k9", attempt=2, kind="jsonl"))
    seq, attempt, batch_dir, item_json, extra, home = (work / "out").read_bytes().split(b"\0")[:-1]
    assert (seq, attempt, batch_dir, extra) == (b"9", b"2", str(batch).encode(), b"yes")
    assert orjson.loads(item_json) == {"seq": 9, "key": "k9", "data": record, "attempt": 2}
    assert home == os.environ.get("HOME", "").encode()
    assert not (work / "pwned").exists()


def test_commands_run_in_cwd(batch: Path, work: Path) -> None:
    assert run_out(batch, "pwd", cwd=str(work)).result == {"stdout_tail": str(work)}
    with pytest.raises(UserError, match="does not exist"):
        ShellProcessor("true", cwd=str(work / "gone"))
