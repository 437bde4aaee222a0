"""The dashboard's title line cut to the terminal's width: it ends with an ellipsis (it wrapped
onto a hidden second line, cut at a word with nothing to say so), and the state badge stays
whole, beside an id cut in the middle when the id is too long for both (a folder given by path
may have any name)."""

from __future__ import annotations

from pathlib import Path

from rich.cells import cell_len
from rich.text import Text

from batchtui.engine.models import BatchState
from batchtui.tui.widgets.status import TitleBar

from .conftest import run
from .fixtures import make_batch
from .test_snapshots import dashboard_open

REASON = "failure rate 35% over --max-failure-rate 20% after 40 items (of 300), the last 12 of type exit 4"


def _title(out: Path, batch: Path, width: int = 80) -> str:
    async def body() -> str:
        async with dashboard_open(out, batch, size=(width, 24)) as (_pilot, screen):
            title = screen.query_one(TitleBar)
            content = title.content
            assert isinstance(content, Text)
            return content.plain

    return run(body)


def test_a_cut_title_ends_with_an_ellipsis(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.HALTED, halt_reason=REASON)
    shown = _title(out, batch)
    assert shown == "20261118_090000_aaaa0003   [HALTED]  failure rate 35% over --max-failure-ra…"
    assert cell_len(shown) == 76


def test_a_long_batch_folder_name_leaves_the_badge_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    name = "nightly-" + "x" * 100 + "-run-0042"
    batch = make_batch(out, state=BatchState.HALTED, batch_id=name, halt_reason=REASON)
    shown = _title(out, batch)
    assert cell_len(shown) == 76
    head, sep, rest = shown.partition("   [HALTED]")
    assert sep and head.startswith("nightly-xxx") and head.endswith("xxx-run-0042") and "…" in head
    assert rest == "…"  # the halt reason and the name are cut: said by the ellipsis


def test_a_title_that_fits_is_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.HALTED, halt_reason="budget spent")
    shown = _title(out, batch, width=200)
    assert shown.endswith("[HALTED]  budget spent") and "…" not in shown
