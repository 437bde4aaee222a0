"""Snapshots of the item detail of a failed shell item (its stderr, no traceback of the engine)
and of a failed Python callable (its own traceback), at 80x24 and at 120x40. The error details
are made by the engine's own classification of a real failure, so the snapshot shows what a run
stores. Update on purpose with `--snapshot-update`, and look at the SVGs."""

from __future__ import annotations

import linecache
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from textual.pilot import Pilot

from batchtui.engine.attempts import Classifier, run_items
from batchtui.engine.errors import CommandFailed, ErrorInfo, ItemTimeout, classify
from batchtui.engine.models import BatchState
from batchtui.engine.shell.item import Item
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.detail import ItemDetailScreen

from .fixtures import FROZEN, make_batch
from .test_snapshots import settle

OUT = Path("batch_output")
SIZES = [(80, 24), (120, 40)]
SEQ = 37  # a failed item of the fixture batch

#: The user's module of the Python batch, as the traceback shows it (its lines come from here).
TASKS = "/data/tasks.py"
TASKS_SOURCE = """\
import json


def summarize(item):
    doc = fetch(item.data)
    return {"words": count_words(doc)}


def count_words(doc):
    return len(doc["body"].split())


def fetch(url):
    return json.loads('{"title": "no body"}')
"""


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # relative paths keep the snapshots free of tmp dir names
    OUT.mkdir()
    yield OUT


def _fail(batch: Path, seq: int, info: ErrorInfo) -> None:
    db = sqlite3.connect(batch / "items.db")
    with db:
        db.execute(
            "UPDATE items SET error_type=?, error_category=?, error_message=?, error_detail=? WHERE seq=?",
            (info.error_type, info.category, info.message, info.detail, seq),
        )
        db.execute(
            "UPDATE attempts SET error_type=?, error_category=?, error_message=?, error_detail=? WHERE seq=?",
            (info.error_type, info.category, info.message, info.detail, seq),
        )
    db.close()


def _shell_batch(out: Path) -> Path:
    batch = make_batch(out, state=BatchState.FINISHED, n=40)
    stderr = "summarize: fetching https://api.example.com/v1/documents/00037\nsummarize: 404 Not Found\n"
    try:
        raise CommandFailed(4, stderr)  # raised, so a traceback exists that the detail must not show
    except CommandFailed as exc:
        _fail(batch, SEQ, classify(exc))
    (batch / "logs" / f"{SEQ}.1.err").write_text(stderr)
    (batch / "logs" / f"{SEQ}.1.out").write_text("reading page 1 of 3\n")
    return batch


def _timed_out_batch(out: Path) -> Path:
    batch = make_batch(out, state=BatchState.FINISHED, n=40)
    try:
        raise ItemTimeout(30.0)  # a command that printed nothing to stderr before it was killed
    except ItemTimeout as exc:
        _fail(batch, SEQ, classify(exc))
    (batch / "logs" / f"{SEQ}.1.err").unlink(missing_ok=True)
    return batch


def _python_batch(out: Path) -> Path:
    batch = make_batch(out, state=BatchState.FINISHED, n=40)
    manifest = orjson.loads((batch / "manifest.json").read_bytes())
    manifest["processor"] = {"kind": "python", "call": f"{TASKS}:summarize", "cwd": "/data"}
    (batch / "manifest.json").write_bytes(orjson.dumps(manifest))
    lines = TASKS_SOURCE.splitlines(keepends=True)
    linecache.cache[TASKS] = (len(TASKS_SOURCE), None, lines, TASKS)
    namespace: dict[str, Any] = {}
    exec(compile(TASKS_SOURCE, TASKS, "exec"), namespace)
    processor = SimpleNamespace(run=namespace["summarize"], max_result_bytes=1 << 20)
    item = Item(SEQ, f"https://api.example.com/v1/documents/{SEQ:05d}", "u", 1, str(batch))
    (outcome,) = run_items(processor, [item], Classifier(), chunked=False)  # the engine's own path
    assert outcome.error is not None
    _fail(batch, SEQ, outcome.error)
    return batch


def _app(out: Path, batch: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=out,
        batch=batch,
        watch_files=False,
        clock=lambda: FROZEN,
        theme="dark",
        handle_hangup=False,
        strict_display=True,
    )


async def _open(pilot: Pilot[Any], batch: Path) -> None:
    await settle(pilot)
    await pilot.app.push_screen(ItemDetailScreen(batch, SEQ))
    await settle(pilot)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_detail_of_a_failed_shell_item(out: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    batch = _shell_batch(out)

    async def run_before(pilot: Pilot[Any]) -> None:
        await _open(pilot, batch)
        screen = pilot.app.screen
        assert isinstance(screen, ItemDetailScreen)
        error = screen.detail_text()
        assert "Traceback" not in error and "404 Not Found" in error

    assert snap_compare(_app(out, batch), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_detail_of_a_failed_python_callable(out: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    batch = _python_batch(out)

    async def run_before(pilot: Pilot[Any]) -> None:
        await _open(pilot, batch)
        screen = pilot.app.screen
        assert isinstance(screen, ItemDetailScreen)
        text = screen.detail_text()
        assert f'File "{TASKS}", line 10, in count_words' in text and "engine" not in text

    assert snap_compare(_app(out, batch), terminal_size=size, run_before=run_before)


def test_detail_of_a_shell_item_that_timed_out_silently(out: Path, snap_compare: Any) -> None:
    # No stderr: the detail says so, never batchtui's own ItemTimeout traceback in its place.
    batch = _timed_out_batch(out)

    async def run_before(pilot: Pilot[Any]) -> None:
        await _open(pilot, batch)
        screen = pilot.app.screen
        assert isinstance(screen, ItemDetailScreen)
        text = screen.detail_text()
        assert "stderr (tail):\n(no stderr)" in text and "Traceback" not in text

    assert snap_compare(_app(out, batch), terminal_size=(80, 24), run_before=run_before)
