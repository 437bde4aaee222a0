"""A JSONL record is read as written, or refused: never changed on the way in.

orjson reads an integer beyond 64 bits as a float, silently: ``{"id": 123456789012345678901234567890}``
became ``1.2345678901234568e+29``, so two such ids were one key under ``--key-field id`` (the
second dropped as a duplicate: its item never ran) and ``{id}`` handed the command other digits.
Such a line is now an invalid record (failed, named), as a ``1e400`` already was; a command's
result line holding one fails its item (InvalidResult), as a NaN there does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtui.engine.errors import InvalidResult
from batchtui.engine.shell.output import StdoutTail, parse_stdout
from batchtui.engine.sources import SourceEntry, SourceSpec, iter_items


def _items(path: Path, **kw: str) -> list[tuple[str, object, str | None]]:
    spec = SourceSpec(entries=(SourceEntry(kind="jsonl", path=str(path)),), **kw)  # type: ignore[arg-type]
    return [(item.key, item.data, item.invalid) for item in iter_items(spec, None)]


def test_an_integer_beyond_64_bits_is_an_invalid_record_not_a_float(tmp_path: Path) -> None:
    src = tmp_path / "ids.jsonl"
    src.write_text(
        '{"id": 123456789012345678901234567890}\n{"id": 123456789012345678901234567891}\n{"id": -9223372036854775809}\n'
    )
    got = _items(src, key_field="id")
    # Three items, none dropped as a duplicate of another, none holding a float for the id.
    assert [key for key, _, _ in got] == [f"{src}:1", f"{src}:2", f"{src}:3"]
    assert [data for _, data, _ in got] == [
        {"_raw": '{"id": 123456789012345678901234567890}', "_line": 1},
        {"_raw": '{"id": 123456789012345678901234567891}', "_line": 2},
        {"_raw": '{"id": -9223372036854775809}', "_line": 3},
    ]
    assert got[0][2] == (
        "line 1: the integer 123456789012345678901234567890 is beyond 64 bits and would be read as a"
        " float, losing digits; write it as a string"
    )
    assert got[2][2] is not None and "-9223372036854775809" in got[2][2]


def test_integers_within_64_bits_and_long_digit_strings_are_kept_exactly(tmp_path: Path) -> None:
    src = tmp_path / "ok.jsonl"
    src.write_text('{"id": 18446744073709551615, "low": -9223372036854775808, "s": "123456789012345678901234567890"}\n')
    [(key, data, invalid)] = _items(src, key_field="id")
    assert invalid is None
    assert key == "18446744073709551615"
    assert data == {"id": 18446744073709551615, "low": -9223372036854775808, "s": "123456789012345678901234567890"}


def test_a_command_result_with_an_integer_beyond_64_bits_fails_the_item_not_its_digits() -> None:
    # Its last stdout line was stored as {"id": 1.2345678901234568e+29}: a "complete" item whose
    # result had other digits than the command printed.
    out = StdoutTail(keep=1 << 16, line_cap=1 << 20)
    out.add(b'progress\n{"id": 123456789012345678901234567890, "ok": true}\n')
    with pytest.raises(InvalidResult) as err:
        parse_stdout(out, max_result_bytes=1 << 20)
    assert str(err.value) == (
        "the result holds the integer 123456789012345678901234567890, beyond 64 bits, which would be"
        " stored as a float with other digits: print it as a string"
    )
    fine = StdoutTail(keep=1 << 16, line_cap=1 << 20)
    fine.add(b'{"id": 18446744073709551615, "s": "123456789012345678901234567890"}\n')
    assert parse_stdout(fine, max_result_bytes=1 << 20).result == {
        "id": 18446744073709551615,
        "s": "123456789012345678901234567890",
    }
