"""The enqueue's fast path for line sources (blocks of lines, keys and rows made per block)
against the plain path: per-line items from iter_items, each made into a row on its own."""

from __future__ import annotations

import io
import itertools
import os
import random
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine import enqueue
from batchtui.engine.enqueue import _kind_of, _report_every, _rows, enqueue_source
from batchtui.engine.errors import InvalidRecord, UserError, classify
from batchtui.engine.grouping import normalize_message
from batchtui.engine.sources import (
    SourceItem,
    SourceSpec,
    build_spec,
    iter_blocks,
    iter_items,
    line_keys,
    normalize_line_key,
)
from batchtui.engine.sources import lines as source_lines
from batchtui.engine.store import ItemStore, LineBlock

AT = "2024-01-01T00:00:00Z"

CORPUS_LINES = [
    "https://example.com/item/1",
    "https://example.com/item/1",  # duplicate
    "HTTPS://Example.COM:443/item/1#frag",  # the same URL spelled otherwise
    "https://example.com:8443/a/B?x=1",
    "http://example.com:80",
    "http://example.com",
    "http://example.com?",
    "http://example.com/?",
    "http://example.com/a?b?",
    "http://example.com/a?",
    "http://example.com/a#",
    "http://example.com/a?q=1#f",
    "http://User:Pw@Host.example:80/p",
    "http://user@host.example/p",
    "http://[::1]:80/x",
    "http://[::1]/x",
    "http://bad:port/x",
    "http://host:99999/x",
    "http://host:/x",
    "ftp://Files.Example.com:21/pub",
    "ftp://files.example.com/pub",
    "s3://Bucket/Key",
    "mailto:Someone@Example.com",
    "HTTP://EXAMPLE.COM/UPPER/Path",
    "https://exämple.com/ü",
    "https://EXÄMPLE.com/ü",
    "https://example.com/%2F?Q=Case",
    "https://ex%41mple.com/x",
    "https://ex%4ample.com/x",
    "https://a b.com/x y",
    "http:/example.com/x",
    "xhttp://example.com/x",
    "text with :// inside",
    "http://example.com/a://b",
    "plain item",
    "  padded line   ",
    "\tTabbed\tline\t",
    "# a comment",
    "   # an indented comment",
    "not # a comment",
    "",
    "   ",
    "\u00a0nbsp\u00a0",
    'quote " and backslash \\',
    "control \x01 char",
    "line\x0bwith vertical tab",
    "line\x0cwith form feed",
    "line\u2028with line separator",
    "line\x85with NEL",
    "émoji 🎉",
    "/some/Path.txt",
    "?",
    "#",
    "://",
    "http://",
    "https://example.com/",
]


def expanded(rows: Iterable[tuple[Any, ...] | LineBlock]) -> list[tuple[Any, ...]]:
    """The rows, with each LineBlock as the rows it stands for (the store's insert of a block
    is checked against these by test_create_batch_rows_unchanged)."""
    out: list[tuple[Any, ...]] = []
    for row in rows:
        out.extend(row.rows() if isinstance(row, LineBlock) else [row])
    return out


def line_rows(lines: list[str], kind: str | None, kinds: frozenset[str]) -> list[tuple[Any, ...]]:
    return expanded(enqueue._line_rows(lines, kind, kinds))


def corpus_text(seed: int = 7, n: int = 400) -> str:
    rnd = random.Random(seed)
    lines = [rnd.choice(CORPUS_LINES) for _ in range(n)]
    lines += [f"https://example.com/item/{i}" for i in range(200)]
    rnd.shuffle(lines)
    ends = ["\n", "\n", "\n", "\r\n", "\r"]
    return "".join(line + rnd.choice(ends) for line in lines) + "last line without newline"


def reference_rows(spec: SourceSpec, stdin: io.StringIO | None = None) -> list[tuple[Any, ...]]:
    """The rows as the enqueue made them before the fast path: one item at a time."""
    kinds = frozenset(e.kind for e in spec.entries)
    rows: list[tuple[Any, ...]] = []
    for item in iter_items(spec, stdin):
        data = orjson.dumps(item.data).decode()
        kind = _kind_of(item.data, kinds)
        if item.invalid is None:
            rows.append((item.key, data, kind, "pending", None, None, None, None, None, None))
            continue
        info = classify(InvalidRecord(item.invalid))
        detail = f"{item.origin}: {item.invalid}" if item.origin else item.invalid
        group = normalize_message(info.message, item.key)
        rows.append((item.key, data, kind, "failed", info.error_type, info.category, info.message, detail, group, AT))
    return rows


