"""A file without a suffix is one item; `run` says so when the file reads as a list of lines.

`batchtui run urls --cmd 'curl {}'` ran curl once, on the file's path, and said "1 items": a
list of URLs in a file named without .txt is the likely mistake. The run goes on as asked (the
kind comes from the suffix, as documented); the note says what it is and how to have one item
per line."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtui.engine.sources import build_spec, one_item_list, reads_as_lines

from .conftest import invoke_in_process


def test_reads_as_lines_counts_text_lines_and_refuses_binary_and_single_lines(tmp_path: Path) -> None:
    listing = tmp_path / "urls"
    listing.write_text("https://a.example/1\n\n  \nhttps://a.example/2\nhttps://a.example/3")
    assert reads_as_lines(str(listing)) == 3  # blank lines do not count, the last needs no newline
    one = tmp_path / "one"
    one.write_text("just one line\n")
    assert reads_as_lines(str(one)) == 0
    binary = tmp_path / "blob"
    binary.write_bytes(b"a\nb\n\x00c\n")
    assert reads_as_lines(str(binary)) == 0
    latin = tmp_path / "latin"
    latin.write_bytes(b"caf\xe9\nth\xe9\n")
    assert reads_as_lines(str(latin)) == 0
    assert reads_as_lines(str(tmp_path / "missing")) == 0


def test_a_long_file_is_judged_by_its_first_64_kib_cut_at_a_line(tmp_path: Path) -> None:
    big = tmp_path / "hosts"
    line = "h\u00e9\u00e9\u00e9\u00e9.example\n"  # two-byte characters: 64 KiB falls inside one of them
    big.write_text(line * 20_000)
    lines = reads_as_lines(str(big))
    per_line = len(line.encode())
    assert lines == 64 * 1024 // per_line  # whole lines of the first 64 KiB, none cut
    found = one_item_list(build_spec([str(big)]))
    assert found is not None and found.lines == lines and not found.whole


@pytest.mark.parametrize(
    ("name", "content", "as_kind", "expected"),
    [
        ("urls", "a\nb\nc\n", "auto", 3),
        ("urls.txt", "a\nb\nc\n", "auto", None),  # lines already
        ("notes.md", "a\nb\nc\n", "auto", None),  # a suffix: a file the user meant
        ("urls", "a\nb\nc\n", "files", None),  # said so
        ("urls", "a\n", "auto", None),  # one line: nothing to split
    ],
)
def test_one_item_list_only_for_a_lone_suffixless_list(
    tmp_path: Path, name: str, content: str, as_kind: str, expected: int | None
) -> None:
    path = tmp_path / name
    path.write_text(content)
    found = one_item_list(build_spec([str(path)], as_kind=as_kind), as_kind)  # type: ignore[arg-type]
    assert (found.lines if found else None) == expected
    if found:
        assert found.path == str(path) and found.whole


def test_two_sources_are_files_the_user_meant(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x\ny\n")
    b.write_text("x\ny\n")
    assert one_item_list(build_spec([str(a), str(b)])) is None


def test_run_says_it_and_runs_what_was_asked(tmp_path: Path) -> None:
    urls = tmp_path / "urls"
    urls.write_text("https://a.example/1\nhttps://a.example/2\n")
    out = tmp_path / "out"
    proc = invoke_in_process(["run", str(urls), "--cmd", "true", "--headless"], out=out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "note: urls has no suffix, so it is one item (the file itself), though it reads as a list "
        "(2 lines); for one item per line, add --as lines (or name it .txt)"
    ) in proc.stderr
    assert ": 1 item -> " in proc.stderr  # one item, said in the singular
    again = invoke_in_process(
        ["run", str(urls), "--as", "lines", "--cmd", "true", "--headless"], out=tmp_path / "out2", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "note:" not in again.stderr
    assert ": 2 items -> " in again.stderr


def test_the_note_shows_a_hostile_name_as_plain_text(tmp_path: Path) -> None:
    evil = tmp_path / "list\x1b[31mred"
    evil.write_text("a\nb\n")
    proc = invoke_in_process(["run", str(evil), "--cmd", "true", "--headless"], out=tmp_path / "o", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr
    assert "note: list" in proc.stderr


def test_add_says_it_too(tmp_path: Path) -> None:
    first = tmp_path / "first.txt"
    first.write_text("a\n")
    out = tmp_path / "out"
    made = invoke_in_process(["run", str(first), "--cmd", "true", "--headless"], out=out, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (batch,) = [p.name for p in out.iterdir() if p.is_dir()]
    more = tmp_path / "more"
    more.write_text("b\nc\n")
    added = invoke_in_process(["add", batch, str(more)], out=out, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "note: more has no suffix, so it is one item" in added.stderr
    assert f"batch {batch}: 1 item added" in added.stdout
