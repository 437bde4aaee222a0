"""Under LANG=C (a terminal without UTF-8) what the app writes to the terminal is ASCII:
borders, tabs, scrollbars, bars, sparklines and marks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from batchtui.engine.models import BatchState
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.glyphs import ascii_terminal, to_ascii
from batchtui.tui.widgets.charts import ZeroSparkline

from .conftest import run
from .fixtures import FROZEN, make_batch


def test_the_locale_decides() -> None:
    # Python's own coercion (PEP 538) sets LC_CTYPE=C.UTF-8 under LANG=C: LANG still decides.
    assert ascii_terminal({"LANG": "C", "LC_CTYPE": "C.UTF-8"})
    assert ascii_terminal({"LANG": "POSIX"})
    assert ascii_terminal({"LC_ALL": "C", "LANG": "en_US.UTF-8"})
    assert ascii_terminal({"LANG": "en_US.ISO-8859-1"})
    assert not ascii_terminal({"LANG": "en_US.UTF-8"})
    assert not ascii_terminal({"LANG": "C", "LC_ALL": "de_DE.utf8"})
    assert not ascii_terminal({})  # nothing said: today's terminals are UTF-8
    assert not ascii_terminal({"LANG": "C", "BATCHTUI_ASCII": "0"})
    assert ascii_terminal({"LANG": "en_US.UTF-8", "BATCHTUI_ASCII": "1"})


def test_to_ascii_keeps_the_layout() -> None:
    assert to_ascii("╭─┤ok├─╮") == "+-+ok+-+"
    assert to_ascii("│▁▄█│") == "|_-#|"
    assert to_ascii("café 日本") == "caf? ????"  # a wide character keeps its two cells


def test_under_lang_c_the_terminal_gets_ascii_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LC_ALL", "LC_CTYPE", "BATCHTUI_ASCII"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C")
    written: list[str] = []
    batch = make_batch(tmp_path, state=BatchState.RUNNING, keys=[f"dóc-{i}-ü" for i in range(300)])

    async def frame(app: BatchtuiApp, size: tuple[int, int] = (80, 24)) -> tuple[str, str, str]:
        """The screen as Textual renders it, as the app hands it to the terminal, and the
        throughput chart (shown from 30 rows up)."""
        async with app.run_test(size=size) as pilot:
            await pilot.press("space", "space")  # two marks
            await pilot.pause()
            sparkline = str(app.screen.query_one("#rate-spark", ZeroSparkline).render())
            rendered = app.screen._compositor.render_update(full=True).render_segments(app.console)
            written.clear()
            # The terminal's driver (Textual's for this platform, the app's class around it): its
            # write, without a terminal to set up, into the base class's (which collects it).
            base = app.driver_class.__mro__[1]
            monkeypatch.setattr(base, "write", lambda self, data: written.append(data))
            app.driver_class.__new__(app.driver_class).write(rendered)
            return rendered, "".join(written), sparkline

    app = BatchtuiApp(output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False)
    assert app.ascii_only
    rendered, sent, _sparkline = run(lambda: frame(app))
    assert not rendered.isascii()  # Textual draws box characters...
    assert sent.isascii(), sorted({ch for ch in sent if not ch.isascii()})  # ...the terminal gets none
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", sent)
    assert "-" * 40 in plain and "\n| Errors" in plain  # the borders and rules, in ASCII
    assert "| *    0 complete" in plain  # a mark
    assert "enter Details" in plain  # a key's symbol (⏎) said in a word
    assert " d?c-0-? " in plain  # an item's key: a letter the terminal cannot show is a '?'
    app = BatchtuiApp(output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False)
    _rendered, sent, sparkline = run(lambda: frame(app, (120, 40)))
    assert sent.isascii() and sparkline.endswith("#") and set(sparkline) <= set(" __.--=*#\n")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", sent)
    assert re.search(r"INTERRUPTED +#+-+ +60%", plain), plain  # the progress bar: done and left apart

    monkeypatch.setenv("LANG", "C.UTF-8")
    app = BatchtuiApp(output_dir=tmp_path, batch=batch, watch_files=False, clock=lambda: FROZEN, handle_hangup=False)
    assert not app.ascii_only
    _rendered, sent, sparkline = run(lambda: frame(app, (120, 40)))
    assert not sent.isascii()  # a UTF-8 terminal gets them as drawn
    assert "█" in sparkline