def flat(spec: SourceSpec, stdin: io.StringIO | None = None) -> list[tuple[str, str]]:
    """(key, data) of every item, from the fast path's blocks."""
    out: list[tuple[str, str]] = []
    for block in iter_blocks(spec, stdin):
        if isinstance(block, SourceItem):
            out.append((block.key, block.data))
        else:
            out.extend(zip(line_keys(block), block, strict=True))
    return out


@pytest.fixture(params=[1, 7, 64, 256 * 1024], ids=lambda n: f"block{n}")
def block_chars(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Small blocks put block boundaries everywhere: inside lines, between "\\r" and "\\n"."""
    monkeypatch.setattr(source_lines, "_BLOCK_CHARS", request.param)
    monkeypatch.setattr(source_lines, "_BLOCK_LINES", max(1, request.param // 8))
    return int(request.param)


# -- keys -----------------------------------------------------------------------------------------


def test_line_keys_match_normalize_line_key_on_the_corpus() -> None:
    lines = [s.strip() for s in CORPUS_LINES if s.strip()]
    assert line_keys(lines) == [normalize_line_key(s) for s in lines]
    for s in lines:  # alone: each block is one line
        assert line_keys([s]) == [normalize_line_key(s)], s


def _fuzz_line(rnd: random.Random) -> str:
    scheme = rnd.choice(["http", "https", "ftp", "HTTP", "Https", "s3", "file", ""])
    sep = rnd.choice(["://", "://", "://", ":/", ""])
    alphabet = "aAzZ09.-_~%:@[]/?#!$&'()*+,;= éÉß\u0130\t"
    host = "".join(rnd.choice(alphabet[:30] if rnd.random() < 0.7 else alphabet) for _ in range(rnd.randint(0, 12)))
    if rnd.random() < 0.5:
        host = host.lower().replace(":", "").replace("@", "").replace("/", "").replace("?", "").replace("#", "")
    port = rnd.choice(["", "", ":80", ":443", ":21", ":8080", ":", ":x", ":070000"])
    tail = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 10)))
    path = rnd.choice(["", "/", "/a/B", "/x?y=1", "/x?", "?q", "#f", "/p#f"]) + tail
    return (scheme + sep + host + port + path).strip()


def test_line_keys_fuzzed_blocks() -> None:
    rnd = random.Random(12345)
    for _ in range(3000):
        block = [line for line in (_fuzz_line(rnd) for _ in range(rnd.randint(1, 12))) if line]
        if not block:
            continue
        assert line_keys(block) == [normalize_line_key(s) for s in block], block


@pytest.mark.parametrize(
    "block",
    [
        ["https://example.com/a", "https://example.com/b", "plain"],  # one shared head
        ["https://example.com/a", "https://other.example/b", "ftp://f.example/x"],  # several heads
        ["plain", "https://example.com/a"],  # the first line is no URL
        ["https://example.com/a", "https://example.com:443/b"],  # one needs normalizing
        ["https://example.com/a", "https://Example.com/b"],
        ["https://example.com/a", "https://example.com/b#f"],
        ["https://example.com/a", "https://example.com/b?"],
        ["https://example.com/a", "https://example.com/b", "x://y"],
        ["https://example.com/a", "https://example.com/b://c"],
        ["https://example.com/a", "junk https://example.com/b"],
        ["https://example.com/a\nHTTPS://EXAMPLE.COM/b"],  # a line holding a newline
        ["https://example.com/a", "what?"],
        ["no urls", "at all"],
        [""],
    ],
)
def test_line_keys_block_shortcuts(block: list[str]) -> None:
    assert line_keys(block) == [normalize_line_key(s) for s in block]


def test_line_keys_returns_the_block_when_every_line_is_its_own_key() -> None:
    block = [f"https://example.com/item/{i}" for i in range(100)] + ["plain"]
    assert line_keys(block) is block


# -- blocks against items -------------------------------------------------------------------------


def test_line_blocks_match_line_items(tmp_path: Path, block_chars: int) -> None:
    f = tmp_path / "urls.txt"
    f.write_bytes(b"\xef\xbb\xbf" + corpus_text().encode())
    spec = build_spec([str(f)])
    assert flat(spec) == [(i.key, i.data) for i in iter_items(spec)]
    assert expanded(_rows(spec, None, AT)) == reference_rows(spec)


def test_line_blocks_match_in_other_encodings(tmp_path: Path, block_chars: int) -> None:
    text = corpus_text(seed=3, n=100).replace("🎉", "")
    for encoding in ("latin-1", "utf-16", "cp1252"):
        f = tmp_path / f"{encoding}.txt"
        f.write_bytes(text.encode(encoding, "replace"))
        spec = build_spec([str(f)], encoding=encoding)
        assert expanded(_rows(spec, None, AT)) == reference_rows(spec), encoding


def test_stdin_blocks_match_stdin_items(block_chars: int) -> None:
    text = corpus_text(seed=11)
    spec = build_spec(["-"])
    for newline in ("\n", None, "", "\r"):
        assert flat(spec, io.StringIO(text, newline=newline)) == [
            (i.key, i.data) for i in iter_items(spec, io.StringIO(text, newline=newline))
        ], newline
        assert expanded(_rows(spec, io.StringIO(text, newline=newline), AT)) == reference_rows(
            spec, io.StringIO(text, newline=newline)
        )


def test_real_stdin_blocks(monkeypatch: pytest.MonkeyPatch, block_chars: int) -> None:
    raw = corpus_text(seed=5).encode("latin-1", "replace")
    spec = build_spec(["-"], encoding="latin-1")
    monkeypatch.setattr(source_lines.sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    fast = expanded(_rows(spec, None, AT))
    monkeypatch.setattr(source_lines.sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    assert fast == reference_rows(spec)
    assert len(fast) > 500


def test_mixed_sources_rows(tmp_path: Path, block_chars: int) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "one.bin").write_text("x")
    lines = tmp_path / "l.txt"
    lines.write_text(corpus_text(seed=2, n=50) + "\n" + str(d / "one.bin") + "\n/no/such/file\n")
    c = tmp_path / "t.csv"
    c.write_text("id,url\n1,https://a.example/\n2\n3,x\n")
    j = tmp_path / "t.jsonl"
    j.write_text('{"a": 1}\nnot json\n[1]\n{"b": "\\u00e9"}\n')
    spec = build_spec([str(lines), str(d), str(c), str(j), "-"])
    stdin = "http://Example.com:80/x\n# c\n\ny\n"
    assert expanded(_rows(spec, io.StringIO(stdin), AT)) == reference_rows(spec, io.StringIO(stdin))
    kinds = {row[2] for row in expanded(_rows(spec, io.StringIO(stdin), AT))}
    assert kinds == {"line", "file", "record"}


@pytest.mark.parametrize("key_field", [None, "id"])
def test_record_rows_match(tmp_path: Path, key_field: str | None) -> None:
    c = tmp_path / "t.csv"
    c.write_text('id,url,n\n1,https://a.example/,x\n2\n\n,empty,y\n1,dup,z\n"3","q ""u"" e",\n  ,blank,k\n')
    j = tmp_path / "t.jsonl"
    j.write_text(
        '{"id": 1, "b": [1, {"z": 1, "a": 2}]}\nnot json\n[1]\n\n{"id": null}\n{"x": 1}\n'
        '{"id": {"k": 2, "a": 1}}\n{"id": "  "}\n{"id": 1.5, "e": "\\u00e9\\n"}\n{"id": 1}\n'
    )
    spec = build_spec([str(c), str(j)], key_field=key_field)
    ref = reference_rows(spec)
    assert {r[3] for r in ref} == {"pending", "failed"}
    for skip in range(len(ref) + 1):
        assert expanded(_rows(spec, None, AT, skip)) == ref[skip:], skip


def test_data_json_of_every_character() -> None:
    """A line's data is orjson's JSON of it, for every character orjson takes."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(chars), 4096):
        block = [f"a{c}b" for c in chars[i : i + 4096]]
        rows = line_rows(block, "line", frozenset({"lines"}))
        assert [r[1] for r in rows] == [orjson.dumps(s).decode() for s in block]
    plain = ["abc", "https://example.com/x"]
    assert [r[1] for r in line_rows(plain, "line", frozenset({"lines"}))] == [
        '"abc"',
        '"https://example.com/x"',
    ]


@pytest.mark.parametrize("odd", ['"', "\\", "\x7f", "\xa0", "\u2028", "\x00", "\t", "é", "🎉", "\ufeff"])
def test_data_json_of_a_printable_block_with_one_odd_character(odd: str) -> None:
    block = ["https://example.com/a", f"say {odd}hi{odd}", "plain"]
    rows = line_rows(block, "line", frozenset({"lines"}))
    assert [r[1] for r in rows] == [orjson.dumps(s).decode() for s in block]


def test_a_lone_surrogate_fails_as_it_did() -> None:
    with pytest.raises(TypeError):
        orjson.dumps("x\ud800")
    with pytest.raises(TypeError):
        line_rows(["ok", "x\ud800"], "line", frozenset({"stdin"}))


# -- errors ---------------------------------------------------------------------------------------


def test_bad_encoding_same_error_after_the_same_items(tmp_path: Path, block_chars: int) -> None:
    f = tmp_path / "bad.txt"
    f.write_bytes(b"ok 1\n\n# c\nok 2\r\n" + b"x\n" * 300 + b"caf\xe9\nafter\n")
    spec = build_spec([str(f)])
    before_ref: list[tuple[str, str]] = []
    with pytest.raises(UserError) as ref:
        for item in iter_items(spec):
            before_ref.append((item.key, item.data))
    before: list[tuple[str, str]] = []
    with pytest.raises(UserError) as fast:
        for block in iter_blocks(spec):
            assert isinstance(block, list)
            before.extend(zip(line_keys(block), block, strict=True))
    assert str(fast.value) == str(ref.value) == "bad.txt: line 305 is not valid utf-8 text (pass the right --encoding)"
    assert before == before_ref


def test_bad_encoding_on_the_last_line_without_newline(tmp_path: Path, block_chars: int) -> None:
    f = tmp_path / "bad.txt"
    f.write_bytes(b"a\nb\n\xff")
    with pytest.raises(UserError, match=r"bad\.txt: line 3 is not valid"):
        list(iter_blocks(build_spec([str(f)])))


def test_stdin_bad_encoding_from_a_strict_stream() -> None:
    spec = build_spec(["-"])
    fake = io.TextIOWrapper(io.BytesIO(b"ok\ncaf\xe9\n"), encoding="utf-8")
    with pytest.raises(UserError, match="<stdin> is not valid utf-8 text"):
        list(iter_blocks(spec, fake))


# -- resume ---------------------------------------------------------------------------------------


def test_skip_matches_islice_at_every_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_lines, "_BLOCK_CHARS", 100)
    f = tmp_path / "l.txt"
    f.write_text(corpus_text(seed=9, n=60))
    j = tmp_path / "r.jsonl"
    j.write_text('{"a": 1}\n{"a": 2}\nbad\n')
    spec = build_spec([str(f), str(j), str(f)])
    ref = reference_rows(spec)
    for skip in range(len(ref) + 2):
        assert expanded(_rows(spec, None, AT, skip)) == ref[skip:], skip


