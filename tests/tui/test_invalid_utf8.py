"""Bytes an item wrote that are no UTF-8 read alike in every view, as the escape clean() gives
a control character (``\\xff``): the item detail (its error, its stdout and stderr tails), the
pager (``o``: the logs; ``O``: the whole detail), a followed log, ``batchtui logs`` and the error
line stored (``show``, the errors table). The detail and the stored error said ``�`` (nothing
left of the byte) where the pager said ``\\xff``."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import Static

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.logs import follow
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.store.queries import ItemQueries
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.detail import ItemDetailScreen

from ..conftest import invoke_in_process
from .conftest import run
from .test_snapshots import settle

#: stdout: "out", 0xfe, " end"; stderr: "bad", 0xff, " byte" (no UTF-8 sequence starts with either).
CMD = r"printf 'out\376 end\n'; printf 'bad\377 byte\n' >&2; exit 3"
OUT, ERR = "out\\xfe end", "bad\\xff byte"


@pytest.fixture
def batch(tmp_path: Path) -> BatchDir:
    items = tmp_path / "items.txt"
    items.write_text("only\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 1}, environ={})
    made = create_batch(config, build_spec([str(items)]), shell_spec(CMD))
    BatchRunner(made, config=config, action="run").run()
    return made


@pytest.fixture
def pager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$PAGER: a script that writes what the files it got hold to a record."""
    record = tmp_path / "pager.record"
    script = tmp_path / "pager.sh"
    script.write_text(f'#!/bin/sh\ncat -- "$@" > "{record}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PAGER", str(script))
    return record


def test_the_stored_error_keeps_the_byte(batch: BatchDir) -> None:
    with ItemQueries(batch.items_db) as q:
        detail = q.item(0)
    assert detail is not None
    row = detail.row
    assert row.error_type == "exit 3"
    assert row.error_message == ERR and ERR in (row.error_detail or "")


def test_the_detail_and_the_pager_show_the_byte_alike(
    batch: BatchDir, pager: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: dict[str, str] = {}
    paged: dict[str, str] = {}

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, watch_files=False, handle_hangup=False)
        monkeypatch.setattr(app, "suspend", contextlib.nullcontext)
        async with app.run_test(size=(120, 40)) as pilot:
            await app.push_screen(ItemDetailScreen(batch.path, 0))
            await settle(pilot)
            for part in ("error", "stdout", "stderr"):
                content = app.screen.query_one(f"#detail-{part}", Static).content
                shown[part] = content.plain if isinstance(content, Text) else str(content)
            for key in ("o", "O"):
                await pilot.press(key)
                await settle(pilot)
                paged[key] = pager.read_text()

    run(body)
    assert ERR in shown["error"] and ERR in shown["stderr"] and OUT in shown["stdout"]
    assert OUT in paged["o"] and ERR in paged["o"]
    assert OUT in paged["O"] and ERR in paged["O"]
    assert "\ufffd" not in "".join([*shown.values(), *paged.values()])


def test_a_followed_log_shows_the_byte_alike(batch: BatchDir) -> None:
    text = "".join(chunk.text for chunk in follow(batch.path, 0, is_done=lambda: True))
    assert OUT in text and ERR in text and "\ufffd" not in text


def test_batchtui_show_says_the_byte_alike(batch: BatchDir, tmp_path: Path) -> None:
    done = invoke_in_process(["show", str(batch.path)], out=batch.path.parent, cwd=tmp_path)
    assert done.returncode == 0 and ERR in done.stdout and "\ufffd" not in done.stdout
