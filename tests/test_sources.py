"""Item sources: every kind on real files in tmp_path, keys, errors, and streaming memory."""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine import sources
from batchtui.engine.enqueue import _data_json
from batchtui.engine.errors import UserError
from batchtui.engine.models import Unreadable
from batchtui.engine.shell.item import load_data
from batchtui.engine.sources import (
    SourceEntry,
    SourceItem,
    SourceSpec,
    build_spec,
    describe,
    fields_of,
    iter_items,
    normalize_line_key,
    record_hash,
)


def items(spec: SourceSpec, stdin: io.StringIO | None = None) -> list[SourceItem]:
    return list(iter_items(spec, stdin))


def write(path: Path, text: str = "x\n", encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def dir_spec(root: Path, **kw: Any) -> SourceSpec:
    return SourceSpec(entries=(SourceEntry(kind="dir", path=str(root)),), **kw)


def one(kind: str, path: Path | str, **kw: Any) -> SourceSpec:
    return SourceSpec(entries=(SourceEntry(kind=kind, path=str(path)),), **kw)  # type: ignore[arg-type]


def rel_keys(root: Path, got: list[SourceItem]) -> list[str]:
    real = os.path.realpath(root)
    return [os.path.relpath(i.key, real) for i in got]


# -- build_spec ------------------------------------------------------------------------------


def test_build_spec_detects_kinds_and_makes_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["d/", "a.csv", "b.TSV", "c.jsonl", "e.ndjson", "f.txt", "g.lst", "h.list", "i.urls", "j.py", "k"]
    for n in names:
        if n.endswith("/"):
            (tmp_path / n).mkdir()
        else:
            write(tmp_path / n)
    monkeypatch.chdir(tmp_path)
    spec = build_spec([*names, "-"])
    assert [e.kind for e in spec.entries] == [
        "dir",
        "csv",
        "csv",
        "jsonl",
        "jsonl",
        "lines",
        "lines",
        "lines",
        "lines",
        "files",
        "files",
        "stdin",
    ]
    assert spec.entries[0].path == str(tmp_path / "d")
    assert spec.entries[1].path == str(tmp_path / "a.csv")
    assert spec.entries[-1].path == "-"
    assert all(os.path.isabs(e.path) for e in spec.entries[:-1])


def test_build_spec_as_kind_forces_non_dir_args(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write(tmp_path / "urls.data")
    write(tmp_path / "x.csv")
    spec = build_spec([str(tmp_path / "d"), str(tmp_path / "urls.data"), str(tmp_path / "x.csv"), "-"], as_kind="lines")
    assert [e.kind for e in spec.entries] == ["dir", "lines", "lines", "stdin"]
    assert build_spec([str(tmp_path / "x.csv")], as_kind="files").entries[0].kind == "files"


def test_build_spec_options_are_kept_and_roundtrip_through_json(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "id,x\n1,2\n")
    (tmp_path / "d").mkdir()
    spec = build_spec(
        [str(tmp_path / "a.csv"), str(tmp_path / "d")],
        glob="./*.py",
        follow_symlinks=True,
        encoding="latin-1",
        key_field="id",
        delimiter="\\t",
    )
    assert (spec.glob, spec.follow_symlinks, spec.encoding, spec.key_field, spec.delimiter) == (
        "*.py",
        True,
        "latin-1",
        "id",
        "\t",
    )
    dumped = orjson.loads(orjson.dumps(spec.model_dump(mode="json")))
    assert SourceSpec.model_validate(dumped) == spec
    with pytest.raises(Exception, match="frozen"):
        spec.glob = "x"  # type: ignore[misc]
    with pytest.raises(Exception, match="extra"):
        SourceSpec.model_validate({**dumped, "bogus": 1})


@pytest.mark.parametrize(
    ("args", "kw", "message"),
    [
        ([], {}, "no source given"),
        (["{t}/missing.csv"], {}, "no such file or directory: .*missing.csv"),
        (["-", "-"], {}, r"stdin \(-\) is given more than once"),
        ([""], {}, "empty path"),
        (["{t}/f.txt"], {"encoding": "no-such-codec"}, "unknown encoding 'no-such-codec'"),
        # Codecs open() cannot read text with (a LookupError or UnicodeError traceback once):
        # refused up front, as an unknown one is.
        (["{t}/f.txt"], {"encoding": "rot13"}, r"encoding 'rot13' is not a text encoding \(it turns bytes into"),
        (["{t}/f.csv"], {"encoding": "base64"}, "encoding 'base64' is not a text encoding"),
        (["{t}/f.txt"], {"encoding": "hex"}, "encoding 'hex' is not a text encoding"),
        (["{t}/f.txt"], {"encoding": "zlib"}, "encoding 'zlib' is not a text encoding"),
        (["{t}/f.txt"], {"encoding": "idna"}, r"encoding 'idna' cannot read text files \(it can only stop at"),
        (["{t}/f.csv"], {"encoding": "punycode"}, "encoding 'punycode' cannot read text files"),
        (["{t}/f.csv"], {"delimiter": ";;"}, "--delimiter must be one character"),
        (["{t}/f.txt"], {"glob": "*.py"}, "--glob .* applies only to directory sources"),
        (["{t}/f.txt"], {"key_field": "id"}, "--key-field applies only to CSV and JSONL"),
        (["{t}/f.csv"], {"key_field": ""}, "--key-field is empty"),
        (["{t}/f.txt"], {"delimiter": ";"}, "--delimiter applies only to CSV"),
        (["{t}/f.txt"], {"as_kind": "xml"}, "unknown source kind"),
        # An option that would change nothing is refused: the user meant something by it.
        (["{t}"], {"glob": ""}, "--glob is empty"),
        (["{t}"], {"glob": " ./ "}, "--glob is empty"),  # an unset shell variable: every file would run
        (["{t}"], {"glob": "/etc/*"}, r"--glob '/etc/\*' starts with '/'.* \(give 'etc/\*'\)"),  # never a match
        (["{t}/f.txt"], {"follow_symlinks": True}, "--follow-symlinks applies only to directory sources"),
        (["{t}"], {"encoding": "latin-1"}, "--encoding applies only to line, CSV and JSONL sources"),
        (["{t}/f.pdf"], {"encoding": "latin-1"}, "--encoding applies only to line, CSV and JSONL sources"),
        (["-"], {"as_kind": "jsonl"}, r"--as jsonl does not apply to stdin \(-\), which is read as lines"),
        (["{t}/f.csv", "-"], {"as_kind": "csv"}, r"--as csv does not apply to stdin"),
        (["{t}"], {"as_kind": "lines"}, r"--as lines applies only to file sources \(not directories\)"),
    ],
)
def test_build_spec_errors(tmp_path: Path, args: list[str], kw: dict[str, Any], message: str) -> None:
    write(tmp_path / "f.txt")
    write(tmp_path / "f.csv", "a\n")
    write(tmp_path / "f.pdf")
    with pytest.raises(UserError, match=message):
        build_spec([a.format(t=tmp_path) for a in args], **kw)


def test_the_options_that_refuse_elsewhere_are_taken_where_they_apply(tmp_path: Path) -> None:
    write(tmp_path / "f.txt")
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "x.py")
    assert build_spec([str(tmp_path / "d")], follow_symlinks=True, glob="./*.py").glob == "*.py"
    assert build_spec([str(tmp_path / "f.txt")], encoding="latin-1").encoding == "latin-1"
    assert build_spec(["-"], encoding="latin-1", as_kind="lines").encoding == "latin-1"
    assert build_spec([str(tmp_path / "f.txt")]).encoding == "utf-8"  # not given: UTF-8
    # --as applies to the file among the sources; the directory is walked as ever.
    spec = build_spec([str(tmp_path / "d"), str(tmp_path / "f.txt")], as_kind="lines")
    assert [e.kind for e in spec.entries] == ["dir", "lines"]


def test_build_spec_broken_symlink_fifo_and_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"broken symlink: .*dangling"):
        build_spec([str(tmp_path / "dangling")])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # A pipe cannot be one item, the file itself: with no suffix its lines are the items, as
    # stdin's (e.g. bash process substitution); a suffix still says how to read it.
    assert build_spec([str(fifo)]).entries[0].kind == "lines"
    assert build_spec([str(fifo)], as_kind="lines").entries[0].kind == "lines"
    os.mkfifo(tmp_path / "rows.csv")
    assert build_spec([str(tmp_path / "rows.csv")]).entries[0].kind == "csv"
    with pytest.raises(
        UserError, match=r"not a regular file: .*pipe \(a pipe or a device: its lines are items with --as lines\)"
    ):
        build_spec([str(fifo)], as_kind="files")
    (tmp_path / "plain").write_text("x\n")
    assert build_spec([str(tmp_path / "plain")]).entries[0].kind == "files"  # a regular file stays one item
    write(tmp_path / "secret.txt")
    (tmp_path / "locked").mkdir()
    # Running as root makes chmod useless, so deny access the way os.access would.
    monkeypatch.setattr(sources.os, "access", lambda *_a, **_k: False)
    with pytest.raises(UserError, match=r"file not readable: .*secret\.txt"):
        build_spec([str(tmp_path / "secret.txt")])
    with pytest.raises(UserError, match=r"directory not readable: .*locked"):
        build_spec([str(tmp_path / "locked")])


