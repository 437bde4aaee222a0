"""A key longer than the row cache keeps (TEXT_CAP) still shows its end: keys and paths differ
at their end as often as at their start, which is why the key column is cut in the middle.
Two 2,000-character keys that differ only at their end were drawn alike, both ending in "A…"
(the cap cut the end off before the middle cut could keep it)."""

from __future__ import annotations

from batchtui.engine.store.queries import ItemRow
from batchtui.tui.widgets.items_rows import TEXT_CAP, Row, fit


def _row(key: str) -> Row:
    return Row.from_item(
        ItemRow(0, key, key, "line", "pending", 0, None, None, None, None, None, None, None, None, None)
    )


def test_a_very_long_key_keeps_its_end() -> None:
    ends = ("/part-0001.csv", "/part-0002.csv")
    shown = [fit(_row("A" * 2000 + end).key, 40, middle=True) for end in ends]
    assert [s.endswith(end) for s, end in zip(shown, ends, strict=True)] == [True, True], shown
    assert shown[0] != shown[1]
    assert shown[0].startswith("AAAA") and shown[0].count("…") == 1, shown[0]


def test_the_kept_key_is_capped_and_escaped() -> None:
    key = _row("\x1b" * 3000).key
    assert "\x1b" not in key and key.count("…") == 1
    assert len(key) <= TEXT_CAP * len("\\x1b")
    assert _row("short").key == "short"
