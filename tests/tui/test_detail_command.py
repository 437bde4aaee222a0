"""The item detail's ``command:`` line is one that pastes into a shell and runs what ran: each
value shell-quoted, a control character in it (a tab, ESC, \\x01) escaped inside ``$'...'``
(it showed ``'a b$(x)\\x01tab    here'``: a backslash, an x and two digits once pasted, and the
tab as spaces); the copy menu's ``m`` copies that same line."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.screens.detail import ItemDetailScreen

from .conftest import run
from .test_snapshots import settle

LINE = "a b$(x)\x01tab\there \x1b[2J"
SHOWN = r"printf '%s\n' $'a b$(x)\x01tab\x09here \x1b[2J'"


def test_the_detail_shows_and_copies_a_pasteable_command(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text(LINE + "\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 1}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec(r"printf '%s\n' {}"))
    BatchRunner(batch, config=config, action="run").run()

    async def body() -> None:
        app = BatchtuiApp(output_dir=batch.path.parent, watch_files=False, handle_hangup=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await app.push_screen(ItemDetailScreen(batch.path, 0))
            await settle(pilot)
            content = app.screen.query_one("#detail-run", Static).content
            assert isinstance(content, Text)
            assert content.plain.splitlines()[0] == f"command: {SHOWN}"
            await pilot.press("c", "m")
            await settle(pilot)
            assert app.clipboard == SHOWN

    run(body)