class _Stop(Exception):
    pass


def _stop_after(rows: Iterator[tuple[Any, ...] | LineBlock], n: int) -> Iterator[tuple[Any, ...] | LineBlock]:
    """The rows until the one that would take the count of source rows past ``n`` (a crash)."""
    read = 0
    for row in rows:
        read += len(row) if isinstance(row, LineBlock) else 1
        if read > n:
            raise _Stop
        yield row


def _items(db: Path) -> list[tuple[Any, ...]]:
    store = ItemStore.open(db)
    try:
        return store.conn.execute("SELECT seq, key, data, kind, status FROM items ORDER BY seq").fetchall()
    finally:
        store.close()


@pytest.mark.parametrize("cut", [0, 5, 1000, 2500, 3999])
def test_interrupted_enqueue_resumes_to_the_same_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: int
) -> None:
    monkeypatch.setattr(source_lines, "_BLOCK_CHARS", 4096)
    f = tmp_path / "urls.txt"
    rnd = random.Random(cut)
    lines = [f"https://example.com/item/{i}" for i in range(3000)] + [rnd.choice(CORPUS_LINES) for _ in range(1500)]
    rnd.shuffle(lines)
    f.write_text("\n".join(lines) + "\n")
    spec = build_spec([str(f)])

    whole = ItemStore.create(tmp_path / "whole.db", durable=False)
    try:
        enqueue_source(whole, spec)
        dropped = whole.get_meta("duplicates_dropped")
    finally:
        whole.close()

    # The first enqueue stops (a crash) after at most `cut` rows: whole chunks of about 500
    # rows (blocks are not split) are stored, and the stored count says how many were read.
    part = ItemStore.create(tmp_path / "part.db", durable=False)
    real = ItemStore.enqueue
    try:

        def cut_short(self: ItemStore, rows: Any, *, chunk: int = 500, waits: Any = None) -> tuple[int, int]:
            return real(self, _stop_after(iter(rows), cut), chunk=500, waits=waits)

        monkeypatch.setattr(ItemStore, "enqueue", cut_short)
        with pytest.raises(_Stop):
            enqueue_source(part, spec)
        monkeypatch.setattr(ItemStore, "enqueue", real)
        stored = int(part.get_meta("enqueue_read", 0) or 0)
        assert stored <= cut and (cut < 1000 or stored >= 500)
        assert part.conn.execute("SELECT count(*) FROM items").fetchone()[0] <= stored
        reports: list[int] = []
        enqueue_source(part, spec, on_enqueue=reports.append)
        assert part.get_meta("duplicates_dropped") == dropped
    finally:
        part.close()
    assert _items(tmp_path / "part.db") == _items(tmp_path / "whole.db")
    assert len(_items(tmp_path / "whole.db")) > 2000


