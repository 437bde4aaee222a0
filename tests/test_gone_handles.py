"""A BATCH argument that names a registered batch whose folder is gone (moved or deleted) is
told apart from one that names no batch known: every verb that takes a batch says the first
with where it was (``its folder P is gone (moved or deleted)``, as ``watch`` says of a folder
that goes while watched), by every handle a batch that is there answers to (its old path, its
id, its name, a unique part of its id: the 8-hex part said "no batch")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import invoke_in_process

VERBS = [
    ["show"],
    ["watch"],
    ["logs", "{}", "0"],
    ["resume"],
    ["errors"],
    ["export"],
    ["pause"],
    ["unpause"],
    ["stop"],
    ["wait"],
    ["retry", "{}", "0"],
    ["skip", "{}", "0"],
    ["prioritize", "{}", "0"],
    ["workers", "{}", "2"],
    ["add", "{}", "more.txt"],
    ["serve"],
]


def _cli(args: list[str], cwd: Path) -> tuple[int, str]:
    done = invoke_in_process(args, out=cwd / "batch_output", cwd=cwd)
    return done.returncode, done.stderr


@pytest.fixture
def gone(tmp_path: Path) -> tuple[Path, str, Path]:
    """A batch named ``nightly`` made in a/, its folder then deleted; b/ to work from."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "in.txt").write_text("x\n")
    (b / "more.txt").write_text("y\n")
    assert _cli(["run", "in.txt", "--cmd", "true", "--headless", "--name", "nightly"], a)[0] == 0
    folder = next((a / "batch_output").iterdir())
    shutil.rmtree(folder)
    return b, folder.name, folder


def _said(batch_id: str, folder: Path) -> str:
    return (
        f"error: batch {batch_id} (nightly): its folder {folder} is gone (moved or deleted); give its new path,"
        " or forget it with `batchtui cleanup`\n"
    )


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_every_verb_says_where_a_gone_batch_was(gone: tuple[Path, str, Path], verb: list[str]) -> None:
    b, batch_id, folder = gone
    args = [a.replace("{}", batch_id) for a in verb] if "{}" in verb else [*verb, batch_id]
    assert _cli(args, b) == (2, _said(batch_id, folder))


@pytest.mark.parametrize("handle", ["id", "path", "name", "prefix", "hex"])
def test_a_gone_batch_by_any_handle(gone: tuple[Path, str, Path], handle: str) -> None:
    b, batch_id, folder = gone
    arg = {
        "id": batch_id,
        "path": str(folder),
        "name": "nightly",
        "prefix": batch_id[:11],
        "hex": batch_id.rsplit("_", 1)[-1][2:7],
    }[handle]
    assert _cli(["show", arg], b) == (2, _said(batch_id, folder))


def test_a_batch_never_seen_is_said_unknown(gone: tuple[Path, str, Path]) -> None:
    b, _batch_id, _folder = gone
    code, said = _cli(["watch", "20991231_235959_0badc0de"], b)
    assert code == 2
    assert said.startswith(
        "error: no batch '20991231_235959_0badc0de': no such path, and none known by that id, name or part of an id"
        f" (in {b / 'batch_output'} or among the batches registered in "
    )
    assert "gone" not in said


def test_a_part_of_the_id_of_two_gone_batches_lists_them(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "in.txt").write_text("x\n")
    for name in ("one", "two"):
        assert _cli(["run", "in.txt", "--cmd", "true", "--headless", "--name", name], a)[0] == 0
    folders = sorted((a / "batch_output").iterdir())
    for folder in folders:
        shutil.rmtree(folder)
    code, said = _cli(["show", folders[0].name[:8]], a)
    assert code == 2
    lines = said.splitlines()
    assert lines[0] == f"error: '{folders[0].name[:8]}' matches 2 batches whose folders are gone (moved or deleted):"
    assert sorted(line.split()[0] for line in lines[1:3]) == [f.name for f in folders]
    assert lines[-1] == "give the new path of the one you mean, or forget them with `batchtui cleanup`"
