"""Items the shell processor cannot put in its command (a field the template names is missing
from the record, a value holds a NUL byte) fail before any process runs, and would fail so on
every attempt: the item and the command are the batch's for good. A retry used to put them
back (and the summary offered it), and each failed again at once with one more attempt. Now
retry, prioritize and ``resume --retry-failed`` leave them failed and say why, as they do for
an invalid source record (test_invalid_records.py); the error category stays DESIGN's ``item``.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from .conftest import only_batch

#: Record 2 lacks "title", record 3's title holds a NUL byte, record 5 fails (exit 1) and may
#: succeed on a retry (it does, once the file "fixed" exists), record 6's title makes a command
#: longer than one exec argument may be (128 KiB on Linux).
RECORDS = (
    '{"id": 1, "title": "a"}\n{"id": 2}\n{"id": 3, "title": "c\\u0000d"}\n'
    '{"id": 4, "title": "d"}\n{"id": 5, "title": "e"}\n'
    '{"id": 6, "title": "' + "x" * 140_000 + '"}\n'
)
MISSING = "1 item can't succeed on retry: a field the command names is missing from the record; left failed"
NUL = "1 item can't succeed on retry: a value the command takes holds a NUL byte, which exec cannot pass"
TOO_LONG = "1 item can't succeed on retry: the command is longer than one exec argument may be"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _rows(batch: Path) -> dict[int, tuple[str, int, str | None]]:
    conn = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return {s: (st, a, t) for s, st, a, t in conn.execute("SELECT seq, status, attempts, error_type FROM items")}
    finally:
        conn.close()


def test_retry_leaves_items_that_cannot_succeed_failed_and_says_why(
    tmp_path: Path, out_dir: Path, invoke_cli: Cli
) -> None:
    (tmp_path / "r.jsonl").write_text(RECORDS)
    fixed = tmp_path / "fixed"
    cmd = f"test {{title}} != e || test -e {fixed}"
    first = invoke_cli(["run", str(tmp_path / "r.jsonl"), "--key-field", "id", "--cmd", cmd, "--headless"])
    assert first.returncode == 1, first.stderr
    batch = only_batch(out_dir)
    assert _rows(batch) == {
        0: ("complete", 1, None),
        1: ("failed", 1, "MissingField"),
        2: ("failed", 1, "NulByte"),
        3: ("complete", 1, None),
        4: ("failed", 1, "exit 1"),
        5: ("failed", 1, "CommandTooLong"),
    }

    only = invoke_cli(["retry", batch.name, "--type", "NulByte"])
    assert only.returncode == 1
    assert f"nothing to retry: 1 item matches --type NulByte; {NUL}" in only.stderr

    dry = invoke_cli(["retry", batch.name, "--dry-run"])
    assert "retry would change 1 item (" in dry.stdout and "#4  5" in dry.stdout

    fixed.touch()
    again = invoke_cli(["resume", batch.name, "--retry-failed", "--headless"])
    assert again.returncode == 1, again.stderr
    assert f"requeued 1 failed item; {TOO_LONG}" in again.stderr
    assert MISSING in again.stderr and NUL in again.stderr
    # The two never went back: no attempt was added to them; the other one ran and succeeded.
    assert _rows(batch) == {
        0: ("complete", 1, None),
        1: ("failed", 1, "MissingField"),
        2: ("failed", 1, "NulByte"),
        3: ("complete", 1, None),
        4: ("complete", 2, None),
        5: ("failed", 1, "CommandTooLong"),
    }
    assert "Retry:" not in again.stdout  # nothing a retry could change is offered

    retry = invoke_cli(["retry", batch.name])
    assert retry.returncode == 1 and MISSING in retry.stderr and NUL in retry.stderr and TOO_LONG in retry.stderr
    skip = invoke_cli(["skip", batch.name, "--type", "NulByte"])
    assert skip.returncode == 0, skip.stderr
    assert _rows(batch)[2][0] == "skipped"


#: A user's library with exception classes named like batchtui's refusals: its items failed
#: for a reason of its own, which a retry may well fix (here: once the file "fixed" exists).
USER_LIB = """
import os


class MissingField(KeyError):
    pass


class CommandTooLong(ValueError):
    pass


def fn(item):
    if os.path.exists("fixed"):
        return {"ok": item.data}
    if item.data.endswith("1"):
        raise MissingField("no 'price' in the upstream answer")
    raise CommandTooLong("the API said: URI too long")
"""


def test_a_users_exception_named_like_a_refusal_is_retried_as_any_failure(
    tmp_path: Path, out_dir: Path, invoke_cli: Cli
) -> None:
    (tmp_path / "userlib.py").write_text(USER_LIB)
    (tmp_path / "items.txt").write_text("a1\nb2\n")
    args = ["run", "items.txt", "--call", "userlib.py:fn", "--executor", "thread", "--headless"]
    first = invoke_cli([*args, "--max-attempts", "1"])
    assert first.returncode == 1, first.stderr
    batch = only_batch(out_dir)
    assert _rows(batch) == {0: ("failed", 1, "userlib.MissingField"), 1: ("failed", 1, "userlib.CommandTooLong")}
    (tmp_path / "fixed").touch()
    retry = invoke_cli(["resume", batch.name, "--retry-failed", "--headless"])
    assert retry.returncode == 0, retry.stderr
    assert "can't succeed on retry" not in retry.stderr
    assert _rows(batch) == {0: ("complete", 2, None), 1: ("complete", 2, None)}