def test_progress_reports_count_source_items_from_the_start() -> None:
    got: list[int] = []
    rows = _report_every(iter([()] * 250_000), 0, got.append)
    assert sum(1 for _ in rows) == 250_000
    assert got == [100_000, 200_000]
    got.clear()
    # After a resume that skipped 150,000 items: as when the skipped rows were still counted.
    assert sum(1 for _ in _report_every(iter([()] * 100_000), 150_000, got.append)) == 100_000
    assert got == [150_001, 200_000]


# -- memory ---------------------------------------------------------------------------------------


def test_line_blocks_stream_in_bounded_memory(tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    with f.open("w", encoding="utf-8") as out:
        for i in range(200_000):
            out.write(f"https://Example.com:443/items/{i:07d}?p=1#f\n" if i % 10 == 0 else f"item {i:07d}\n")
    spec = build_spec([str(f)])
    tracemalloc.start()
    try:
        count = sum(1 for _ in itertools.chain.from_iterable(_line_rows_of(spec)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


def _line_rows_of(spec: SourceSpec) -> Iterator[list[tuple[Any, ...]]]:
    for block in iter_blocks(spec):
        assert isinstance(block, list)
        yield line_rows(block, "line", frozenset({"lines"}))


def test_create_batch_rows_unchanged(tmp_path: Path) -> None:
    """End to end: the items of a made batch are those the plain path gives."""
    from batchtui.engine.config import BatchConfig
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import python_spec

    f = tmp_path / "urls.txt"
    f.write_text(corpus_text(seed=21, n=3000))
    spec = build_spec([str(f)])
    procs = Path(__file__).parent / "procs.py"
    batch = create_batch(
        BatchConfig(output_dir=str(tmp_path / "out"), fsync=False), spec, python_spec(f"{procs}:noop", chunked=False)
    )
    got = [r[1:4] for r in _items(batch.items_db)]
    want: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for key, data, kind, *_ in reference_rows(spec):
        if key not in seen:
            seen.add(key)
            want.append((key, data, kind))
    assert got == want
    assert batch.read_manifest().duplicates_dropped == len(reference_rows(spec)) - len(want)
    assert os.path.exists(batch.items_db)


@pytest.mark.parametrize("chunk", [1, 3, 20000])
def test_line_blocks_go_into_the_store_as_their_rows(tmp_path: Path, block_chars: int, chunk: int) -> None:
    """A plain URL list goes in as LineBlocks (one flat JSON array a block, SQLite quoting each
    line): the stored keys, data and kinds are those of the per-row path, duplicates dropped,
    lines that are their own keys mixed with lines whose key is normalized."""
    lines = [
        "https://example.com/a",
        "HTTPS://Example.COM/a",  # the same key as the first: a duplicate
        "plain words, no URL",
        "https://example.com/b?x=1#frag",
        "https://example.com/b?x=1",  # same key as the one before
        "http://example.com:80/c",
        "é and 🎉 are not escaped",
        "https://example.com/a",  # exact duplicate
        *(f"https://example.com/item/{i}" for i in range(50)),
    ]
    f = tmp_path / "urls.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = build_spec([str(f)])
    assert any(isinstance(row, LineBlock) for row in _rows(spec, None, AT))
    store = ItemStore.create(tmp_path / "items.db", durable=False)
    try:
        store.enqueue(_rows(spec, None, AT), chunk=chunk)
        got = store.conn.execute("SELECT key, data, kind, status FROM items ORDER BY seq").fetchall()
        dropped = store.get_meta("duplicates_dropped")
        read = store.get_meta("enqueue_read")
    finally:
        store.close()
    want: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    for key, data, kind, status, *_ in reference_rows(spec):
        if key not in seen:
            seen.add(key)
            want.append((key, data, kind, status))
    assert got == want
    assert dropped == len(lines) - len(want) == 3
    assert read == len(lines)
