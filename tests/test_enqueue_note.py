"""``run``'s note while it reads a big source: one line rewritten in place on a terminal, a few
lines in a log (a 20M-line source printed 200 lines, 60 on a terminal, before the dashboard)."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

from batchtui.tui.cli.progress import EnqueueNote

from .conftest import CLI, cli_env


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_on_a_terminal_one_line_is_rewritten_at_most_four_times_a_second() -> None:
    now = [100.0]
    stream = _Stream(tty=True)
    note = EnqueueNote(stream, clock=lambda: now[0])
    for i in range(1, 9):  # 800k items, 100k every 1/8 s
        note(i * 100_000)
        now[0] += 0.125
    note.close()
    text = stream.getvalue()
    assert "\n" not in text[:-1] and text.endswith("\n")  # one line, ended once
    # At 0, 0.25, 0.5 and 0.75 s: four times in one second of reading.
    assert text == "".join(f"\r  enqueued {n},000 items...\x1b[K" for n in (100, 300, 500, 700)) + "\n"
    note.close()
    assert stream.getvalue() == text  # ended once only


def test_in_a_log_a_line_every_five_seconds_and_nothing_to_end() -> None:
    now = [0.0]
    stream = _Stream(tty=False)
    note = EnqueueNote(stream, clock=lambda: now[0])
    for i in range(1, 201):  # 20M items over 12.5 s
        note(i * 100_000)
        now[0] += 0.0625
    note.close()
    lines = stream.getvalue().splitlines()
    assert lines == ["  enqueued 100,000 items...", "  enqueued 8,100,000 items...", "  enqueued 16,100,000 items..."]


def test_a_run_logging_to_a_file_notes_the_read_once_in_five_seconds(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(250_000)))
    noop = f"{Path(__file__).with_name('procs.py')}:noop"
    proc = subprocess.run(
        [*CLI, "run", str(items), "--call", noop, "--executor", "thread", "--headless"],
        env=cli_env(tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "enqueued" in line]
    assert len(notes) == 1, notes  # the next, past 200,000, came within 5 s of it
    assert re.fullmatch(r"  enqueued 1\d\d,\d{3} items\.\.\.", notes[0]), notes
