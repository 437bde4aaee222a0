"""Atomic JSON files and the results log."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from batchtui.engine.files import DamagedFile, ResultsLog, iter_jsonl, read_model, write_model
from batchtui.engine.models import Counts


def test_atomic_write_keeps_a_backup_and_0600(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_model(path, Counts(total=1), backup=True)
    write_model(path, Counts(total=2), backup=True)
    assert read_model(path, Counts).total == 2
    assert read_model(tmp_path / "manifest.json.bak", Counts).total == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().endswith(b"\n")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_damaged_file_falls_back_to_backup(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_model(path, Counts(total=1), backup=True)
    write_model(path, Counts(total=2), backup=True)
    path.write_bytes(b'{"total": 2, "pend')  # truncated by a crash or a full disk
    assert read_model(path, Counts).total == 1


def test_damaged_without_backup_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"not json")
    with pytest.raises(DamagedFile):
        read_model(path, Counts)
    with pytest.raises(FileNotFoundError):
        read_model(tmp_path / "missing.json", Counts)


def test_results_log_cuts_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"seq": 0}\n{"seq": 1}\n{"seq": 2, "res')
    log = ResultsLog(path)
    assert log.torn_bytes == len(b'{"seq": 2, "res')
    log.append(orjson.dumps({"seq": 3}))
    log.sync()
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert [orjson.loads(line)["seq"] for line in lines] == [0, 1, 3]
    assert all(line.endswith(b"\n") for line in lines)


def test_results_log_torn_single_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"seq": 0')
    log = ResultsLog(path)
    assert log.offset == 0
    log.close()
    assert path.read_bytes() == b""


def test_results_log_offset_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path)
    log.append(b'{"seq":0}')
    assert log.sync() == 10
    log.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [end for end, _obj, _raw in iter_jsonl(path)] == [10]


def test_iter_jsonl_skips_torn_and_flags_invalid(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a":1}\nnot json\n[1]\n{"b":2')
    got = list(iter_jsonl(path))
    assert [obj for _e, obj, _r in got] == [{"a": 1}, None, None]
