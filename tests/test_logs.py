"""Shell items' per-attempt logs (engine/logs.py, the shell processor's LogFile) and `batchtui logs`:
output written as it comes, cut to the last --log-limit bytes, every attempt kept, followed live."""

from __future__ import annotations

import os
import pty
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.logs import LogChunk, attempt_logs, follow, log_path
from batchtui.engine.processors import python_spec, shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.shell.item import Item
from batchtui.engine.shell.itemfiles import LogFile
from batchtui.engine.shell.processor import ShellProcessor
from batchtui.engine.sources import build_spec
from batchtui.engine.store.queries import ItemQueries
from batchtui.tui.cli.group import main as cli

from .conftest import CLI, cli_env, wait_until

LIMIT = 100


def _numbered(n: int, width: int = 25) -> list[bytes]:
    """``n`` distinct pieces of output of ``width`` bytes each (no two alike: a lost or
    repeated piece shows)."""
    return [f"{i:0{width - 1}d}\n".encode() for i in range(n)]


def _steps(batch: Path, steps: list[list[tuple[int, str, bytes]]], sizes: list[int]) -> Iterator[bool]:
    """Used as ``is_done``: each call carries out one step of writes (attempt, stream, bytes)
    through LogFiles as the shell processor makes them, then says True once all are done. The
    follower reads between two calls, so a step is what it finds new at its next read."""
    files: dict[tuple[int, str], LogFile] = {}
    for step in steps:
        for attempt, stream, data in step:
            log = files.get((attempt, stream))
            if log is None:
                log = files[attempt, stream] = LogFile(str(batch), 7, attempt, stream, LIMIT)  # type: ignore[arg-type]
            log.add(data)
            assert log.fd is not None
            sizes.append(os.fstat(log.fd).st_size)
        yield False
    for log in files.values():
        log.close()
    while True:
        yield True


def _follow(batch: Path, steps: list[list[tuple[int, str, bytes]]], **kw: object) -> tuple[list[LogChunk], list[int]]:
    sizes: list[int] = []
    gen = _steps(batch, steps, sizes)
    chunks = list(follow(batch, 7, is_done=lambda: next(gen), interval=0, limit=LIMIT, **kw))  # type: ignore[arg-type]
    return chunks, sizes


def test_a_follower_reads_every_byte_through_the_cuts_and_the_file_stays_bounded(batch: Path) -> None:
    # 10x the limit, 25 bytes a step: the file is cut at 2x the limit again and again.
    pieces = _numbered(40)
    chunks, sizes = _follow(batch, [[(1, "out", p)] for p in pieces])
    assert b"".join(c.data for c in chunks) == b"".join(pieces)
    assert not any(c.gap for c in chunks)
    assert max(sizes) < 2 * LIMIT  # cut as it reached 2x: disk use stays bounded while it runs
    assert sizes.count(LIMIT) >= 4  # the cuts did happen
    final = log_path(batch, 7, 1, "out").read_bytes()
    assert final == b"".join(pieces)[-LIMIT:]  # at the end: the last --log-limit bytes
    assert sorted(p.name for p in (batch / "logs").iterdir()) == ["7.1.out"]  # no cut copy left


def test_a_follower_outrun_by_several_cuts_says_so_and_goes_on_at_the_end(batch: Path) -> None:
    pieces = _numbered(40)
    first, burst, rest = pieces[:2], pieces[2:30], pieces[30:]
    steps = [[(1, "out", b"".join(first))], [(1, "out", p) for p in burst], *[[(1, "out", p)] for p in rest]]
    chunks, _ = _follow(batch, steps)
    gaps = [i for i, c in enumerate(chunks) if c.gap]
    assert len(gaps) == 1
    full = b"".join(pieces)
    before = b"".join(c.data for c in chunks[: gaps[0]])
    after = b"".join(c.data for c in chunks[gaps[0] :])
    # Before the gap: the start of the output, as far as the file it had open went; after it:
    # what the file held then (its last bytes) and everything after. Nothing twice.
    assert full.startswith(before) and len(before) >= len(b"".join(first))
    assert full.endswith(after) and after.endswith(b"".join(rest)) and len(after) >= LIMIT
    assert len(before) + len(after) < len(full)