def test_build_spec_odd_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["with space.bin", 'quote\'s "q".bin', "new\nline.bin", "-leading-dash.bin", "ünï cødé ✓.bin", "-"]
    for n in names:
        write(tmp_path / n, n)
    monkeypatch.chdir(tmp_path)
    # "./-" is a file named "-", not stdin; "-leading-dash" is a path, not an option.
    args = [n if n != "-" else "./-" for n in names]
    spec = build_spec(args)
    assert [e.kind for e in spec.entries] == ["files"] * len(names)
    got = items(spec)
    assert [i.key for i in got] == [str(tmp_path / n) for n in names]
    assert all(i.data == i.key and i.invalid is None for i in got)
    for i in got:
        assert Path(i.data).read_text() == Path(i.data).name


# -- directories -------------------------------------------------------------------------------


def make_tree(root: Path) -> None:
    for rel in ["b.py", "a.txt", "sub/c.py", "sub/deep/d.py", "sub/deep/e.md", "z/f.py", ".hidden.py", ".git/x.py"]:
        write(root / rel, rel)


def test_dir_walk_recursive_sorted_regular_files_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    os.mkfifo(root / "sub" / "fifo")
    unreadable = Unreadable()
    got = list(iter_items(dir_spec(root), unreadable=unreadable))
    assert rel_keys(root, got) == ["a.txt", "b.py", "sub/c.py", "sub/deep/d.py", "sub/deep/e.md", "z/f.py"]
    assert (unreadable.count, unreadable.left_out) == (0, 1)
    assert unreadable.left_out_summary() == (
        f"1 entry of the source was left out by rule: {root / 'sub' / 'fifo'} (a fifo, not a regular file)"
    )
    assert all(i.data == i.key and i.key == os.path.realpath(i.key) for i in got)
    assert all(i.origin == "" and i.invalid is None for i in got)


