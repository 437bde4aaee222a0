"""`batchtui serve` in a real headless browser (Debian's chromium, driven by playwright): the page
loads and shows the batch's counts, a wrong token is refused, and the keys do nothing without
--allow-control while the same key pauses the engine with it.

Marked ``browser`` (not in the default run: it needs chromium and playwright); .ci/run installs
both and runs it. What the page shows is read from the websocket frames the app sends (the page
draws them on a canvas), with the escape sequences taken out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import only_batch
from .test_serve import free_port, needs_serve, start_serve

pytestmark = [pytest.mark.browser, needs_serve]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: As the machine's own check starts it: no sandbox (root), and none of chromium's calls home
#: (they are refused here, many at a time).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


class Page:
    """A browser tab on the served app, with the text the app has sent it so far."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.frames: list[bytes] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload: bytes | str) -> None:
        self.frames.append(payload if isinstance(payload, bytes) else payload.encode())

    def keys(self, *keys: str) -> None:
        """Type into the page's terminal (xterm.js reads its hidden textarea, focused first)."""
        self.page.focus("textarea.xterm-helper-textarea")
        for key in keys:
            self.page.keyboard.press(key)

    def text(self, since: int = 0) -> str:
        return ANSI.sub(b"", b"".join(self.frames[since:])).decode("utf-8", "replace")

    def wait_for_text(self, *wanted: str, since: int = 0, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not all(w in self.text(since) for w in wanted):
            assert time.monotonic() < deadline, f"{wanted} not shown: {self.text(since)[-2000:]!r}"
            self.page.wait_for_timeout(100)


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install chromium): the browser tests need it")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _wait(done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def _state(batch: Path) -> str:
    return str(orjson.loads((batch / "live_progress.json").read_bytes())["state"])


@pytest.fixture
def running_batch(
    tmp_path: Path, out_dir: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> Iterator[Path]:
    """A background engine on 5 items of 60 s each, one at a time: it runs all test long."""
    (tmp_path / "in.txt").write_text("".join(f"{i}\n" for i in range(5)))
    started = run_cli(
        ["run", "in.txt", "--as", "lines", "--cmd", "sleep 60; : {}", "-j", "1", "--grace", "0", "--detach"]
    )
    assert started.returncode == 0, started.stderr
    batch = only_batch(out_dir)
    _wait(lambda: (batch / "live_progress.json").exists() and _state(batch) == "running")
    try:
        yield batch
    finally:
        run_cli(["stop", batch.name])
        waited = run_cli(["wait", batch.name], timeout=60)
        assert waited.returncode == 130, waited.stderr  # stopped


def test_the_page_shows_the_batch_and_refuses_a_wrong_token(
    browser: Any, running_batch: Path, out_dir: Path, tmp_path: Path
) -> None:
    proc, url = start_serve([running_batch.name, "--port", str(free_port())], out_dir, tmp_path)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 820})
        refused = context.new_page().goto(url.replace("?token=", "?token=x"))
        assert refused is not None and refused.status == 403

        tab = Page(context.new_page())
        loaded = tab.page.goto(url)
        assert loaded is not None and loaded.status == 200
        # One item runs, three wait in the engine's queue, none has ended.
        tab.wait_for_text(running_batch.name, "RUNNING", "running 1/1", "queued 3", "complete 0")
        tab.page.screenshot(path=str(tmp_path / "serve.png"))

        # Read-only: p (pause) and x, y (stop) are refused by the app. `?` comes after them and
        # its help is drawn once they were handled (the app takes keys in order).
        since = len(tab.frames)
        tab.keys("p", "x", "y", "?")
        tab.wait_for_text("every one is in the command palette", since=since)
        assert not (running_batch / "control.jsonl").exists()
        assert _state(running_batch) == "running"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_with_allow_control_the_same_key_pauses_the_engine(
    browser: Any, running_batch: Path, out_dir: Path, tmp_path: Path
) -> None:
    proc, url = start_serve([running_batch.name, "--port", str(free_port()), "--allow-control"], out_dir, tmp_path)
    try:
        tab = Page(browser.new_page(viewport={"width": 1400, "height": 820}))
        tab.page.goto(url)
        tab.wait_for_text(running_batch.name, "RUNNING", "running 1/1")
        tab.keys("p")
        _wait(lambda: _state(running_batch) == "paused")
        tab.wait_for_text("PAUSED")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
