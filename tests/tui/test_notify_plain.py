"""Notifications are plain text: a ``[`` in an error message, a path or an item's content never
styles a toast or makes it a link. Textual reads a notification as markup unless told not to,
and with the stock App ``[@click=app.quit]quit[/]`` became a toast that quits the app when
clicked (tui/plain_app.py)."""

from __future__ import annotations

from pathlib import Path

from textual.content import Content
from textual.widgets._toast import Toast

from batchtui.engine.models import BatchState
from batchtui.tui.screens.dashboard import DashboardScreen

from .conftest import run
from .fixtures import make_batch
from .test_snapshots import app_for, settle

HOSTILE = (
    "cannot resume: [@click=app.quit]quit[/]",
    "items.db: /data/[bold red]x[/]/items.db",
    "a lone [ and [/] and [link=https://example.com]x[/link]",
)


def test_every_notification_shows_its_text_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED)

    async def body() -> None:
        app = app_for(out, batch)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            screen.notify(HOSTILE[0], severity="error", timeout=60)  # a screen's, as the views call it
            app.notify(HOSTILE[1], timeout=60)  # the app's
            screen.query_one("#items").notify(HOSTILE[2], markup=True, timeout=60)  # even when asked
            await settle(pilot)
            shown = [toast.render() for toast in app.screen.query(Toast)]
            assert len(shown) == len(HOSTILE)
            for content in shown:
                assert isinstance(content, Content)
                assert not content.spans, content.spans  # no style, no link, no action
            assert sorted(c.plain for c in shown) == sorted(HOSTILE)
            assert app.is_running

    run(body)
