"""Notifications are plain text: a ``[`` in an error message, a path or an item's content never
styles a toast or makes it a link. Textual reads a notification as markup unless told not to,
and with the stock App ``[@click=app.quit]quit[/]`` became a toast that quits the app when
clicked (tui/plain_app.py)."""

from __future__ import annotations

from pathlib import Path

from textual import events
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


def test_textual_own_notifications_show_no_tags(tmp_path: Path) -> None:
    """ctrl+c's hint is Textual's markup: it shows its key in bold, not ``[b]q[/b]``; the
    screenshot's saved path is plain text whatever it holds."""
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.FINISHED)

    async def body() -> None:
        for shown_batch in (batch, None):  # the dashboard, then the batch browser
            app = app_for(out, shown_batch)
            async with app.run_test(size=(80, 24), notifications=True) as pilot:
                await settle(pilot)
                await pilot.press("ctrl+c")
                await settle(pilot)
                (toast,) = [t.render() for t in app.screen.query(Toast)]
                assert isinstance(toast, Content)
                assert "Press q to quit the app" in toast.plain and "[" not in toast.plain, toast.plain
                styled = {toast.plain[s.start : s.end]: str(s.style) for s in toast.spans}
                assert styled.get("q") in ("b", "bold"), toast.spans  # the key in bold
                assert app.is_running
        app = app_for(out, batch)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot)
            path = tmp_path / "[b]shots[/b]" / "s.svg"
            app.post_message(events.DeliveryComplete(key="k", path=path, name="screenshot"))
            await settle(pilot)
            (toast,) = [t.render() for t in app.screen.query(Toast)]
            assert isinstance(toast, Content)
            assert all(span.end <= len("Screenshot") for span in toast.spans), toast.spans  # its title's only
            assert str(path) in toast.plain and "$text-success" not in toast.plain, toast.plain

    run(body)
