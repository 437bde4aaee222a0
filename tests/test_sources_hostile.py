"""Sources a hostile user gives (issue 15, points 5 and 10), end to end through the CLI: what a
directory walk cannot read is counted and said, never left out in silence; a file name that is
not UTF-8 runs, with a shell and with a callable; a 1 MB record runs with ``--cmd``."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.models import Unreadable
from batchtui.engine.shell.item import Item
from batchtui.engine.shell.processor import ShellProcessor
from batchtui.engine.sources import build_spec, iter_items

from .conftest import CLI, cli_env, only_batch, read_json, read_jsonl

RunCli = Callable[..., subprocess.CompletedProcess[str]]

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _drop_dac_caps() -> None:
    """In the child, before exec: root without the capabilities that let it read any folder, so a
    chmod 000 folder is unreadable to it as to anyone (the bounding set caps what exec grants)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _can_drop_caps() -> bool:
    try:
        subprocess.run(["true"], preexec_fn=_drop_dac_caps, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def run_unprivileged(args: Sequence[str], out: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as this user, or, as root, as root that cannot read what its modes forbid."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(out),
        cwd=cwd,
        preexec_fn=_drop_dac_caps if os.geteuid() == 0 else None,
        check=False,
    )


def manifest_of(out: Path) -> dict[str, Any]:
    return read_json(only_batch(out) / "manifest.json")


def show_json(run_cli: RunCli, batch: Path) -> dict[str, Any]:
    proc = run_cli(["show", batch.name, "--json"])
    assert proc.returncode == 0, proc.stderr
    shown = orjson.loads(proc.stdout)
    assert isinstance(shown, dict)
    return shown


# -- point 5: what a walk cannot read ------------------------------------------------------------


def test_links_and_fifos_a_walk_leaves_out_are_counted_and_said(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli
) -> None:
    """A folder of links to a shared store gave a batch without them, and not a word: what the
    walk leaves out by rule is said at creation, in the summary, `show` and --dry-run, and kept
    in the manifest. It is no error: the run goes on, and nothing counts as unreadable."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.txt").write_text("r")
    store = tmp_path / "store"
    store.mkdir()
    (store / "s.txt").write_text("s")
    (src / "shared.txt").symlink_to(store / "s.txt")
    os.mkfifo(src / "pipe.txt")
    said = (
        f"1 entry of the source was left out by rule: {src / 'shared.txt'}"
        " (a symbolic link, not followed: --follow-symlinks)"
    )
    dry = invoke_cli(["run", str(src), "--cmd", "cat {path}", "--dry-run"])
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"note: 2 entries of the source were left out by rule: {src / 'pipe.txt'} (a fifo" in dry.stdout
    proc = invoke_cli(["run", str(src), "--glob", "s*", "--cmd", "cat {path}", "--headless"])
    assert proc.returncode == 0, proc.stderr
    assert f"note: {said}\n" in proc.stderr
    assert f"  Left out:  {said}\n" in proc.stdout
    assert "Unreadable" not in proc.stdout
    manifest = manifest_of(out_dir)
    assert manifest["totals"]["total"] == 0
    assert manifest["unreadable"]["count"] == 0 and manifest["unreadable"]["left_out"] == 1
    show = invoke_cli(["show", only_batch(out_dir).name])
    assert f"  Left out:  {said}\n" in show.stdout


def test_an_unreadable_folder_is_counted_and_said(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    if os.geteuid() == 0 and not _can_drop_caps():
        pytest.skip("root here cannot drop CAP_DAC_OVERRIDE (no CAP_SETPCAP), so every folder is readable")
    src = tmp_path / "src"
    (src / "open").mkdir(parents=True)
    (src / "open" / "1.txt").write_text("one")
    (src / "locked").mkdir()
    (src / "locked" / "2.txt").write_text("two")
    (src / "locked").chmod(0)
    try:
        proc = run_unprivileged(["run", str(src), "--cmd", "cat {path} > /dev/null", "--headless"], out_dir, tmp_path)
    finally:
        (src / "locked").chmod(0o700)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # The creation line and a warning say it at once, with the folder and why.
    assert "1 item, 1 unreadable path left out ->" in proc.stderr
    assert f"{src / 'locked'} (permission denied)" in proc.stderr
    unreadable = manifest_of(out_dir)["unreadable"]
    assert unreadable == {
        "count": 1,
        "examples": [{"path": str(src / "locked"), "reason": "permission denied"}],
        "left_out": 0,
        "left_out_examples": [],
    }
    batch = only_batch(out_dir)
    assert read_json(batch / "report.json")["unreadable"] == unreadable
    # The summary at the end, and `show` (text and JSON) say it too.
    assert "Unreadable: 1 path of the source could not be read and was left out" in proc.stdout
    show = invoke_cli(["show", batch.name])
    assert show.returncode == 0, show.stderr
    assert f"Unreadable: 1 path of the source could not be read and was left out: {src / 'locked'}" in show.stdout
    assert show_json(invoke_cli, batch)["manifest"]["unreadable"] == unreadable


def _deep_tree(root: Path, lengths: list[int]) -> int:
    """Nested folders below ``root``, of names as long as ``lengths`` says, made through
    descriptors (no path to the deep ones is short enough for mkdir); a descriptor of the deepest."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for n in lengths:
        os.mkdir("d" * n, dir_fd=fd)
        sub = os.open("d" * n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = sub
    return fd


def _write_at(folder: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=folder)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_paths_over_path_max_are_counted(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "short.txt").write_text("ok")
    path_max = os.pathconf(src, "PC_PATH_MAX")
    # A folder whose path is 100 bytes under PATH_MAX holds a file whose path is over it, and a
    # folder (over it too) holding another file.
    depth, pad = divmod(path_max - 100 - len(os.fsencode(str(src))), 251)
    lengths = [250] * depth + ([pad - 1] if pad > 1 else [])
    fd = _deep_tree(src, lengths)
    try:
        edge = len(os.fsencode(str(src))) + sum(n + 1 for n in lengths)
        assert edge < path_max <= edge + 1 + 200
        _write_at(fd, "f" * 200, b"too deep")
        os.mkdir("e" * 200, dir_fd=fd)
        sub = os.open("e" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        _write_at(sub, "g.txt", b"deeper")
        os.close(sub)
    finally:
        os.close(fd)
    proc = invoke_cli(["run", str(src), "--cmd", "cat {path} > /dev/null", "--headless"])
    assert proc.returncode == 0, proc.stderr
    assert "1 item, 2 unreadable paths left out ->" in proc.stderr
    unreadable = manifest_of(out_dir)["unreadable"]
    assert unreadable["count"] == 2
    reasons = {e["reason"] for e in unreadable["examples"]}
    assert reasons == {f"path longer than PATH_MAX, {path_max} bytes"}
    # Examples are shortened for a terminal line, their ends kept.
    assert all(len(e["path"]) < 200 for e in unreadable["examples"])
    assert sorted(e["path"][-3:] for e in unreadable["examples"]) == ["eee", "fff"]
    assert read_json(only_batch(out_dir) / "report.json")["unreadable"]["count"] == 2


# -- point 5: a file name that is not UTF-8 runs -----------------------------------------------

BAD_NAME = b"bad\xff name.txt"


def _tree_with_bad_name(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_bytes(b"good")
    fd = os.open(os.fsencode(str(src)) + b"/" + BAD_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"raw bytes\n")
    os.close(fd)
    return src


def _seq_of(batch: Path, suffix: str) -> int:
    lines = read_jsonl(batch / "results.jsonl")
    return next(int(str(line["seq"])) for line in lines if str(line["key"]).endswith(suffix))


def test_a_name_that_is_not_utf8_runs_with_cmd(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    src = _tree_with_bad_name(tmp_path)
    proc = invoke_cli(
        ["run", str(src), "--cmd", "cat {path} > {out}/copy && printf %s {name} > {out}/name", "--headless"]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    batch = only_batch(out_dir)
    assert len(read_jsonl(batch / "results.jsonl")) == 2  # both complete: none failed, none left out
    seq = _seq_of(batch, "bad\\xff name.txt")  # the key shows the byte escaped
    # The command got the exact bytes of the name, and read the file by it.
    assert (batch / "out" / str(seq) / "name").read_bytes() == BAD_NAME
    assert (batch / "out" / str(seq) / "copy").read_bytes() == b"raw bytes\n"
    # Views show the name as the key does, its bytes as \xNN (export, like the item detail).
    exported = [orjson.loads(line) for line in invoke_cli(["export", batch.name]).stdout.splitlines()]
    assert {row["data"] for row in exported} == {f"{src}/good.txt", f"{src}/bad\\xff name.txt"}


def test_a_name_that_is_not_utf8_runs_with_a_callable(tmp_path: Path, out_dir: Path, run_cli: RunCli) -> None:
    src = _tree_with_bad_name(tmp_path)
    (tmp_path / "job.py").write_text(
        "import os\n"
        "def read(item):\n"
        "    with open(item.data, 'rb') as fh:\n"
        "        return {'text': fh.read().decode(), 'name': os.fsencode(os.path.basename(item.data)).hex()}\n"
        "def refuse(item):\n"
        "    raise ValueError(f'cannot take {item.data}')\n"
    )
    proc = run_cli(["run", str(src), "--call", "job.py:read", "--headless"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    batch = only_batch(out_dir)
    lines = {str(line["key"]): line["result"] for line in read_jsonl(batch / "results.jsonl")}
    assert lines[f"{src}/bad\\xff name.txt"] == {"text": "raw bytes\n", "name": BAD_NAME.hex()}
    # An error message holding the name is stored (escaped), not a crash of the engine.
    shutil.rmtree(batch)
    proc = run_cli(["run", str(src), "--call", "job.py:refuse", "--headless"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    messages = [g["example_message"] for g in show_json(run_cli, only_batch(out_dir))["error_groups"]]
    assert f"cannot take {src}/bad\\xff name.txt" in messages


# -- point 10: a record over 128 KiB runs with --cmd ----------------------------------------------


def _big_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as f:
        f.write(orjson.dumps({"id": 1, "text": "x" * 1_000_000}) + b"\n")
        f.write(orjson.dumps({"id": 2, "text": "small"}) + b"\n")
    return path


def test_a_1mb_record_runs_with_cmd(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    src = _big_jsonl(tmp_path)
    cmd = (
        'if [ -n "$BATCHTUI_ITEM_JSON_FILE" ]; then '
        'cat "$BATCHTUI_ITEM_JSON_FILE" > {out}/item.json; stat -c %a "$BATCHTUI_ITEM_JSON_FILE" > {out}/mode; '
        'printf %s "$BATCHTUI_ITEM_JSON" > {out}/env; '
        'else printf %s "$BATCHTUI_ITEM_JSON" > {out}/item.json; fi'
    )
    proc = invoke_cli(["run", str(src), "--cmd", cmd, "--key-field", "id", "--headless"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    batch = only_batch(out_dir)
    big = orjson.loads((batch / "out" / "0" / "item.json").read_bytes())
    assert big["data"] == {"id": 1, "text": "x" * 1_000_000}
    assert (big["seq"], big["key"], big["attempt"]) == (0, "1", 1)
    assert (batch / "out" / "0" / "mode").read_text().strip() == "600"  # the file was the owner's only
    assert (batch / "out" / "0" / "env").read_bytes() == b""  # the variable is empty then
    # A small one comes in the variable, as always.
    assert orjson.loads((batch / "out" / "1" / "item.json").read_bytes())["data"] == {"id": 2, "text": "small"}
    assert not (batch / "out" / "1" / "mode").exists()
    # The file is removed after the item.
    assert list((batch / "tmp").iterdir()) == []


def test_an_over_long_placeholder_is_named_with_its_size(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    src = _big_jsonl(tmp_path)
    proc = invoke_cli(["run", str(src), "--cmd", "printf %s {text} | wc -c", "--headless"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (group,) = show_json(invoke_cli, only_batch(out_dir))["error_groups"]
    assert group["error_type"] == "CommandTooLong"
    assert "over the 131,072 bytes one argument may have" in group["example_message"]
    assert "{text} is 1,000,000 bytes" in group["example_message"]


def test_an_environment_too_big_in_all_moves_the_json_to_its_file(tmp_path: Path) -> None:
    # No variable is over the per-variable limit, but the environment with the item's 100 KB
    # JSON is over ARG_MAX in all: the JSON goes to its file and the item runs.
    batch = tmp_path / "batch"
    batch.mkdir(mode=0o700)
    work = tmp_path / "work"
    work.mkdir()
    base = sum(len(k) + len(v) + 2 for k, v in os.environ.items())
    room = os.sysconf("SC_ARG_MAX") - base - 60_000
    env = {f"PAD{i}": "p" * min(100_000, room - i * 100_000) for i in range(room // 100_000 + 1)}
    proc = ShellProcessor(
        'printf %s "${{BATCHTUI_ITEM_JSON_FILE:+file}}" > how; cat "$BATCHTUI_ITEM_JSON_FILE" > got',
        env=env,
        cwd=str(work),
    )
    item = Item(seq=4, key="k", data="y" * 100_000, attempt=1, batch_dir=str(batch))
    proc.run(item)
    assert (work / "how").read_text() == "file"
    assert orjson.loads((work / "got").read_bytes())["data"] == "y" * 100_000
    assert list((batch / "tmp").iterdir()) == []


def test_undecodable_names_keep_their_bytes_in_the_item_json(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir(mode=0o700)
    name = os.fsdecode(b"/data/bad\xff.txt")
    proc = ShellProcessor('printf %s "$BATCHTUI_ITEM_JSON" > {out}/json; printf %s {} > {out}/arg')
    proc.run(Item(seq=0, key="/data/bad\\xff.txt", data=name, attempt=1, batch_dir=str(batch)))
    assert (batch / "out" / "0" / "arg").read_bytes() == b"/data/bad\xff.txt"
    # JSON's \udcXX escapes, which Python's json reads back into the same (surrogate-escaped) str.
    assert b'"data":"/data/bad\\udcff.txt"' in (batch / "out" / "0" / "json").read_bytes()
    assert json.loads((batch / "out" / "0" / "json").read_bytes())["data"] == name


def test_a_broken_link_it_was_asked_to_follow_is_counted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.txt").write_text("r")
    (src / "gone.txt").symlink_to(tmp_path / "missing")
    unreadable = Unreadable()
    followed = list(iter_items(build_spec([str(src)], follow_symlinks=True), unreadable=unreadable))
    assert [os.path.basename(i.key) for i in followed] == ["real.txt"]
    assert unreadable.model_dump() == {
        "count": 1,
        "examples": [{"path": str(src / "gone.txt"), "reason": "broken symbolic link"}],
        "left_out": 0,
        "left_out_examples": [],
    }
    # Not asked to follow links: a link is no item by design, and nothing is missing.
    unreadable = Unreadable()
    assert len(list(iter_items(build_spec([str(src)]), unreadable=unreadable))) == 1
    assert unreadable.count == 0
