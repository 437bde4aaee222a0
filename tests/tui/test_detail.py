"""The item detail as an operator debugging a command uses it: `f` follows a running item's output
live through a retry until it ends, `o` hands the log (or the whole detail) to $PAGER, `c`
copies what is picked in its menu and `y` the item as JSON (OSC 52, written by the driver)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.models import BatchState
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.copy_menu import CopyMenu
from batchtui.tui.screens.detail import ItemDetailScreen
from batchtui.tui.widgets.output_follow import OutputFollow

from .conftest import run
from .fixtures import FROZEN, make_batch


async def _wait_for(pilot: Any, pred: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s")
        await pilot.pause(0.05)


def _texts(follow: OutputFollow) -> list[str]:
    return [line.text for line in follow.kept]


def test_f_follows_a_running_item_live_through_its_retry_until_it_ends(tmp_path: Path) -> None:
    gate1, gate2 = tmp_path / "gate1", tmp_path / "gate2"
    items = tmp_path / "items.txt"
    items.write_text("only\n")
    # Attempt 1 writes a line every 0.2 s until gate1, then asks for a retry (exit 75); attempt 2
    # does the same until gate2 and succeeds. Nothing ends before the test has seen it live.
    cmd = (
        'n=0; if [ "$BATCHTUI_ATTEMPT" = 1 ]; then g=' + str(gate1) + "; else g=" + str(gate2) + "; fi; "
        'echo "start $BATCHTUI_ATTEMPT"; while [ ! -e $g ]; do n=$((n+1)); echo "tick $n"; '
        'echo "warn $n [bold]x\x1b[31m" >&2; sleep 0.2; done; [ "$BATCHTUI_ATTEMPT" = 1 ] && exit 75; echo bye'
    )
    config = load_config(
        {"output_dir": str(tmp_path / "out"), "workers": 1, "max_attempts": 3, "backoff": 0}, environ={}
    )
    batch = create_batch(config, build_spec([str(items)]), shell_spec(cmd))
    runner = BatchRunner(batch, config=config)

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, runner=runner, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(100, 40)) as pilot:
            try:
                await app.push_screen(ItemDetailScreen(batch.path, 0))
                await pilot.pause()
                follow = app.screen.query_one(OutputFollow)
                await pilot.press("f")
                await _wait_for(pilot, lambda: "tick 2" in _texts(follow), "attempt 1's lines")
                assert "start 1" in _texts(follow) and not gate1.exists()  # seen while it runs
                # stderr interleaved, marked, shown as plain text (no markup, no escape reaches it)
                assert any(t.startswith("warn 1 [bold]x") for t in _texts(follow))
                shown = "\n".join(strip.text for strip in follow.lines)
                assert "! warn 1 [bold]x\\x1b[31m" in shown and "\x1b" not in shown
                await pilot.press("v")  # stdout only
                shown = "\n".join(strip.text for strip in follow.lines)
                assert "tick 1" in shown and "warn 1" not in shown
                await pilot.press("v")  # stderr only
                shown = "\n".join(strip.text for strip in follow.lines)
                assert "warn 1" in shown and "tick 1" not in shown
                await pilot.press("v")  # both again
                gate1.touch()
                await _wait_for(pilot, lambda: "start 2" in _texts(follow), "the retry's output")
                texts = _texts(follow)
                assert texts.index("── attempt 2 ──") < texts.index("start 2")
                assert follow.following
                gate2.touch()
                await _wait_for(pilot, lambda: not follow.following, "the end of the item")
                texts = _texts(follow)
                assert texts[-1] == "── the item ended (complete): no more output ──"
                assert "bye" in texts
            finally:
                gate1.touch()
                gate2.touch()
            await _wait_for(pilot, lambda: not app.engine_running, "the run's end")

    run(body)


def test_closing_the_detail_cancels_the_follower(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    items = tmp_path / "items.txt"
    items.write_text("only\n")
    cmd = f"while [ ! -e {gate} ]; do echo tick; sleep 0.2; done"
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 1}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec(cmd))
    runner = BatchRunner(batch, config=config)

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, runner=runner, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(100, 40)) as pilot:
            try:
                await app.push_screen(ItemDetailScreen(batch.path, 0))
                await pilot.pause()
                follow = app.screen.query_one(OutputFollow)
                await pilot.press("f")
                await _wait_for(pilot, lambda: "tick" in _texts(follow), "the first line")
                (worker,) = [w for w in follow.workers if w.group == "follow"]
                await pilot.press("escape")
                await _wait_for(pilot, lambda: worker.is_finished, "the follower's end")
                assert worker.is_cancelled
            finally:
                gate.touch()
            await _wait_for(pilot, lambda: not app.engine_running, "the run's end")

    run(body)


# -- pager and copy, on a fixture batch (no engine) ------------------------------------------


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    batch = make_batch(tmp_path / "out", state=BatchState.FINISHED, n=40)
    # item 37 failed with exit 4 (see fixtures): give it the logs of its one attempt
    logs = batch / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    (logs / "37.1.out").write_text("converting page 1\nconverting page 2\n")
    (logs / "37.1.err").write_text("parse error: unexpected token at line 12\n")
    return batch


def _app(batch: Path) -> BatchtuiApp:
    return BatchtuiApp(
        output_dir=batch.parent, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False
    )


@pytest.fixture
def pager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$PAGER: a script that records its arguments and what the files it got hold."""
    record = tmp_path / "pager.record"
    script = tmp_path / "recording pager"
    script.write_text(f'#!/bin/sh\nfor f in "$@"; do printf "== %s\\n" "$f"; cat -- "$f"; done > "{record}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PAGER", f"'{script}'")
    return record


@contextlib.contextmanager
def _no_suspend(app: BatchtuiApp) -> Iterator[None]:
    yield  # the headless test driver cannot suspend: the pager runs as it would in a terminal


async def _open_detail(app: BatchtuiApp, pilot: Any, batch: Path, seq: int) -> ItemDetailScreen:
    await app.push_screen(ItemDetailScreen(batch, seq))
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, ItemDetailScreen)
    return screen


