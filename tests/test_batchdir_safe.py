"""Files in a batch directory are never written through a symbolic link, and every folder
batchtui creates is 0700 whatever the umask (issue 15, point 14)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock
from batchtui.engine.batchsafe import UnsafeBatchDir
from batchtui.engine.files import LinkRefused, ResultsLog, atomic_write_bytes

from .conftest import CLI, cli_env, only_batch, read_json, wait_until

RunCli = Callable[..., subprocess.CompletedProcess[str]]


# -- the files module ---------------------------------------------------------------------------


def test_a_planted_temp_link_is_not_followed(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    # The temp name a write from this thread uses: a link there must not be written through.
    tmp = batch / f".manifest.json.{os.getpid()}.{threading.get_native_id()}.tmp"
    tmp.symlink_to(outside)
    atomic_write_bytes(batch / "manifest.json", b'{"a": 1}\n')
    assert outside.read_bytes() == b"precious"
    assert (batch / "manifest.json").read_bytes() == b'{"a": 1}\n'
    assert not tmp.exists() and not tmp.is_symlink()


def test_a_link_to_the_file_is_replaced_and_its_backup_is_no_link_to_the_target(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_bytes(b'{"old": true}\n')
    (batch / "manifest.json").symlink_to(outside)
    atomic_write_bytes(batch / "manifest.json", b'{"new": true}\n', backup=True)
    assert outside.read_bytes() == b'{"old": true}\n'
    assert not (batch / "manifest.json").is_symlink()
    # No backup is made of it: a link is no file batchtui wrote (reading one is refused), and a
    # second name of the target would let a later write reach it.
    assert not (batch / "manifest.json.bak").exists()
    assert not (batch / "manifest.json.bak").is_symlink()


def test_a_batch_dir_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    swapped = tmp_path / "batch"
    swapped.symlink_to(elsewhere)
    with pytest.raises(LinkRefused, match="symbolic link"):
        atomic_write_bytes(swapped / "live_progress.json", b"{}\n", durable=False)
    assert list(elsewhere.iterdir()) == []


def test_results_log_is_not_opened_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b"x\n")
    (tmp_path / "results.jsonl").symlink_to(outside)
    with pytest.raises(LinkRefused):
        ResultsLog(tmp_path / "results.jsonl")
    assert outside.read_bytes() == b"x\n"


@pytest.mark.parametrize("name", ["items.db", "items.db-wal", "results.jsonl", "lock", "logs", "out", "tmp"])
def test_the_lock_refuses_a_batch_holding_a_link(tmp_path: Path, name: str) -> None:
    batch = tmp_path / "20260101_000000_0123abcd"
    batch.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (batch / name).symlink_to(target)
    with pytest.raises(UnsafeBatchDir, match=f"{name} is a symbolic link"):
        BatchLock(BatchDir(batch).lock).acquire(wait=0)


def test_the_lock_refuses_a_batch_dir_that_is_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "20260101_000000_0123abcd"
    link.symlink_to(real)
    with pytest.raises(UnsafeBatchDir, match="is a symbolic link"):
        BatchLock(BatchDir(link).lock).acquire(wait=0)
    assert list(real.iterdir()) == []


# -- end to end ---------------------------------------------------------------------------------


def test_logs_swapped_for_a_link_mid_run_never_land_outside(tmp_path: Path, out_dir: Path, invoke_cli: RunCli) -> None:
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(1, 11)))
    go = tmp_path / "go"
    outside = tmp_path / "outside"
    outside.mkdir()
    # Item 1 logs at once; the others log and then wait for the go file.
    cmd = 'echo "log of {}" >&2; [ {} = 1 ] || while [ ! -e "$GO" ]; do sleep 0.01; done'
    proc = subprocess.Popen(
        [*CLI, "run", str(items), "--cmd", cmd, "--workers", "1", "--headless"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(out_dir, {"GO": str(go)}),
        cwd=tmp_path,
    )
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.glob("*/logs/0.1.err")), what="the first log")
        batch = only_batch(out_dir)
        (batch / "logs").rename(batch / "logs.moved")
        (batch / "logs").symlink_to(outside)
        go.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, out + err  # halted (resumable), not written through the link
    assert list(outside.iterdir()) == []
    manifest = read_json(batch / "manifest.json")
    assert manifest["state"] == "halted"
    assert "logs/ in batch" in str(manifest["halt_reason"])
    assert "symbolic link" in str(manifest["halt_reason"])
    # A resume refuses while the link is there, saying which entry, with no traceback.
    again = invoke_cli(["resume", batch.name, "--headless"], env={"GO": str(go)})
    assert again.returncode == 2, again.stdout + again.stderr
    assert f"refusing to use batch {batch.name}: logs is a symbolic link (to {outside})" in again.stderr
    assert "Traceback" not in again.stderr
    assert list(outside.iterdir()) == []
    # With the link gone the batch resumes and finishes.
    (batch / "logs").unlink()
    (batch / "logs.moved").rename(batch / "logs")
    done = invoke_cli(["resume", batch.name, "--headless"], env={"GO": str(go)})
    assert done.returncode == 0, done.stdout + done.stderr
    # One log per item; the item that met the link logged nothing then and logs as a later attempt.
    logs = {int(p.name.split(".")[0]): p for p in (batch / "logs").iterdir()}
    assert sorted(logs) == list(range(10)) and len(list((batch / "logs").iterdir())) == 10
    assert any(p.name.endswith(".2.err") for p in logs.values()), sorted(p.name for p in logs.values())
    assert all(p.read_text() == f"log of {seq + 1}\n" for seq, p in logs.items())


def test_planted_links_are_refused_on_resume_and_targets_untouched(
    tmp_path: Path, out_dir: Path, invoke_cli: RunCli
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("1\n2\n3\n")
    first = invoke_cli(["run", str(items), "--cmd", "echo {} >&2; [ {} != 2 ]", "--headless"])
    assert first.returncode == 1, first.stdout + first.stderr
    batch = only_batch(out_dir)
    for name in ("items.db", "results.jsonl", "live_progress.json", "control.jsonl", "manifest.json.bak"):
        real = batch / name
        kept = batch / f"{name}.kept"
        outside = tmp_path / f"outside-{name}"
        if real.exists():
            shutil.copyfile(real, outside)
            real.rename(kept)
        else:
            outside.write_bytes(b"")
        before = outside.read_bytes()
        real.symlink_to(outside)
        proc = invoke_cli(["resume", batch.name, "--retry-failed", "--headless"])
        assert proc.returncode == 2, (name, proc.stdout + proc.stderr)
        assert f"{name} is a symbolic link" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert outside.read_bytes() == before, name
        real.unlink()
        if kept.exists():
            kept.rename(real)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")] if p != root}


def test_under_umask_0_every_folder_made_is_0700(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    big = tmp_path / "big.jsonl"
    big.write_text('{"id": 1, "text": "' + "x" * 200_000 + '"}\n')
    base = tmp_path / "made"
    out = base / "a" / "b"
    cmd = 'echo e >&2; : > {out}/f; [ -z "$BATCHTUI_ITEM_JSON_FILE" ] || stat -c %a "$(dirname "$BATCHTUI_ITEM_JSON_FILE")" > {out}/tmpmode'
    for src in (items, big):
        proc = subprocess.run(
            [*CLI, "run", str(src), "--cmd", cmd, "--headless", "--output-dir", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(out),
            cwd=tmp_path,
            preexec_fn=lambda: os.umask(0),
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    modes = _modes(base)
    dirs = {p: m for p, m in modes.items() if (base / p).is_dir()}
    # Every folder batchtui made: the output dir's parents, the batches, logs/, out/, out/<seq>, tmp/.
    assert set(dirs.values()) == {0o700}, dirs
    assert {"a", "a/b"} <= set(dirs)
    assert any(p.endswith("/logs") for p in dirs) and any(p.endswith("/tmp") for p in dirs)
    # Its files are 0600 (the {out}/f the command made is the command's: umask 0 gives 0666).
    ours = {p: m for p, m in modes.items() if p not in dirs and p.split("/")[-1] not in ("f", "tmpmode")}
    assert set(ours.values()) == {0o600}, ours
    (tmpmode,) = base.glob("a/b/*/out/0/tmpmode")
    assert tmpmode.read_text().strip() == "700"
