"""A CSV read from a pipe gives its records as they come (engine/sources/waiting.py arrived_head).

Its dialect was sniffed on its first 64 KiB, read whole before the first record: a writer that
sends a record a second held every record back for about 18 hours of them (or until it closed
the pipe). Now a pipe's head is what has come: its first line (waited for), then what follows
without a pause; a regular file is sniffed as before, and a pipe that sends the whole file at
once gives the records the file gives.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchtui.engine.sources import SourceEntry, SourceSpec, SourceWait
from batchtui.engine.sources.records import csv_records


def _spec(path: Path, **extra: object) -> SourceSpec:
    return SourceSpec(entries=(SourceEntry(kind="csv", path=str(path)),), **extra)  # type: ignore[arg-type]


@contextlib.contextmanager
def _writer(fifo: Path, parts: list[bytes], pause: float = 0.0) -> Iterator[threading.Event]:
    """A writer of ``fifo`` sending ``parts`` (``pause`` seconds apart), then holding it open
    until the event it yields is set (then it closes it)."""
    done = threading.Event()

    def write() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        try:
            for i, part in enumerate(parts):
                if i and pause:
                    time.sleep(pause)
                os.write(fd, part)
            done.wait(60)
        finally:
            os.close(fd)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        yield done
    finally:
        done.set()
        t.join(10)


def _first_records(spec: SourceSpec, want: int) -> list[object]:
    """The first ``want`` records csv_records gives, read in a thread: [] if they did not come
    within 10 s (the reading is left waiting on its pipe until the writer closes it)."""
    got: list[object] = []
    came = threading.Event()

    def read() -> None:
        for rec in csv_records(spec.entries[0].path, spec, SourceWait(tick=0.1)):
            got.append(rec)
            if len(got) == want:
                came.set()

    threading.Thread(target=read, daemon=True).start()
    came.wait(10)
    return got[:want]


@pytest.mark.parametrize("delimiter", [None, ";"])
def test_a_pipe_csv_gives_its_first_records_before_64_kib_came(tmp_path: Path, delimiter: str | None) -> None:
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    spec = _spec(fifo, delimiter=delimiter) if delimiter else _spec(fifo)
    with _writer(fifo, [b"id;name\n1;one\n2;two\n"]):
        got = _first_records(spec, 2)
        # The writer still holds the pipe open, 20 bytes sent: the records came anyway.
        assert [rec[1] for rec in got] == [{"id": "1", "name": "one"}, {"id": "2", "name": "two"}]  # type: ignore[index]


def test_a_pipe_csv_whose_head_cuts_a_character_reads_it_whole(tmp_path: Path) -> None:
    """The head is what came before a pause: here it ends inside the two bytes of an é."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    with _writer(fifo, [b"id,name\n1,caf\xc3", b"\xa9\n2,b\n"], pause=0.6):
        got = _first_records(_spec(fifo), 2)
    assert [rec[1] for rec in got] == [{"id": "1", "name": "café"}, {"id": "2", "name": "b"}]  # type: ignore[index]


def test_a_pipe_sending_a_whole_file_gives_the_records_the_file_gives(tmp_path: Path) -> None:
    rows = ["id|text|note"] + [f'{i}|"a, b; c"|é{i}' for i in range(5000)]  # over 64 KiB, commas and ; quoted
    text = "\r\n".join(rows) + "\r\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(text, encoding="utf-8", newline="")
    fifo = tmp_path / "piped.csv"
    os.mkfifo(fifo)
    from_file = list(csv_records(str(plain), _spec(plain)))
    with _writer(fifo, [text.encode()]) as done:
        got = _first_records(_spec(fifo), len(from_file))
        done.set()
    assert len(from_file) == 5000 and from_file[0][1] == {"id": "0", "text": "a, b; c", "note": "é0"}  # type: ignore[index]
    assert got == from_file
