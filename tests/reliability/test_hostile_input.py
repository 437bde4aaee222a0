"""Hostile input: file names, lines, CSV and JSONL made to break quoting, parsing and terminals.

No injection anywhere: canary files that a successful shell injection would create must never
appear; item text never reaches the terminal as escape sequences. A bad record fails as an item
and the batch goes on; a bad input as a whole (encoding, no header) is a user error: exit 2, one
clear message, no traceback, no half-made batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from .helpers import (
    PROCS,
    assert_invariants,
    assert_no_traceback,
    batches,
    db,
    invoke,
    invoke_many,
    only_batch,
    store_counts,
    strict_jsonl,
)

CANARY = "PWNED"

HOSTILE_NAMES = [
    f"a; touch {CANARY}1",
    f"$(touch {CANARY}2)",
    f"`touch {CANARY}3`",
    f"x' ; touch {CANARY}4 ; '",
    f'y" ; touch {CANARY}5 ; "',
    f"&& touch {CANARY}6",
    f"| touch {CANARY}7",
    f"> {CANARY}8",
    f"new\nline; touch {CANARY}9",
    "-rf",
    "--help",
    "-",
    "[bold red]markup",  # no "/" in a file name, so no closing tag; still Rich markup
    "[link=evil.example]click",
    "[blink]",
    "\x1b[2J\x1b[31mred\x1b]0;title\x07",
    "tab\there",
    "  spaces  ",
    "*?[glob]",
    "back\\slash",
    "%s%n%x",
    "{}",
    "{path}{name}",
    "ünïcødé ✓ 日本",
    "$HOME",
    "${IFS}",
    "~",
    "'",
    '"',
]


def _canaries(root: Path) -> list[str]:
    found = []
    for _dirpath, dirnames, filenames in os.walk(root):
        found += [n for n in dirnames + filenames if n.startswith(CANARY)]
    return found


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        (src / name).write_text(f"content-{i}")
    # A name that is not UTF-8: an item like the others (its key shows the bytes as \\xNN).
    fd = os.open(os.fsencode(src) + b"/bad-\xff\xfe-name", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    return src


def _by_name(batch: Path) -> dict[str, dict[str, object]]:
    return {Path(str(r["key"])).name: r for r in strict_jsonl(batch / "results.jsonl")}


def test_hostile_file_names_cat_path(tmp_path: Path, out_dir: Path, hostile_dir: Path) -> None:
    proc = invoke(["run", str(hostile_dir), "--cmd", "cat {path}", "--headless"], out=out_dir, cwd=tmp_path)
    assert_no_traceback(proc)
    assert proc.returncode == 0, proc.stderr  # the non-UTF-8 name runs too (issue 15, point 5)
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=len(HOSTILE_NAMES) + 1, state="finished")
    assert checked["counts"]["failed"] == 0 and checked["counts"]["complete"] == len(HOSTILE_NAMES) + 1
    results = _by_name(batch)
    for i, name in enumerate(HOSTILE_NAMES):
        assert results[name]["result"] == {"stdout_tail": f"content-{i}"}, name
    assert results["bad-\\xff\\xfe-name"]["result"] is None  # cat read it (it is empty)
    assert _canaries(tmp_path) == []
    assert "\x1b" not in proc.stdout + proc.stderr


PRINTF_TEMPLATES = ["printf %s {name}", "printf '%s' '{name}'", 'printf "%s" "{name}"']


def test_hostile_file_names_printf_name(tmp_path: Path, hostile_dir: Path) -> None:
    """The name as a bare word, inside the template's single quotes and inside its double quotes
    (three runs at once)."""
    outs = [tmp_path / f"out-{i}" for i in range(len(PRINTF_TEMPLATES))]
    procs = invoke_many(
        [(["run", str(hostile_dir), "--cmd", t, "--headless"], o) for t, o in zip(PRINTF_TEMPLATES, outs, strict=True)],
        cwd=tmp_path,
    )
    for template, proc, out in zip(PRINTF_TEMPLATES, procs, outs, strict=True):
        assert_no_traceback(proc)
        assert proc.returncode == 0, (template, proc.stderr)
        batch = only_batch(out)
        assert_invariants(batch, n_items=len(HOSTILE_NAMES) + 1, state="finished")
        results = _by_name(batch)
        # The exact bytes were printed (the result shows stdout decoded, a byte that is no UTF-8
        # as \xNN, as in its key and in every view).
        assert results["bad-\\xff\\xfe-name"]["result"] == {"stdout_tail": "bad-\\xff\\xfe-name"}, template
        for name in HOSTILE_NAMES:
            # printf prints the name byte for byte; the result keeps the stripped stdout (and a
            # last line that is a JSON object is the result: the file named "{}").
            expected = {} if name == "{}" else {"stdout_tail": name.strip()}
            assert results[name]["result"] == expected, (template, name)
    assert _canaries(tmp_path) == []


def test_item_text_in_errors_never_reaches_the_terminal_raw(tmp_path: Path, out_dir: Path, hostile_dir: Path) -> None:
    """Error messages are built from item output (the stderr tail): summary, show and export must
    print them escaped, never as escape sequences."""
    proc = invoke(
        ["run", str(hostile_dir), "--cmd", "printf '%s\\n' {name} >&2; exit 3", "--headless"],
        out=out_dir,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert_no_traceback(proc)
    batch = only_batch(out_dir)
    assert store_counts(batch)["failed"] == len(HOSTILE_NAMES) + 1
    outputs = [proc.stdout + proc.stderr]
    for args in (["show", batch.name], ["ls"], ["show", batch.name, "--json"], ["export", batch.name]):
        shown = invoke(args, out=out_dir, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert_no_traceback(shown)
        outputs.append(shown.stdout + shown.stderr)
    for text in outputs:
        assert "\x1b" not in text and "\x07" not in text
    assert _canaries(tmp_path) == []


def test_hostile_lines_no_injection_in_any_quoting(tmp_path: Path, out_dir: Path) -> None:
    lines = [
        f"$(touch {CANARY}a)",
        f"`touch {CANARY}b`",
        f"; touch {CANARY}c",
        f"' ; touch {CANARY}d ; '",
        f'" ; touch {CANARY}e ; "',
        f"\\' ; touch {CANARY}f ; \\'",
        f"$'\\x27' ; touch {CANARY}g",
        f"-n $(touch {CANARY}h)",
    ]
    source = tmp_path / "lines.txt"
    source.write_text("".join(line + "\n" for line in lines))
    for template in ("echo {}", "echo '{}'", 'echo "{}"', "echo x{}x", "sh -c 'echo \"$1\"' _ {}"):
        proc = invoke(["run", str(source), "--cmd", template, "--headless"], out=out_dir, cwd=tmp_path)
        assert_no_traceback(proc)
        assert proc.returncode == 0, (template, proc.stderr)
    assert _canaries(tmp_path) == []
    for batch in batches(out_dir):
        assert_invariants(batch, n_items=len(lines), state="finished")


def test_csv_fields_no_injection(tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "rows.csv"
    source.write_text(
        f'id,name\n1,"$(touch {CANARY}i)"\n2,"a""; touch {CANARY}j; echo ""b"\n3,`touch {CANARY}k`\n4,"multi\nline"\n'
    )
    proc = invoke(["run", str(source), "--cmd", "printf %s {name}", "--headless"], out=out_dir, cwd=tmp_path)
    assert_no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    results = sorted(strict_jsonl(only_batch(out_dir) / "results.jsonl"), key=lambda r: int(r["seq"]))
    assert [r["result"]["stdout_tail"] for r in results] == [
        f"$(touch {CANARY}i)",
        f'a"; touch {CANARY}j; echo "b',
        f"`touch {CANARY}k`",
        "multi\nline",
    ]
    assert _canaries(tmp_path) == []


def test_csv_export_of_formula_keys_counts_them_and_writes_them_as_text_for_a_spreadsheet(
    tmp_path: Path, out_dir: Path
) -> None:
    """A key such as =HYPERLINK(...) is a formula to a spreadsheet that opens the export (CSV
    injection). As they are by default (the bytes are the key's), with a note; --spreadsheet
    writes every text cell that starts with = + - @ (tab, CR) after a ', and nothing else."""
    import csv
    import io

    keys = ['=HYPERLINK("http://evil.example","x")', "@SUM(1)", "+1", "-2", "plain", "a=b"]
    source = tmp_path / "keys.txt"
    source.write_text("".join(k + "\n" for k in keys))
    ran = invoke(["run", str(source), "--cmd", "true", "--headless"], out=out_dir, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    batch = only_batch(out_dir).name

    def exported(*extra: str) -> tuple[dict[str, str], str]:
        proc = invoke(["export", batch, "--format", "csv", *extra], out=out_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        rows = list(csv.DictReader(io.StringIO(proc.stdout)))
        return {keys[int(r["seq"])]: r["key"] for r in rows}, proc.stderr

    as_is, note = exported()
    assert as_is == {k: k for k in keys}
    assert "note: 4 cells start with = + - @" in note and "--spreadsheet" in note
    text, quiet = exported("--spreadsheet")
    formulas = {k for k in keys if k[0] in "=+-@"}
    assert text == {k: ("'" + k if k in formulas else k) for k in keys}
    assert "note:" not in quiet
    wrong = invoke(["export", batch, "--spreadsheet"], out=out_dir, cwd=tmp_path)
    assert wrong.returncode == 2 and "--spreadsheet applies only with --format csv" in wrong.stderr


# -- CSV -------------------------------------------------------------------------------------------


def _user_error(proc, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert_no_traceback(proc)
    text = proc.stderr + proc.stdout
    for word in words:
        assert word in text, (word, text)


def test_csv_bad_encoding_is_a_user_error(tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "latin.csv"
    source.write_bytes("id,name\n1,caf\xe9\n".encode("latin-1"))
    proc = invoke(["run", str(source), "--cmd", "echo {name}", "--headless"], out=out_dir, cwd=tmp_path)
    _user_error(proc, "latin.csv", "line 2", "--encoding")
    assert batches(out_dir) == []
    # The bad byte far from the head (past preflight's look): still exit 2, no half-made batch.
    late = tmp_path / "late.csv"
    late.write_bytes(b"id,name\n" + b"".join(b"%d,ok\n" % i for i in range(30000)) + b"9,caf\xe9\n")
    proc = invoke(["run", str(late), "--cmd", "echo {name}", "--headless"], out=out_dir, cwd=tmp_path)
    _user_error(proc, "late.csv", "line 30002", "--encoding")
    assert batches(out_dir) == []
    right = invoke(
        ["run", str(source), "--cmd", "printf %s {name}", "--encoding", "latin-1", "--headless"],
        out=out_dir,
        cwd=tmp_path,
    )
    assert right.returncode == 0, right.stderr
    assert strict_jsonl(only_batch(out_dir) / "results.jsonl")[0]["result"] == {"stdout_tail": "café"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
@pytest.mark.parametrize("name", ["n.txt", "ok.csv", "ok.jsonl"])
@pytest.mark.parametrize("how", [["--headless"], ["--dry-run"], ["check"]], ids=["run", "dry-run", "check"])
def test_a_source_without_the_bom_its_encoding_needs_is_a_user_error(
    tmp_path: Path, out_dir: Path, encoding: str, name: str, how: list[str]
) -> None:
    """--encoding utf-16 or utf-32 on a file without a BOM: a UnicodeError traceback (exit 1)
    from run, check and --dry-run once; now exit 2 naming the file and what to pass."""
    (tmp_path / name).write_bytes({"n.txt": b"1\n2\n3\n", "ok.csv": b"id,v\n1,a\n", "ok.jsonl": b'{"v": 1}\n'}[name])
    verb, flags = ("check", []) if how == ["check"] else ("run", how)
    args = [verb, name, "--cmd", "echo {}" if name == "n.txt" else "echo {v}", "--encoding", encoding, *flags]
    proc = invoke(args, out=out_dir, cwd=tmp_path)
    _user_error(proc, f"{name} is not valid {encoding} text", "does not start with BOM", f"pass {encoding}-le or")
    assert batches(out_dir) == []


def test_a_source_on_stdin_without_the_bom_its_encoding_needs_is_a_user_error(tmp_path: Path, out_dir: Path) -> None:
    proc = invoke(
        ["run", "-", "--cmd", "echo {}", "--encoding", "utf-16", "--headless"],
        out=out_dir,
        cwd=tmp_path,
        input=b"a\nb\n",
    )
    _user_error(proc, "<stdin> is not valid utf-16 text: UTF-16 stream does not start with BOM")


def test_csv_ragged_rows_fail_as_items_and_the_batch_goes_on(tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "ragged.csv"
    source.write_text("id,name\n1,a\n2\n3,c,extra\n4,d\n\n5,e\n")
    proc = invoke(["run", str(source), "--cmd", "printf %s {name}", "--headless"], out=out_dir, cwd=tmp_path)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=5, state="finished")
    assert checked["counts"]["complete"] == 3 and checked["counts"]["failed"] == 2
    conn = db(batch)
    try:
        failed = conn.execute("SELECT error_type, error_message FROM items WHERE status='failed'").fetchall()
    finally:
        conn.close()
    assert [t for t, _m in failed] == ["InvalidRecord", "InvalidRecord"], failed
    assert any("fields, header has 2" in m for _t, m in failed)


def test_csv_bom_and_huge_field(tmp_path: Path, out_dir: Path) -> None:
    huge = "x" * (5 * 1024 * 1024)
    source = tmp_path / "bom.csv"
    source.write_bytes(("\ufeffid,blob\n" + f"1,{huge}\n" + "2,small\n").encode("utf-8"))
    # A 5 MB field through a Python callable: processed whole; on a command line, where it cannot
    # fit, that item fails clearly and the other runs.
    out2 = tmp_path / "out2"
    call, proc = invoke_many(
        [
            (["run", str(source), "--call", f"{PROCS}:echo", "--executor", "thread", "--headless"], out_dir),
            (["run", str(source), "--cmd", "printf %s {id}:{blob} | wc -c", "--headless"], out2),
        ],
        cwd=tmp_path,
    )
    assert call.returncode == 0, call.stderr[-2000:]
    results = sorted(strict_jsonl(only_batch(out_dir) / "results.jsonl"), key=lambda r: int(r["seq"]))
    assert results[0]["result"]["data"] == {"id": "1", "blob": huge}  # the BOM is not part of "id"
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert_no_traceback(proc)
    batch = only_batch(out2)
    assert_invariants(batch, n_items=2, state="finished")
    results = strict_jsonl(batch / "results.jsonl")
    assert len(results) == 1 and results[0]["result"] == {"stdout_tail": "7"}  # "2:small"
    shown = invoke(["show", batch.name, "--json"], out=out2, cwd=tmp_path)
    # The placeholder is named with its size (issue 15, point 10).
    (group,) = orjson.loads(shown.stdout)["error_groups"]
    assert "{blob} is 5,242,880 bytes" in group["example_message"], group


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ["empty CSV"]),
        (b"\n\n", ["empty CSV"]),
        (b"a,,c\n1,2,3\n", ["header column 2 has no name"]),
        (b"a,a\n1,2\n", ["twice"]),
    ],
)
def test_csv_without_a_usable_header_is_a_user_error(tmp_path: Path, out_dir: Path, content: bytes, words) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "bad.csv"
    source.write_bytes(content)
    proc = invoke(["run", str(source), "--cmd", "echo {}", "--headless"], out=out_dir, cwd=tmp_path)
    _user_error(proc, "bad.csv", *words)
    assert batches(out_dir) == []


def test_csv_nul_byte_is_a_clear_error_or_an_item(tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "nul.csv"
    source.write_bytes(b"id,name\n1,a\x00b\n2,ok\n")
    proc = invoke(["run", str(source), "--cmd", "printf %s {name}", "--headless"], out=out_dir, cwd=tmp_path)
    assert_no_traceback(proc)
    # Accepted as records: the NUL one fails as an item (no argument can hold a NUL), the other runs.
    assert proc.returncode == 1, proc.stderr
    checked = assert_invariants(only_batch(out_dir), n_items=2, state="finished")
    assert (checked["counts"]["failed"], checked["counts"]["complete"]) == (1, 1), checked["counts"]


# -- JSONL, empty inputs, huge lines -----------------------------------------------------------------


def test_jsonl_invalid_lines_fail_as_items(tmp_path: Path, out_dir: Path) -> None:
    source = tmp_path / "recs.jsonl"
    source.write_bytes(
        b'{"id": 1, "v": "a"}\n'
        b"not json at all\n"
        b"[1, 2, 3]\n"
        b'{"id": 2, "v": \n'
        b'"just a string"\n'
        b"\n"
        b'{"id": 3, "v": "\\u001b[31m"}\n'
        b'{"id": 4, "v": "\xff\xfe"}\n'
        b'{"id": 5, "v": "last, no newline"}'
    )
    proc = invoke(
        ["run", str(source), "--call", f"{PROCS}:echo", "--executor", "thread", "--headless"], out=out_dir, cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    assert_no_traceback(proc)
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=8, state="finished")
    assert checked["counts"]["complete"] == 3 and checked["counts"]["failed"] == 5
    assert {r["result"]["data"]["id"] for r in checked["results"]} == {1, 3, 5}
    assert "\x1b" not in proc.stdout + proc.stderr


def test_empty_inputs_run_zero_items(tmp_path: Path) -> None:
    """Empty line file, JSONL, header-only CSV, empty dir, empty stdin: exit 0, sane files."""
    (tmp_path / "empty.txt").write_text("\n  \n# only a comment\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty.csv").write_text("id,name\n")
    (tmp_path / "emptydir").mkdir()
    kinds = ["empty.txt", "empty.jsonl", "empty.csv", "emptydir", "-"]
    outs = [tmp_path / f"out-{i}" for i in range(len(kinds))]
    runs = invoke_many(
        [(["run", k, "--cmd", "echo {}", "--headless"], o) for k, o in zip(kinds, outs, strict=True)], cwd=tmp_path
    )
    for kind, proc in zip(kinds, runs, strict=True):
        assert proc.returncode == 0, (kind, proc.stderr)
        assert_no_traceback(proc)
    for out in outs:
        batch = only_batch(out)
        checked = assert_invariants(batch, n_items=0, state="finished")
        assert (batch / "results.jsonl").read_bytes() == b""
        assert checked["live"]["percent"] == 100.0
    follow = invoke_many(
        [(["resume", only_batch(o).name, "--headless"], o) for o in outs[:2]]
        + [(["show", only_batch(o).name, "--json"], o) for o in outs[2:]],
        cwd=tmp_path,
    )
    for proc in follow[:2]:
        assert proc.returncode == 0 and "nothing to resume" in proc.stderr, proc.stderr
    for proc in follow[2:]:
        assert proc.returncode == 0 and orjson.loads(proc.stdout)["counts"]["total"] == 0


def test_ten_megabyte_line(tmp_path: Path, out_dir: Path) -> None:
    big = "z" * (10 * 1024 * 1024)
    source = tmp_path / "big.txt"
    source.write_text(f"small-1\n{big}\nsmall-2\n")
    # Through a Python callable the 10 MB line is processed whole (echo returns it twice, as data
    # and key: 20 MiB of JSON, so the default --max-result-bytes of 16 MiB is raised); through a
    # shell command it cannot be an argument (the kernel's limit is 128 kB a word): that item
    # fails clearly.
    out2 = tmp_path / "out2"
    call_args = ["run", str(source), "--call", f"{PROCS}:echo", "--executor", "thread", "--max-result-bytes", "24M"]
    call, proc = invoke_many(
        [
            ([*call_args, "--headless"], out_dir),
            (["run", str(source), "--cmd", "printf %s {} | wc -c", "--headless"], out2),
        ],
        cwd=tmp_path,
    )
    assert call.returncode == 0, call.stderr[-2000:]
    batch = only_batch(out_dir)
    checked = assert_invariants(batch, n_items=3, state="finished")
    assert {len(str(r["result"]["data"])) for r in checked["results"]} == {7, len(big)}
    assert proc.returncode == 1
    assert_no_traceback(proc)
    batch = only_batch(out2)
    checked = assert_invariants(batch, n_items=3, state="finished")
    assert checked["counts"] == {**checked["counts"], "complete": 2, "failed": 1}


def test_ten_megabyte_jsonl_record(tmp_path: Path, out_dir: Path) -> None:
    big = "q" * (10 * 1024 * 1024)
    source = tmp_path / "big.jsonl"
    source.write_bytes(
        orjson.dumps({"id": 1, "v": big}) + b"\n" + b'{"id": 2, "v": "s"}\n' + b'{"id": 3, "v": "' + big.encode()
    )
    proc = invoke(
        ["run", str(source), "--call", f"{PROCS}:echo", "--executor", "thread", "--headless"],
        out=out_dir,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]  # the torn last record fails as an item
    assert_no_traceback(proc)
    checked = assert_invariants(only_batch(out_dir), n_items=3, state="finished")
    assert checked["counts"]["complete"] == 2


# -- user errors ------------------------------------------------------------------------------------


USER_ERRORS: list[tuple[list[str], list[str]]] = [
    (["run", "missing.txt", "--cmd", "echo {}"], ["missing.txt"]),
    (["run", "ok.txt", "--cmd", "echo {"], ["unbalanced"]),
    (["run", "ok.txt", "--cmd", "echo `{}`"], ["template"]),
    (["run", "ok.txt"], ["--cmd"]),
    (["run", "ok.txt", "--cmd", "echo", "--call", "x:y"], ["exactly one"]),
    (["run", "ok.txt", "--call", "no_such_module_xyz:f"], ["no_such_module_xyz"]),
    (["run", "ok.txt", "--call", "nofile.py:f"], ["nofile.py"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--workers", "0"], ["--workers"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--rate", "fast"], ["rate"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--encoding", "klingon"], ["klingon"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--encoding", "rot13"], ["'rot13' is not a text encoding"]),
    (["check", "ok.txt", "--cmd", "echo {}", "--encoding", "base64"], ["'base64' is not a text encoding"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--encoding", "idna", "--dry-run"], ["'idna' cannot read text files"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--glob", "*.x"], ["--glob"]),
    (["run", "ok.txt", "--cmd", "echo {nosuchfield}"], ["nosuchfield"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--config", "bad.toml"], ["bad.toml"]),
    (["run", "ok.txt", "--cmd", "echo {}", "--config", "unknown.toml"], ["frobnicate"]),
    (["resume", "20990101_000000_deadbeef"], ["20990101_000000_deadbeef"]),
    (["show", "nope"], ["nope"]),
    (["recover", "nope"], ["nope"]),
    (["skip", "nope", "x"], ["x"]),
]


def test_user_errors_exit_2_clearly(tmp_path: Path) -> None:
    """Each mistake: exit 2, a message naming what is wrong, no traceback, no batch made."""
    (tmp_path / "ok.txt").write_text("a\nb\n")
    (tmp_path / "bad.toml").write_text("workers = [unclosed\n")
    (tmp_path / "unknown.toml").write_text("frobnicate = 3\n")
    outs = [tmp_path / f"out-{i}" for i in range(len(USER_ERRORS))]
    procs = invoke_many([(args, out) for (args, _w), out in zip(USER_ERRORS, outs, strict=True)], cwd=tmp_path)
    problems = []
    for (args, words), proc, out in zip(USER_ERRORS, procs, outs, strict=True):
        text = proc.stderr + proc.stdout
        if proc.returncode != 2 or "Traceback" in text or not all(w in text for w in words) or batches(out):
            problems.append(f"{args}: exit {proc.returncode}: {text[-600:]}")
    assert not problems, "\n".join(problems)
