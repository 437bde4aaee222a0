"""tui/text.py cut_middle: keys and paths cut in the middle, so the end that tells rows apart stays."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from batchtui.tui.text import cut_middle

URL = "https://api.example.com/v1/documents/00017"


def test_a_long_url_keeps_both_ends() -> None:
    assert cut_middle(URL, 20) == "https://a…ents/00017"
    assert cut_middle(URL.replace("17", "18"), 20) != cut_middle(URL, 20)  # the end tells them apart


def test_text_that_fits_is_unchanged() -> None:
    assert cut_middle(URL, len(URL)) == URL
    assert cut_middle("", 5) == ""


@pytest.mark.parametrize("width", [0, 1, 2, 3, 7, 13, 41])
def test_never_wider_than_asked(width: int) -> None:
    out = cut_middle(URL, width)
    assert cell_len(out) == width
    if width:
        assert "…" in out


def test_wide_characters_are_never_split() -> None:
    out = cut_middle("日本語のファイル名がとても長い.txt", 11)
    assert out == "日本…い.txt"
    assert cell_len(out) == 11