def test_dir_walk_hidden_files_can_be_included(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    got = rel_keys(root, items(dir_spec(root, skip_hidden=False)))
    assert ".hidden.py" in got and ".git/x.py" in got
    assert len(got) == 8


def test_dir_root_may_itself_be_hidden(tmp_path: Path) -> None:
    root = tmp_path / ".config"
    write(root / "a.toml")
    assert rel_keys(root, items(dir_spec(root))) == ["a.toml"]


def test_glob_on_name_matches_at_any_depth(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    got = rel_keys(root, items(dir_spec(root, glob="*.py")))
    assert got == ["b.py", "sub/c.py", "sub/deep/d.py", "z/f.py"]


def test_glob_with_slash_matches_relative_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    # As a shell matches a path: "*" stays within a folder (fnmatch's crossed "/": sub/*.py took
    # sub/deep/d.py too), "**/" is any number of folders, none included.
    assert rel_keys(root, items(dir_spec(root, glob="sub/*.py"))) == ["sub/c.py"]
    assert rel_keys(root, items(dir_spec(root, glob="sub/**/*.py"))) == ["sub/c.py", "sub/deep/d.py"]
    assert rel_keys(root, items(dir_spec(root, glob="**/*.py"))) == ["b.py", "sub/c.py", "sub/deep/d.py", "z/f.py"]
    every_in_sub = [key for key in rel_keys(root, items(dir_spec(root))) if key.startswith("sub/")]
    assert rel_keys(root, items(dir_spec(root, glob="sub/**"))) == every_in_sub and len(every_in_sub) > 2
    assert rel_keys(root, items(dir_spec(root, glob="sub/deep/*.md"))) == ["sub/deep/e.md"]
    assert rel_keys(root, items(dir_spec(root, glob="*/deep/?.py"))) == ["sub/deep/d.py"]
    # build_spec drops a leading "./"
    spec = build_spec([str(root)], glob="./z/*.py")
    assert rel_keys(root, items(spec)) == ["z/f.py"]


def test_symlinks_not_followed_by_default(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "real.txt")
    outside = tmp_path / "outside"
    write(outside / "o.txt")
    (root / "link.txt").symlink_to(outside / "o.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "broken").symlink_to(tmp_path / "nowhere")
    write(outside / "o.md")
    (root / "other.md").symlink_to(outside / "o.md")
    unreadable = Unreadable()
    assert rel_keys(root, list(iter_items(dir_spec(root), unreadable=unreadable))) == ["real.txt"]
    # Never in silence: the links that would have given items are counted and named (a broken
    # one would give nothing). None is an error: the unreadable count stays 0.
    assert unreadable.count == 0
    assert unreadable.left_out == 4
    assert [(e.path, e.reason) for e in unreadable.left_out_examples] == [
        (str(root / "link.txt"), "a symbolic link, not followed: --follow-symlinks"),
        (str(root / "linkdir"), "a symbolic link to a folder, not followed: --follow-symlinks"),
        (str(root / "loop"), "a symbolic link to a folder, not followed: --follow-symlinks"),
        (str(root / "other.md"), "a symbolic link, not followed: --follow-symlinks"),
    ]
    # With a glob, a link to a file counts only where the glob takes its name.
    unreadable = Unreadable()
    assert rel_keys(root, list(iter_items(dir_spec(root, glob="*.md"), unreadable=unreadable))) == []
    assert [e.path for e in unreadable.left_out_examples] == [
        str(root / "linkdir"),
        str(root / "loop"),
        str(root / "other.md"),
    ]


def test_symlinks_followed_with_flag_and_loops_stop(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "real.txt")
    write(root / "sub" / "s.txt")
    outside = tmp_path / "outside"
    write(outside / "o.txt")
    write(outside / "inner" / "i.txt")
    (root / "link.txt").symlink_to(outside / "o.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a loop back to the root
    (outside / "back").symlink_to(root / "sub", target_is_directory=True)  # and a longer one
    (root / "broken").symlink_to(tmp_path / "nowhere")
    got = items(dir_spec(root, follow_symlinks=True))
    keys = [i.key for i in got]
    # Keys are resolved paths: a linked file appears under its target's name. Name order:
    # link.txt, linkdir/{back,inner,o.txt}, real.txt, sub. sub is first reached through
    # linkdir/back, so walking it again from the root (and sub/up -> root) is cut off.
    assert keys == [
        str(outside / "o.txt"),  # link.txt
        str(root / "sub" / "s.txt"),  # linkdir/back/s.txt
        str(outside / "inner" / "i.txt"),  # linkdir/inner/i.txt
        str(outside / "o.txt"),  # linkdir/o.txt: same key, so the store drops the duplicate
        str(root / "real.txt"),
    ]
    assert all(i.data == i.key for i in got)


def test_unreadable_subdirectory_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    write(root / "a" / "1.txt")
    write(root / "b" / "2.txt")
    write(root / "c" / "3.txt")
    real_scandir = os.scandir

    def scandir(path: str) -> Any:
        if os.path.basename(path) == "b":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    assert rel_keys(root, items(dir_spec(root))) == ["a/1.txt", "c/3.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_unreadable_subdirectory_is_skipped_for_real(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "a" / "1.txt")
    write(root / "b" / "2.txt")
    (root / "b").chmod(0)
    try:
        assert rel_keys(root, items(dir_spec(root))) == ["a/1.txt"]
    finally:
        (root / "b").chmod(0o755)


def test_excluded_directory_is_pruned(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "in.txt")
    write(root / "batch_output" / "b1" / "items.db")
    got = items(dir_spec(root, exclude=(str(root / "batch_output"),)))
    assert rel_keys(root, got) == ["in.txt"]


@pytest.mark.parametrize("source", ["batch_output", "batch_output/b1", "batch_output/b1/logs", "link"])
def test_a_source_in_the_excluded_directory_is_refused_not_walked(tmp_path: Path, source: str) -> None:
    """`run out -o out`, `add B out`, `add B out/B`: the batches' own files were items."""
    root = tmp_path / "root"
    write(root / "batch_output" / "b1" / "items.db")
    write(root / "batch_output" / "b1" / "logs" / "0.1.out")
    (root / "link").symlink_to(root / "batch_output" / "b1")
    with pytest.raises(UserError, match="the folder batchtui keeps its batches in"):
        items(dir_spec(root / source, exclude=(str(root / "batch_output"),)))
    # Next to it, or above it, the walk goes on and prunes it.
    write(root / "batch_outputs" / "x.txt")
    got = items(dir_spec(root / "batch_outputs", exclude=(str(root / "batch_output"),)))
    assert rel_keys(root / "batch_outputs", got) == ["x.txt"]


def test_dir_walk_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    for i in range(30):
        write(root / f"d{i:02d}" / "f.txt")
    calls: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str) -> Any:
        calls.append(path)
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    it = iter_items(dir_spec(root))
    first = next(it)
    assert first.key.endswith("d00/f.txt")
    assert len(calls) == 2  # the root and the first subdirectory, not the whole tree
    assert len(list(it)) == 29


def test_dir_walk_odd_names_and_non_utf8_name(tmp_path: Path) -> None:
    root = tmp_path / "root"
    names = ["with space", 'it\'s "quoted"', "new\nline", "-dash", "ünï ✓", "tab\there"]
    for n in names:
        write(root / n)
    bad = os.fsencode(str(root)) + b"/bad-\xff-name"
    fd = os.open(bad, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    got = items(dir_spec(root))
    assert all(i.invalid is None for i in got)  # a name of raw bytes is an item that can run
    odd = [i for i in got if "\\xff" in i.key]
    assert sorted(os.path.basename(i.key) for i in got if i not in odd) == sorted(names)
    assert len(odd) == 1
    assert os.fsencode(odd[0].data) == bad  # the data keeps the exact bytes
    # Everything must be storable: keys as UTF-8 text, data as JSON (read back to the same).
    for i in got:
        i.key.encode("utf-8")
        assert load_data(_data_json(i.data)) == i.data


def test_explicit_file_key_is_resolved_path(tmp_path: Path) -> None:
    target = write(tmp_path / "real" / "t.bin")
    (tmp_path / "alias.bin").symlink_to(target)
    spec = build_spec([str(tmp_path / "alias.bin"), str(target)])
    got = items(spec)
    assert [i.key for i in got] == [str(target), str(target)]
    assert got[0].data == str(target)


def test_explicit_file_removed_after_spec(tmp_path: Path) -> None:
    f = write(tmp_path / "gone.bin")
    spec = build_spec([str(f)])
    f.unlink()
    with pytest.raises(UserError, match=r"gone\.bin"):
        items(spec)


# -- lines and stdin --------------------------------------------------------------------------


def test_lines_skip_blanks_and_comments_and_strip(tmp_path: Path) -> None:
    f = write(
        tmp_path / "urls.txt",
        "\ufeff# a comment\nhttps://Example.COM:443/a#frag\n\n   \n  plain item  \r\n#x\nHTTPS://example.com/a\n",
    )
    got = items(build_spec([str(f)]))
    assert [i.data for i in got] == ["https://Example.COM:443/a#frag", "plain item", "HTTPS://example.com/a"]
    assert [i.origin for i in got] == ["urls.txt:2", "urls.txt:5", "urls.txt:7"]
    # The two URL spellings are the same URL: one key, so the store keeps one.
    assert got[0].key == got[2].key == "https://example.com/a"
    assert got[1].key == "plain item"


def test_lines_bom_stripped_from_first_line(tmp_path: Path) -> None:
    f = tmp_path / "l.txt"
    f.write_bytes(b"\xef\xbb\xbfhttp://a.example/\nb\n")
    assert [i.data for i in items(one("lines", f))] == ["http://a.example/", "b"]


def test_lines_bad_encoding_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_bytes(b"ok 1\nok 2\n" + b"x\n" * 5000 + b"caf\xe9\nafter\n")
    it = iter_items(one("lines", f))
    assert next(it).data == "ok 1"  # items before the bad line still come
    with pytest.raises(UserError, match=r"bad.txt: line 5003 is not valid utf-8"):
        list(it)


def test_lines_other_encoding(tmp_path: Path) -> None:
    f = tmp_path / "latin.txt"
    f.write_bytes("café\nnaïve\n".encode("latin-1"))
    assert [i.data for i in items(one("lines", f, encoding="latin-1"))] == ["café", "naïve"]
    f16 = tmp_path / "u16.txt"
    f16.write_bytes("α\nβ\n".encode("utf-16"))
    assert [i.data for i in items(one("lines", f16, encoding="utf-16"))] == ["α", "β"]


@pytest.mark.parametrize("kind", ["lines", "csv", "jsonl"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_file_without_the_bom_its_encoding_needs_is_a_user_error_naming_it(
    tmp_path: Path, kind: str, encoding: str
) -> None:
    """utf-16 and utf-32 read a BOM first: without one the decoder raised UnicodeError (no
    UnicodeDecodeError, so no line is marked) out of the text layer, a traceback."""
    f = tmp_path / f"nobom.{ {'lines': 'txt'}.get(kind, kind) }"
    f.write_bytes({"lines": b"1\n2\n3\n", "csv": b"id,v\n1,a\n2,b\n", "jsonl": b'{"a": 1}\n{"a": 2}\n'}[kind])
    with pytest.raises(UserError) as got:
        items(one(kind, f, encoding=encoding))
    assert str(got.value) == (
        f"{f} is not valid {encoding} text: {encoding.upper()} stream does not start with BOM"
        f" (for a file without one, pass {encoding}-le or {encoding}-be)"
    )


def test_stdin_lines_from_stringio() -> None:
    spec = build_spec(["-"])
    stdin = io.StringIO("# header\nhttp://A.example:80\n\nhttp://a.example/\nfoo\n")
    got = items(spec, stdin)
    assert [i.data for i in got] == ["http://A.example:80", "http://a.example/", "foo"]
    assert [i.key for i in got] == ["http://a.example/", "http://a.example/", "foo"]
    assert [i.origin for i in got] == ["<stdin>:2", "<stdin>:4", "<stdin>:5"]


def test_real_stdin_is_decoded_with_the_spec_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BytesIO("café\n\nnaïve\n".encode("latin-1"))
    fake = io.TextIOWrapper(raw, encoding="utf-8")
    monkeypatch.setattr(sources.lines.sys, "stdin", fake)
    spec = build_spec(["-"], encoding="latin-1")
    assert [i.data for i in iter_items(spec)] == ["café", "naïve"]
    assert not raw.closed  # the stdin buffer is left open for whoever owns it
    raw.seek(0)
    with pytest.raises(UserError, match="<stdin>: line 1 is not valid utf-8"):
        list(iter_items(build_spec(["-"]), fake))


def test_mixed_entries_in_order(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "one.bin")
    f = write(tmp_path / "two.bin")
    lines = write(tmp_path / "l.txt", "three\n")
    spec = build_spec([str(lines), "-", str(d), str(f)])
    got = items(spec, io.StringIO("from stdin\n"))
    assert [i.data for i in got] == ["three", "from stdin", str(d / "one.bin"), str(f)]
    assert describe(spec) == "4 sources"


# -- CSV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("delim", [",", ";", "\t", "|"])
def test_csv_delimiter_sniffed(tmp_path: Path, delim: str) -> None:
    rows = [["id", "name", "note"], ["1", "Ann", "x y"], ["2", "Bob", "z"], ["3", "Cy", ""]]
    f = write(tmp_path / "d.csv", "".join(delim.join(r) + "\r\n" for r in rows))
    got = items(build_spec([str(f)]))
    assert [i.data for i in got] == [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [i.origin for i in got] == ["d.csv:2", "d.csv:3", "d.csv:4"]
    assert all(i.invalid is None for i in got)


def test_tsv_and_named_delimiters(tmp_path: Path) -> None:
    f = write(tmp_path / "t.tsv", "a\tb, c\n1\t2, 3\n")
    spec = build_spec([str(f)])
    assert spec.entries[0].kind == "csv"
    assert [i.data for i in items(spec)] == [{"a": "1", "b, c": "2, 3"}]
    assert build_spec([str(f)], delimiter="tab").delimiter == "\t"
    assert build_spec([str(f)], delimiter="semicolon").delimiter == ";"
    assert build_spec("-").entries[0].kind == "stdin"  # a lone string is one argument


def test_csv_explicit_delimiter_and_quoted_fields(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", 'a;b\n"x;1";"multi\nline"\nlast;row\n')
    got = items(build_spec([str(f)], delimiter=";"))
    assert [i.data for i in got] == [{"a": "x;1", "b": "multi\nline"}, {"a": "last", "b": "row"}]
    assert [i.origin for i in got] == ["d.csv:2", "d.csv:4"]  # line where each record starts


def test_csv_single_column_and_header_spaces(tmp_path: Path) -> None:
    f = write(tmp_path / "u.csv", "url\nhttp://a/x;y\nhttp://b/x;y\n")
    assert [i.data for i in items(one("csv", f))] == [{"url": "http://a/x;y"}, {"url": "http://b/x;y"}]
    g = write(tmp_path / "s.csv", "id, name\n1, Ann\n")
    assert items(one("csv", g))[0].data == {"id": "1", "name": " Ann"}


def test_csv_bom_and_empty_rows(tmp_path: Path) -> None:
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbf\n\nid,v\r\n1,a\r\n\r\n,\r\n , \r\n2,b\r\n")
    got = items(one("csv", f))
    assert [i.data for i in got] == [{"id": "1", "v": "a"}, {"id": "2", "v": "b"}]
    assert [i.origin for i in got] == ["bom.csv:4", "bom.csv:8"]
    assert fields_of(one("csv", f)) == {"id", "v"}


def test_csv_ragged_row_is_an_invalid_item(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12\n")
    got = items(one("csv", f))
    assert [i.invalid for i in got] == [
        None,
        "row 3 has 2 fields, header has 3",
        "row 4 has 4 fields, header has 3",
        None,
    ]
    assert got[1].data == {"_raw": ["4", "5"], "_line": 3}
    assert got[1].key == f"{f}:3" and got[2].key == f"{f}:4"
    assert got[3].data == {"a": "10", "b": "11", "c": "12"}


def test_csv_huge_field_loads(tmp_path: Path) -> None:
    big = "x" * (2 * 1024 * 1024)
    f = write(tmp_path / "big.csv", f"id,body\n1,{big}\n2,small\n")
    got = items(one("csv", f))
    assert len(got) == 2
    assert got[0].data["body"] == big
    assert got[1].data == {"id": "2", "body": "small"}


def test_csv_bad_encoding_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "enc.csv"
    f.write_bytes(b"id,name\n1,ok\n2,caf\xe9\n")
    with pytest.raises(UserError, match=r"enc.csv: line 3 is not valid utf-8"):
        items(one("csv", f))
    got = items(one("csv", f, encoding="cp1252"))
    assert got[1].data == {"id": "2", "name": "café"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A quote left open swallowed every later row into one field, silently.
        ('id,url\n1,http://a\n2,"http://b\n3,http://c\n', r"q.csv: line 3: a quoted field opens in this row and"),
        # "a"b became ab, silently.
        ('id,u\n1,"a"b\n2,c\n', r"q.csv: line 2: ',' expected after '\"' \(a quote inside a quoted field is"),
    ],
)
def test_csv_quotes_that_would_change_the_data_are_refused_at_their_line(
    tmp_path: Path, text: str, message: str
) -> None:
    f = write(tmp_path / "q.csv", text)
    with pytest.raises(UserError, match=message):
        items(one("csv", f))


def test_csv_quotes_done_right_still_read(tmp_path: Path) -> None:
    f = write(tmp_path / "ok.csv", 'id,u\n1,"a\nb"\n2,"c ""quoted"""\n3,plain "inner" quote\n')
    assert [i.data["u"] for i in items(one("csv", f))] == ["a\nb", 'c "quoted"', 'plain "inner" quote']


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty CSV file: a header line"),
        ("\n\n,,\n", "empty CSV file"),
        ("a,,c\n1,2,3\n", "header column 2 has no name"),
        ("a,b,\n1,2,3\n", "header column 3 has no name"),
        ("a,b,a\n1,2,3\n", "header names column 'a' twice"),
    ],
)
def test_csv_header_required(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path / "h.csv", text)
    with pytest.raises(UserError, match=message):
        items(one("csv", f))
    with pytest.raises(UserError, match=message):
        fields_of(one("csv", f))


def test_csv_key_field(tmp_path: Path) -> None:
    f = write(tmp_path / "k.csv", "id,v\n7,a\n7,b\n,c\n8,d\n")
    got = items(one("csv", f, key_field="id"))
    assert [i.key for i in got] == ["7", "7", f"{f}:4", "8"]
    assert got[2].invalid == "line 4: field 'id' is empty"
    with pytest.raises(UserError, match="--key-field 'nope' is not a column; columns: id, v"):
        items(one("csv", f, key_field="nope"))


def test_csv_record_key_is_hash_without_key_field(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", "x,y\n1,2\n1,2\n")
    g = write(tmp_path / "b.csv", "y,x\n2,1\n")
    got = items(SourceSpec(entries=(SourceEntry(kind="csv", path=str(f)), SourceEntry(kind="csv", path=str(g)))))
    assert len({i.key for i in got}) == 1
    assert got[0].key == record_hash({"x": "1", "y": "2"})


# -- JSONL -------------------------------------------------------------------------------------


def test_jsonl_invalid_lines_become_invalid_items(tmp_path: Path) -> None:
    f = write(
        tmp_path / "r.jsonl",
        '{"id": 1, "t": "a"}\n\n{not json\n[1, 2]\n"str"\n  {"id": 2, "t": "b"}  \r\n{"id": 3}',
    )
    got = items(one("jsonl", f))
    assert [i.invalid is None for i in got] == [True, False, False, False, True, True]
    assert got[0].data == {"id": 1, "t": "a"} and got[0].origin == "r.jsonl:1"
    assert got[1].invalid is not None and got[1].invalid.startswith("line 3: invalid JSON")
    assert got[1].data == {"_raw": "{not json", "_line": 3}
    assert got[2].invalid == "line 4: expected a JSON object, got an array"
    assert got[3].invalid == "line 5: expected a JSON object, got a string"
    assert [i.key for i in got[1:4]] == [f"{f}:3", f"{f}:4", f"{f}:5"]
    assert got[5].data == {"id": 3}  # no trailing newline


def test_jsonl_raw_is_capped_and_bad_bytes_do_not_stop_the_batch(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_bytes(b"{" + b"x" * 20000 + b"\n" + b'{"a": "caf\xe9"}\n{"a": 1}\n')
    got = items(one("jsonl", f))
    assert len(got[0].data["_raw"]) == 10_000
    assert got[1].invalid == "line 2: not valid utf-8 text"
    assert got[1].data["_raw"] == '{"a": "caf\ufffd"}'
    assert got[2].data == {"a": 1}
    for i in got:
        orjson.dumps(i.data)


def test_jsonl_key_field(tmp_path: Path) -> None:
    f = write(tmp_path / "k.jsonl", '{"id": "a"}\n{"id": 5}\n{"x": 1}\n{"id": null}\n{"id": "a", "more": true}\n')
    got = items(build_spec([str(f)], key_field="id"))
    assert [i.key for i in got] == ["a", "5", f"{f}:3", f"{f}:4", "a"]
    assert got[2].invalid == "line 3: no field 'id'"
    assert got[2].data == {"x": 1}
    assert got[3].invalid == "line 4: field 'id' is empty"


def test_record_hash_stable_across_key_order(tmp_path: Path) -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": "z"}}
    b = {"a": {"x": "z", "y": [1, 2]}, "b": 1}
    assert record_hash(a) == record_hash(b)
    assert len(record_hash(a)) == 32 and int(record_hash(a), 16) >= 0
    assert record_hash(a) != record_hash({"b": 2, "a": {"y": [1, 2], "x": "z"}})
    f = write(tmp_path / "h.jsonl", orjson.dumps(a).decode() + "\n" + orjson.dumps(b).decode() + "\n")
    got = items(one("jsonl", f))
    assert got[0].key == got[1].key == record_hash(a)


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("  HTTP://Example.COM  ", "http://example.com/"),
        ("http://example.com:80/a?q=1#top", "http://example.com/a?q=1"),
        ("https://EXAMPLE.com:443", "https://example.com/"),
        ("https://example.com:8443/A/B", "https://example.com:8443/A/B"),
        ("http://example.com:443/", "http://example.com:443/"),
        ("ftp://Files.Example.com:21/pub", "ftp://files.example.com/pub"),
        ("http://User:Pw@Host.example:80/p", "http://User:Pw@host.example/p"),
        ("http://[::1]:80/x", "http://[::1]/x"),
        ("http://example.com/?b=2&a=1", "http://example.com/?b=2&a=1"),
        ("http://example.com/Path%2F?Q=Case", "http://example.com/Path%2F?Q=Case"),
        ("mailto:Someone@Example.com", "mailto:Someone@Example.com"),
        ("s3://Bucket/Key", "s3://Bucket/Key"),
        ("http://bad:port/x", "http://bad:port/x"),
        ("  Plain Text Line ", "Plain Text Line"),
        ("/some/Path.txt", "/some/Path.txt"),
    ],
)
def test_normalize_line_key(raw: str, key: str) -> None:
    assert normalize_line_key(raw) == key
    assert normalize_line_key(key) == key  # idempotent


def test_duplicate_urls_share_a_key() -> None:
    spellings = [
        "https://example.com/page?x=1",
        "HTTPS://EXAMPLE.COM/page?x=1",
        "https://example.com:443/page?x=1#section",
        "  https://Example.com/page?x=1  ",
    ]
    assert len({normalize_line_key(s) for s in spellings}) == 1
    assert normalize_line_key("https://example.com/Page?x=1") != normalize_line_key(spellings[0])


# -- fields_of and describe ---------------------------------------------------------------------


def test_fields_of(tmp_path: Path) -> None:
    c = write(tmp_path / "a.csv", "id;name\n1;x\n")
    j = write(tmp_path / "b.jsonl", "\nnot json\n[1]\n" + '{"url": "u", "id": 2}\n{"other": 1}\n')
    t = write(tmp_path / "c.txt", "x\n")
    assert fields_of(build_spec([str(c), str(j), str(t)])) == {"id", "name", "url"}
    assert fields_of(build_spec([str(t), "-"])) is None
    empty = write(tmp_path / "e.jsonl", "")
    assert fields_of(build_spec([str(empty)])) == set()


def test_fields_of_does_not_read_a_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "rows"
    os.mkfifo(fifo)
    assert fields_of(build_spec([str(fifo)], as_kind="csv")) == set()


def test_describe(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    u = write(tmp_path / "urls.txt")
    c = write(tmp_path / "t.csv", "a\n1\n")
    f1, f2 = write(tmp_path / "x.bin"), write(tmp_path / "y.bin")
    assert describe(build_spec([str(d)], glob="*.py")) == f"dir {d} (*.py)"
    assert describe(build_spec([str(d)])) == f"dir {d}"
    assert describe(build_spec([str(u)])) == "urls.txt (lines)"
    assert describe(build_spec([str(c)])) == "t.csv (csv)"
    assert describe(build_spec([str(f1)])) == "x.bin"
    assert describe(build_spec([str(f1), str(f2)])) == "2 files"
    assert describe(build_spec(["-"])) == "stdin (lines)"
    # A descriptor's path says what it is whole: "63 (lines)" did not.
    assert describe(SourceSpec(entries=[SourceEntry(kind="lines", path="/dev/fd/63")])) == "/dev/fd/63 (lines)"
    assert describe(build_spec([str(u), str(c)])) == "2 sources"
    odd = write(tmp_path / "new\nline.txt")
    assert "\n" not in describe(build_spec([str(odd)]))


# -- streaming -----------------------------------------------------------------------------------


def _consume(it: Iterator[SourceItem]) -> int:
    n = 0
    for _ in it:
        n += 1
    return n


def test_lines_stream_in_bounded_memory(tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    with f.open("w", encoding="utf-8") as out:
        for i in range(100_000):
            # Some URLs (the normalizing path), mostly plain lines: tracemalloc makes every
            # allocation slow, and the memory bound does not depend on the content.
            out.write(f"https://Example.com:443/items/{i:07d}?p=1#f\n" if i % 10 == 0 else f"item {i:07d}\n")
    assert f.stat().st_size > 1_250_000
    spec = build_spec([str(f)])
    tracemalloc.start()
    try:
        count = _consume(iter_items(spec))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    # Holding the items takes ~22 MB here, the raw lines alone ~9 MB; streaming takes kilobytes.
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"