def test_one_big_write_never_makes_the_file_bigger_than_twice_the_limit(batch: Path) -> None:
    log = LogFile(str(batch), 1, 1, "err", LIMIT)
    log.add(b"x" * (50 * LIMIT) + b"END\n")
    assert log.fd is not None and os.fstat(log.fd).st_size == LIMIT
    log.close()
    assert log_path(batch, 1, 1, "err").read_bytes() == (b"x" * LIMIT + b"END\n")[-LIMIT:]


def test_a_follower_moves_on_to_the_next_attempt_and_a_fixed_attempt_ends_there(batch: Path) -> None:
    steps = [
        [(1, "out", b"try one\n"), (1, "err", b"boom\n")],
        [(2, "out", b"try two\n")],
        [(2, "out", b"done\n")],
    ]
    chunks, _ = _follow(batch, steps)
    assert [(c.attempt, c.stream) for c in chunks][:2] == [(1, "out"), (1, "err")]
    assert [c.data for c in chunks[:2]] == [b"try one\n", b"boom\n"]
    assert {(c.attempt, c.stream) for c in chunks[2:]} == {(2, "out")}
    assert b"".join(c.data for c in chunks[2:]) == b"try two\ndone\n"
    # Attempt 1 alone: its output, then the end (attempt 2 has begun), without waiting for the item.
    gen = iter([False] * 3)
    only = list(follow(batch, 7, attempt=1, is_done=lambda: next(gen), interval=0))
    assert [c.data for c in only] == [b"try one\n", b"boom\n"]
    assert [(a.attempt, a.out is not None, a.err is not None) for a in attempt_logs(batch, 7)] == [
        (1, True, True),
        (2, True, False),
    ]
    assert attempt_logs(batch, 7, upto=0) == attempt_logs(batch, 7)  # the running one found past upto


def test_a_command_writing_ten_times_the_limit_keeps_its_last_limit_bytes(batch: Path) -> None:
    proc = ShellProcessor("i=0; while [ $i -lt 400 ]; do printf '%09d\\n' $i; i=$((i+1)); done", log_limit=400)
    proc.run(Item(0, "k", "v", 1, str(batch)))
    expected = b"".join(b"%09d\n" % i for i in range(400))  # 4000 bytes
    assert log_path(batch, 0, 1, "out").read_bytes() == expected[-400:]
    assert not log_path(batch, 0, 1, "err").exists()  # nothing on stderr: no file


def _run_batch(tmp_path: Path, cmd: str, lines: list[str], **flags: object) -> Path:
    source = tmp_path / "items.txt"
    source.write_text("".join(f"{line}\n" for line in lines))
    config = load_config({"output_dir": str(tmp_path / "out"), **flags}, environ={})
    batch = create_batch(config, build_spec([str(source)]), shell_spec(cmd))
    BatchRunner(batch, config=config).run()
    return batch.path


def test_attempts_one_and_two_of_a_retried_item_keep_separate_logs(tmp_path: Path) -> None:
    cmd = 'if [ "$BATCHTUI_ATTEMPT" = 1 ]; then echo "first "{}; echo "bad "{} >&2; exit 75; fi; echo "second "{}'
    path = _run_batch(tmp_path, cmd, ["a"], workers=1, backoff=0.0, backoff_max=0.0)
    with ItemQueries(path / "items.db") as store:
        row = store.row(0)
    assert row is not None and (row.status, row.attempts) == ("complete", 2)
    logs = path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["0.1.err", "0.1.out", "0.2.out"]
    assert (logs / "0.1.out").read_text() == "first a\n"
    assert (logs / "0.1.err").read_text() == "bad a\n"
    assert (logs / "0.2.out").read_text() == "second a\n"
    # `batchtui logs` shows the latest attempt, or the one asked for.
    runner = CliRunner()
    assert runner.invoke(cli, ["logs", str(path), "0"]).output == "second a\n"
    assert runner.invoke(cli, ["logs", str(path), "0", "--attempt", "1"]).output == "first a\n"
    got = runner.invoke(cli, ["logs", str(path), "0", "--attempt", "1", "--err"])
    assert (got.exit_code, got.output) == (0, "bad a\n")


