"""The record fields a run names ({field} in --cmd, --limit-by) are checked in a piped CSV or
JSONL source as it arrives: its header (its first record), before any of its items.

Preflight reads a file's header ahead, but a pipe cannot be looked at without eating its
items, so it found no fields there and refused every `run /dev/stdin --as csv --cmd '... {url}'`
("the template uses url, which the source lacks (it has: nothing)"). A field the pipe really
lacks is refused as preflight refuses it in a file, with the fields the pipe has.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import orjson

from .conftest import CLI, cli_env, only_batch, read_jsonl


def _cli(args: list[str], out: Path, cwd: Path, fed: str | None = None) -> subprocess.CompletedProcess[str]:
    """batchtui with ``fed`` on a pipe as its stdin (read as /dev/stdin)."""
    return subprocess.run(
        [*CLI, *args], env=cli_env(out), cwd=cwd, input=fed, capture_output=True, text=True, timeout=120, check=False
    )


CSV = "url,n\nhttp://a.example/x,1\nhttp://b.example/y,2\n"
JSONL = '{"url": "http://a.example/x", "n": 1}\n{"url": "http://b.example/y", "n": 2}\n'


def _outputs(out: Path) -> list[str]:
    rows = sorted(read_jsonl(only_batch(out) / "results.jsonl"), key=lambda r: r["seq"])  # type: ignore[arg-type,return-value]
    return [r["result"]["stdout_tail"].strip() for r in rows]  # type: ignore[index]


def test_a_piped_csv_runs_a_template_of_its_fields(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _cli(["run", "/dev/stdin", "--as", "csv", "--cmd", "echo {n}", "--headless"], out, tmp_path, CSV)
    assert res.returncode == 0, res.stderr
    assert "n not checked yet: stdin is a pipe" in res.stderr  # preflight says what it left
    assert _outputs(out) == ["1", "2"]


def test_a_piped_jsonl_runs_a_template_of_its_fields(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _cli(["run", "/dev/stdin", "--as", "jsonl", "--cmd", "echo {n}", "--headless"], out, tmp_path, JSONL)
    assert res.returncode == 0, res.stderr
    assert _outputs(out) == ["1", "2"]


def test_a_field_a_piped_csv_lacks_is_refused_with_the_fields_it_has(tmp_path: Path) -> None:
    out, ran = tmp_path / "out", tmp_path / "ran"
    res = _cli(["run", "/dev/stdin", "--as", "csv", "--cmd", f"touch {ran}; echo {{nope}}"], out, tmp_path, CSV)
    assert res.returncode == 2, res.stderr
    assert "stdin: the template uses nope, which its header lacks (it has: n, url)" in res.stderr
    assert not ran.exists()
    assert not out.exists() or not [p for p in out.iterdir() if p.is_dir()]  # the half-made batch went


def test_a_field_the_first_piped_jsonl_record_lacks_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fed = 'not json\n{"url": "http://a.example/x"}\n{"url": "http://b.example/y", "n": 2}\n'
    res = _cli(["run", "/dev/stdin", "--as", "jsonl", "--cmd", "echo {n}"], out, tmp_path, fed)
    assert res.returncode == 2, res.stderr
    # The first record is the first object: a line that is no JSON is an item that failed.
    assert "the template uses n, which its first record (line 2) lacks (it has: url)" in res.stderr


def test_limit_by_a_field_of_a_piped_csv(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fed = "url,host\nhttp://a.example/x,a\nhttp://b.example/y,b\n"
    args = ["run", "/dev/stdin", "--as", "csv", "--cmd", "echo {url}", "--limit-by", "{host}", "50/s", "--headless"]
    res = _cli(args, out, tmp_path, fed)
    assert res.returncode == 0, res.stderr
    assert _outputs(out) == ["http://a.example/x", "http://b.example/y"]
    res = _cli(args, tmp_path / "out2", tmp_path, CSV)  # no host column: every item would share one key
    assert res.returncode == 2, res.stderr
    assert "stdin: --limit-by uses host, which its header lacks (it has: n, url)" in res.stderr


def test_add_from_a_pipe_checks_its_fields_and_may_add_from_it_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "base.csv").write_text("url,n\nhttp://c.example/z,0\n")
    res = _cli(["run", "base.csv", "--cmd", "echo {n}", "--headless"], out, tmp_path)
    assert res.returncode == 0, res.stderr
    batch = only_batch(out)
    res = _cli(["add", batch.name, "/dev/stdin", "--as", "csv"], out, tmp_path, "url,m\nhttp://z.example/,9\n")
    assert res.returncode == 2, res.stderr
    assert "the template uses n, which its header lacks (it has: m, url); nothing was added" in res.stderr
    # A pipe read again gives new records: not "already reads these sources".
    for fed in (CSV, "url,n\nhttp://d.example/w,3\n"):
        res = _cli(["add", batch.name, "/dev/stdin", "--as", "csv"], out, tmp_path, fed)
        assert res.returncode == 0, res.stderr
    res = _cli(["resume", batch.name, "--headless"], out, tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(_outputs(out)) == ["0", "1", "2", "3"]


def test_a_csv_file_lacking_a_field_is_still_refused_by_preflight(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(CSV)
    res = _cli(["run", "a.csv", "--cmd", "echo {nope}"], tmp_path / "out", tmp_path)
    assert res.returncode == 2
    assert "[FAIL] template fields: the template uses nope, which the source lacks (it has: n, url)" in res.stderr


def test_process_substitution_is_read_as_lines(tmp_path: Path) -> None:
    """`batchtui run <(command)`, as bash runs it: the source is /dev/fd/N, a pipe with no
    suffix. Its lines are the items (it used to be refused: "not a regular file: /dev/fd/63"),
    and the batch is named after the descriptor whole, not "63"."""
    out = tmp_path / "out"
    cli = " ".join(shlex.quote(a) for a in CLI)
    script = f"{cli} run <(printf 'http://a.example/x\\nhttp://b.example/y\\n') --cmd 'echo {{}}' --headless"
    res = subprocess.run(
        ["bash", "-c", script], env=cli_env(out), cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    assert sorted(_outputs(out)) == ["http://a.example/x", "http://b.example/y"]
    manifest = orjson.loads((only_batch(out) / "manifest.json").read_bytes())
    assert re.fullmatch(r"/dev/fd/\d+ \(lines\)", manifest["name"]), manifest["name"]
