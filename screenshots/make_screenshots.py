"""Regenerate the README screenshots from the real app: a real demo batch, a real engine.

    python screenshots/make_screenshots.py

Writes SVGs next to this file: the dashboard while the demo runs (dark, light and
high-contrast themes), the failed-items tab, an item's detail screen and the batch browser.
Then serve.png: `batchtui serve` on a running demo, as headless chromium shows it (skipped,
said so, without chromium or playwright; both are what `pytest -m browser` needs too).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import demo_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import SourceEntry, SourceSpec
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.browser import BrowserScreen

HERE = Path(__file__).resolve().parent
SIZE = (140, 46)


def demo_runner(out: Path, items: int) -> BatchRunner:
    config = load_config(
        {
            "output_dir": str(out),
            "workers": 8,
            "executor": "thread",
            "backoff": 0.2,
            "max_cost": 5.0,
            "name": f"demo ({items} items)",
        },
        environ={},
    )
    spec = SourceSpec(entries=(SourceEntry(kind="stdin", path="-"),))
    lines = io.StringIO("".join(f"https://api.example.com/v1/documents/{i:07d}\n" for i in range(items)))
    batch = create_batch(config, spec, demo_spec(), stdin=lines)
    return BatchRunner(batch, config=config)


async def shoot(out: Path, theme: str, *, full: bool, seconds: float) -> None:
    runner = demo_runner(out, 4000)
    app = BatchtuiApp(output_dir=out, runner=runner, theme=theme, handle_hangup=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(seconds)
        app.save_screenshot(f"dashboard-{theme}.svg", str(HERE))
        if full:
            await pilot.press("3")
            await pilot.pause(1.0)
            app.save_screenshot("failed-items.svg", str(HERE))
            await pilot.press("enter")
            await pilot.pause(1.0)
            app.save_screenshot("item-detail.svg", str(HERE))
            await pilot.press("escape")
        runner.request_stop("screenshots taken", grace=1)
        for _ in range(100):
            await pilot.pause(0.1)
            if not app.engine_running:
                break
        if full:
            app.push_screen(BrowserScreen(out))
            await pilot.pause(1.0)
            await app.workers.wait_for_complete()
            await pilot.pause(0.5)
            app.save_screenshot("browser.svg", str(HERE))


def shoot_serve(out: Path, seconds: float) -> bool:
    """serve.png: a detached demo run, served read-only, in headless chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("serve.png: skipped (needs chromium and playwright)", file=sys.stderr)
        return False
    cli = [sys.executable, "-m", "batchtui.tui.cli"]
    demo = [*cli, "demo", "--items", "4000", "-j", "8", "--max-cost", "5", "--detach", "--json"]
    started = subprocess.run([*demo, "--output-dir", str(out)], capture_output=True, text=True, check=True)
    batch = Path(json.loads(started.stdout)["batch_dir"]).name
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*cli, "serve", batch, "--output-dir", str(out), "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = None
        while url is None:
            found = re.search(r"(http://\S+\?token=\S+)", server.stdout.readline())
            url = found.group(1) if found else None
        time.sleep(seconds)  # the demo's counts and error groups fill in
        with sync_playwright() as pw:
            args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
            args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
            browser = pw.chromium.launch(executable_path=chromium, args=args)
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(url)
            page.wait_for_timeout(4000)  # the tab's app starts and draws
            page.screenshot(path=str(HERE / "serve.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait()
        subprocess.run([*cli, "stop", batch, "--output-dir", str(out)], capture_output=True, check=False)
        subprocess.run([*cli, "wait", batch, "--output-dir", str(out)], capture_output=True, check=False)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="How long the demo runs before the shot.")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="batchtui-shots-"))
    # The demo batches are scratch: registered in a registry of their own, not the user's
    # (where they would stay listed as gone once this folder is removed).
    os.environ["BATCHTUI_STATE_DIR"] = str(work / "state")
    cwd = os.getcwd()
    os.chdir(work)  # relative output dir: no temp paths in the pictures
    try:
        out = Path("batch_output")
        asyncio.run(shoot(out, "dark", full=True, seconds=args.seconds))
        for theme in ("light", "high-contrast"):
            asyncio.run(shoot(out, theme, full=False, seconds=args.seconds))
        served = shoot_serve(out, args.seconds)
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    for svg in sorted(HERE.glob("*.svg")):
        print(svg.relative_to(HERE.parent))
    if served:
        print((HERE / "serve.png").relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