def test_logs_refuses_what_is_not_there_with_exit_2(tmp_path: Path) -> None:
    path = _run_batch(tmp_path, "echo {}", ["a", "b"], workers=1)
    runner = CliRunner()
    env = {"BATCHTUI_OUTPUT_DIR": str(tmp_path / "out")}
    for args, message in [
        (["logs", str(path), "9"], "has no item 9: its items are 0 to 1"),
        (["logs", str(path), "1", "--attempt", "2"], "item 1 of batch"),
        (["logs", "nosuchbatch", "0"], "no batch 'nosuchbatch'"),
        # Past SQLite's integers: a usage error, not the store's OverflowError.
        (["logs", str(path), str(1 << 63)], "is not in the range 0<=x<=9223372036854775807"),
        (["logs", str(path), "1", "--attempt", str(1 << 63)], "is not in the range 1<=x<=9223372036854775807"),
    ]:
        got = runner.invoke(cli, args, env=env)
        assert got.exit_code == 2, got.output
        assert message in got.stderr and "Traceback" not in got.stderr
    ok = runner.invoke(cli, ["logs", str(path), "1", "--err"], env=env)
    assert (ok.exit_code, ok.stdout) == (0, "")
    assert "attempt 1 of item 1 wrote nothing to stderr" in ok.stderr


def test_logs_of_a_python_item_that_printed_nothing_says_so(tmp_path: Path) -> None:
    source = tmp_path / "items.txt"
    source.write_text("a\n")
    config = load_config({"output_dir": str(tmp_path / "out")}, environ={})
    batch = create_batch(config, build_spec([str(source)]), python_spec("tests.procs:noop"))
    BatchRunner(batch, config=config).run()
    got = CliRunner().invoke(cli, ["logs", str(batch.path), "0"])
    assert (got.exit_code, got.stdout) == (0, ""), got.output
    assert "attempt 1 of item 0 wrote nothing to stdout" in got.stderr


def test_logs_on_a_terminal_shows_escapes_instead_of_sending_them(tmp_path: Path) -> None:
    path = _run_batch(tmp_path, "printf '\\033]0;pwned\\007{}\\t!\\n'", ["a"], workers=1)
    raw = CliRunner().invoke(cli, ["logs", str(path), "0"])  # not a terminal: the bytes
    assert raw.stdout_bytes == b"\x1b]0;pwned\x07a\t!\n"
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [*CLI, "logs", str(path), "0"],
            check=False,
            stdout=follower,
            stderr=subprocess.PIPE,
            env=cli_env(tmp_path),
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            shown += data
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b" not in shown and b"\x07" not in shown
    assert shown.replace(b"\r\n", b"\n") == b"\\x1b]0;pwned\\x07a    !\n"


def test_logs_f_prints_lines_while_the_item_runs_and_ends_with_it(tmp_path: Path) -> None:
    source = tmp_path / "items.txt"
    source.write_text("slow\n")
    gate = tmp_path / "gate"
    # A line every 0.2 s; the rest waits for the test's go (so "still running" is certain);
    # attempt 1 then fails as transient: -f goes on with attempt 2 (and says so on stderr).
    cmd = (
        f"for i in 1 2 3; do echo line $i; sleep 0.2; done; while [ ! -e {gate} ]; do sleep 0.02; done;"
        ' if [ "$BATCHTUI_ATTEMPT" = 1 ]; then exit 75; fi; echo last'
    )
    config = load_config(
        {"output_dir": str(tmp_path / "out"), "workers": 1, "backoff": 0.0, "backoff_max": 0.0}, environ={}
    )
    batch = create_batch(config, build_spec([str(source)]), shell_spec(cmd))
    engine = threading.Thread(target=BatchRunner(batch, config=config).run)
    engine.start()
    try:
        wait_until((batch.path / "lock").exists, what="the engine")
        follower = subprocess.Popen(
            [*CLI, "logs", batch.batch_id, "0", "-f"],
            bufsize=0,  # unbuffered: readline takes one line, communicate() the rest
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(tmp_path / "out"),
        )
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert first == b"line 1\n"
        with ItemQueries(batch.path / "items.db") as store:
            row = store.row(0)
        # The item has not ended (it cannot before the gate exists): the line came while it ran.
        assert row is not None and row.status not in ("complete", "failed", "skipped")
        assert not gate.exists() and (batch.path / "results.jsonl").read_bytes() == b""
        gate.touch()
        rest, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        assert b"(attempt 2)" in err and b"(attempt 1)" not in err, err
        assert first + rest == b"line 1\nline 2\nline 3\n" * 2 + b"last\n", (
            err,
            sorted(p.name for p in (batch.path / "logs").iterdir()),
        )
    finally:
        gate.touch()
        engine.join(60)
    with ItemQueries(batch.path / "items.db") as store:
        row = store.row(0)
    assert row is not None and row.status == "complete"