def _paged(batch: Path, pager: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> str:
    """What the recording $PAGER got when ``key`` was pressed in item 37's detail."""

    async def body() -> None:
        app = _app(batch)
        monkeypatch.setattr(app, "suspend", lambda: _no_suspend(app))
        async with app.run_test(size=(100, 40)) as pilot:
            await _open_detail(app, pilot, batch, 37)
            await pilot.press(key)
            await pilot.pause()

    run(body)
    return pager.read_text()


def test_o_opens_the_attempts_logs_in_the_pager(finished: Path, pager: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = _paged(finished, pager, monkeypatch, "o")
    out, err = (line.removeprefix("== ") for line in got.splitlines() if line.startswith("== "))
    assert [os.path.basename(out), os.path.basename(err)] == ["37.1.out", "37.1.err"]
    assert os.path.basename(os.path.dirname(out)).startswith("batchtui-item-37-") and not os.path.exists(out)
    assert got == (
        f"== {out}\nconverting page 1\nconverting page 2\n== {err}\nparse error: unexpected token at line 12\n"
    )


def test_o_hands_the_pager_the_logs_with_their_escape_sequences_shown_not_sent(
    finished: Path, pager: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An item's output is untrusted: OSC 52 writes the clipboard, a colour or a cursor move hides
    # lines. $PAGER may send what it gets as it is (cat, less -r), so it gets them escaped, as
    # `batchtui logs` prints them to a terminal.
    (finished / "logs" / "37.1.out").write_bytes(b"\x1b]52;c;cm0gLXJmIH4=\x07copied\n\x1b[31mred\x1b[0m\ttab\n\xff\n")

    got = _paged(finished, pager, monkeypatch, "o")
    assert "\x1b" not in got and "\x07" not in got
    assert "\\x1b]52;c;cm0gLXJmIH4=\\x07copied\n\\x1b[31mred\\x1b[0m    tab\n\\xff\n" in got
    assert "parse error: unexpected token at line 12\n" in got


def test_shift_o_pages_the_whole_detail_as_text_and_removes_its_file(
    finished: Path, pager: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = _paged(finished, pager, monkeypatch, "O")
    first, _, text = got.partition("\n")
    name = first.removeprefix("== ")
    assert os.path.basename(name).startswith("batchtui-item-37-") and not os.path.exists(name)
    assert text.startswith("#37  https://api.example.com/v1/documents/00037  [FAILED]  attempts 1\n")
    for part in ("\nRan\n", "\nAttempts\n1  failed", "logs/37.1.out  logs/37.1.err", "\nError\nexit 4 [item]"):
        assert part in text, part
    assert "logs/37.1.err\nparse error: unexpected token at line 12" in text


def test_o_with_its_logs_gone_pages_the_detail_not_nothing(
    finished: Path, pager: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The logs were there when the detail was read, gone by the `o` (the batch folder deleted
    # while watching). The pager got no file at all: less said "Missing filename" and a pager
    # that reads its input then (cat, more) sat on the terminal's keys.

    async def body() -> None:
        app = _app(finished)
        monkeypatch.setattr(app, "suspend", lambda: _no_suspend(app))
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await _open_detail(app, pilot, finished, 37)
            assert screen.logs
            shutil.rmtree(finished / "logs")
            await pilot.press("o")
            await pilot.pause()
            assert any("cannot be read" in n.message for n in app._notifications)

    run(body)
    first, _, text = pager.read_text().partition("\n")
    assert os.path.basename(first.removeprefix("== ")).startswith("batchtui-item-37-")
    assert text.startswith("#37  https://api.example.com/v1/documents/00037  [FAILED]")


def test_a_missing_pager_is_a_notification(finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGER", "no-such-pager-here -R")

    async def body() -> None:
        app = _app(finished)
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await _open_detail(app, pilot, finished, 37)
            await pilot.press("o")
            await pilot.pause()
            assert app.screen is screen and app.is_running
            assert [n.message for n in app._notifications] == ["pager not found: no-such-pager-here (set $PAGER)"]

    run(body)


class _Recorder:
    """What the app's driver writes, kept (OSC 52 is written through it)."""

    def __init__(self, app: BatchtuiApp) -> None:
        self.written: list[str] = []
        driver = app._driver
        assert driver is not None
        original = driver.write

        def write(data: str) -> None:
            self.written.append(data)
            original(data)

        driver.write = write  # type: ignore[method-assign]

    def clipboard(self) -> list[str]:
        out = []
        for chunk in self.written:
            start = chunk.find("\x1b]52;c;")
            if start >= 0:
                out.append(base64.b64decode(chunk[start + 7 : chunk.index("\a", start)]).decode())
        return out


def test_c_copies_what_the_menu_picks_with_osc52(finished: Path) -> None:
    async def body() -> None:
        app = _app(finished)
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await _open_detail(app, pilot, finished, 37)
            recorder = _Recorder(app)
            await pilot.press("c")
            await pilot.pause()
            assert isinstance(app.screen, CopyMenu)
            letters = [c.letter for c in app.screen.choices]
            assert letters == ["k", "l", "m", "e"]  # a line item: no path of a file
            await pilot.press("k")
            await pilot.pause()
            assert app.screen is screen
            await pilot.press("c", "e")
            await pilot.pause()
            await pilot.press("ctrl+c")  # nothing selected: the menu, not Textual's quit nag
            await pilot.pause()
            assert isinstance(app.screen, CopyMenu)
            await pilot.press("down", "enter")  # the second: the log paths
            await pilot.pause()
            assert recorder.clipboard() == [
                "https://api.example.com/v1/documents/00037",
                "exit 4 [item]: parse error: unexpected token at line 12\n"
                "Traceback (most recent call last):\n  parse error: unexpected token at line 12",
                f"{finished / 'logs' / '37.1.out'}\n{finished / 'logs' / '37.1.err'}",
            ]
            assert not any("quit" in n.message for n in app._notifications)

    run(body)


def test_y_copies_the_item_as_json(finished: Path) -> None:
    async def body() -> None:
        app = _app(finished)
        async with app.run_test(size=(100, 40)) as pilot:
            await _open_detail(app, pilot, finished, 37)
            recorder = _Recorder(app)
            await pilot.press("y")
            await pilot.pause()
            (copied,) = recorder.clipboard()
            item = json.loads(copied)
            assert (item["seq"], item["key"], item["status"]) == (
                37,
                "https://api.example.com/v1/documents/00037",
                "failed",
            )
            assert item["error_type"] == "exit 4" and item["attempts"] == 1
            (attempt,) = item["attempt_rows"]
            assert attempt["error"]["type"] == "exit 4"
            assert attempt["logs"] == [str(finished / "logs" / "37.1.out"), str(finished / "logs" / "37.1.err")]
            assert item["ran"]["kind"] == "shell"

    run(body)