@pytest.mark.parametrize("stream", ["out", "err"])
def test_a_planted_link_is_not_read_as_a_log(batch: Path, tmp_path: Path, stream: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not a log\n")
    (batch / "logs").mkdir()
    log_path(batch, 3, 1, stream).symlink_to(secret)  # type: ignore[arg-type]
    assert attempt_logs(batch, 3) == []
    assert list(follow(batch, 3, is_done=lambda: True)) == []


def test_the_logs_verb_prints_no_planted_link_and_no_traceback(tmp_path: Path) -> None:
    """`batchtui logs` reads a log file itself (not through the engine's reader above): a link
    planted in place of the log of item 0 is no log, said in one line, exit 0."""
    path = _run_batch(tmp_path, "echo out {}", ["a"], workers=1)
    secret = tmp_path / "secret"
    secret.write_text("not a log\n")
    (path / "logs" / "0.1.out").unlink()
    (path / "logs" / "0.1.out").symlink_to(secret)
    got = CliRunner().invoke(cli, ["logs", str(path), "0"])
    assert got.exception is None, got.output
    assert (got.exit_code, got.output) == (0, "attempt 1 of item 0 wrote nothing to stdout\n")


def test_an_attempt_run_again_under_its_number_keeps_the_log_of_its_cut_off_run(batch: Path) -> None:
    """An attempt cut off before it was counted (an engine killed, a stop) runs again under the
    same number: its first run's log is kept as .interrupted, never emptied (DESIGN: every
    attempt's log kept)."""
    first = LogFile(str(batch), 4, 1, "out", LIMIT)
    first.add(b"first run, cut off\n")  # the engine dies here: the file stays as it is
    again = LogFile(str(batch), 4, 1, "out", LIMIT)
    again.add(b"run again\n")
    again.close()
    third = LogFile(str(batch), 4, 1, "out", LIMIT)
    third.add(b"third\n")
    third.close()
    first.close()
    logs = batch / "logs"
    assert (logs / "4.1.out").read_bytes() == b"third\n"
    assert (logs / "4.1.out.interrupted").read_bytes() == b"first run, cut off\n"
    assert (logs / "4.1.out.interrupted.2").read_bytes() == b"run again\n"
    # The views list attempts, not the runs kept aside.
    assert [(a.attempt, a.out) for a in attempt_logs(batch, 4)] == [(1, logs / "4.1.out")]


def test_a_resume_after_a_kill_keeps_the_output_of_the_attempt_it_cut_off(tmp_path: Path) -> None:
    """End to end: kill -9 of the engine while an item prints and sleeps, then resume."""
    import json
    import signal

    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("a\n")
    marker = tmp_path / "ran-once"
    cmd = f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first; sleep 60; fi"
    env = cli_env(out)
    made = subprocess.run(
        [*CLI, "run", str(tmp_path / "items.txt"), "--cmd", cmd, "--detach"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    batch_dir = next(p for p in out.iterdir() if p.is_dir())
    log = batch_dir / "logs" / "0.1.out"
    wait_until(lambda: log.is_file() and log.read_bytes() == b"first\n", 30, "the first run's output")
    pid = json.loads((batch_dir / "lock").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(),
        10,
        "engine gone",
    )
    resumed = subprocess.run(
        [*CLI, "resume", str(batch_dir), "--headless"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The attempt the kill cut off counts (engine/inflight.py): the resume runs attempt 2, and
    # attempt 1's output stays where it was written.
    assert log.read_bytes() == b"first\n"
    assert (batch_dir / "logs" / "0.2.out").read_bytes() == b"second\n"
