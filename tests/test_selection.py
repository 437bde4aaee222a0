"""The selection contract (engine/store/queries.py): error group ids, the filter fields a
selection is made of, :class:`Selection` (its methods and its JSON from control.jsonl), and
the store's reads and changes of a selection, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.fmt import clean
from batchtui.engine.grouping import group_id, normalize_message
from batchtui.engine.store import ItemFilter, ItemQueries, ItemStore
from batchtui.engine.store import bulk as bulk_mod
from batchtui.engine.store.queries import Selection

#: (seq, error type, message, finished_at) of the failed items of :func:`store_path`.
FAILED = [
    (1, "exit 1", "disk full on /data/out/1", "2026-01-01T00:00:05"),
    (2, "exit 1", "disk full on /data/out/2", "2026-01-01T00:00:02"),
    (3, "exit 1", "permission denied: /srv/x/3", "2026-01-01T00:00:03"),
    (5, "timeout", "timed out after 5s", "2026-01-01T00:00:09"),
    (8, "exit 1", "disk full on /data/out/8", "2026-01-01T00:00:07"),
]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """12 items (keys img/0.png .. img/9.png, doc/10.txt, doc/11.txt), 5 of them failed."""
    path = tmp_path / "items.db"
    store = ItemStore.create(path, durable=False)
    try:
        keys = [f"img/{i}.png" for i in range(10)] + ["doc/10.txt", "doc/11.txt"]
        store.enqueue([(k, f'"{k}"', "line", "pending", *(None,) * 6) for k in keys])
        with store.transaction() as conn:
            for seq, etype, msg, at in FAILED:
                cat = "timeout" if etype == "timeout" else "item"
                row = (1, etype, cat, msg, "", normalize_message(msg), at, 0.1, at, seq)
                conn.execute(bulk_mod.FAILED.sql, row)
            conn.execute("UPDATE items SET status='complete' WHERE seq IN (0, 4)")
    finally:
        store.close()
    return path


def selected(path: Path, sel: Selection) -> list[int]:
    with ItemQueries(path) as view:
        return [seq for seq, _ in view.sample_selected(sel, 1000)]


# -- error groups ------------------------------------------------------------------------------


def test_group_id_is_short_stable_and_tells_groups_apart() -> None:
    gid = group_id("exit 1", "disk full on <path>")
    assert len(gid) == 8 and all(c in "0123456789abcdef" for c in gid)
    assert gid == group_id("exit 1", "disk full on <path>")
    # The value itself is the contract: it must not change between runs or versions.
    assert group_id("exit 1", "disk full") == "476ba593"
    assert gid != group_id("exit 2", "disk full on <path>")
    assert gid != group_id("exit 1", "permission denied: <path>")


def test_error_groups_carry_ids_counts_first_and_last_seen(store_path: Path) -> None:
    with ItemQueries(store_path) as view:
        groups = view.error_groups(limit=None)
        assert view.error_groups(limit=1) == groups[:1]
    disk = normalize_message("disk full on /data/out/1")
    assert [(g.error_type, g.message, g.count) for g in groups] == [
        ("exit 1", disk, 3),
        ("exit 1", normalize_message("permission denied: /srv/x/3"), 1),
        ("timeout", "timed out after <n>s", 1),
    ]
    top = groups[0]
    assert top.id == group_id("exit 1", disk)
    assert (top.first_seen, top.last_seen, top.example_seq) == ("2026-01-01T00:00:02", "2026-01-01T00:00:07", 1)
    assert top.category == "item"
    assert len({g.id for g in groups}) == 3


# -- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f", "seqs"),
    [
        (ItemFilter(error_group=group_id("exit 1", normalize_message("disk full on /x/y"))), [1, 2, 8]),
        (ItemFilter(match="DISK FULL"), [1, 2, 8]),  # case-insensitive, the message only
        (ItemFilter(match="img"), []),  # not the key
        (ItemFilter(match="100%"), []),  # % is a plain character
        (ItemFilter(key_glob="doc/*"), [10, 11]),
        (ItemFilter(key_glob="img/[2-4].png"), [2, 3, 4]),
        (ItemFilter(key_glob="img/?.png", status="failed"), [1, 2, 3, 5, 8]),
        (ItemFilter(seq_ranges=((3, 5), (9, 20))), [3, 4, 5, 9, 10, 11]),
        (ItemFilter(seq_ranges=tuple((i, i) for i in range(0, 12, 2))), [0, 2, 4, 6, 8, 10]),  # inline
        (ItemFilter(seq_ranges=tuple((i, i) for i in range(0, 40, 2))), [0, 2, 4, 6, 8, 10]),  # JSON form
        (ItemFilter(error_type="exit 1", match="denied", seq_ranges=((0, 5),)), [3]),  # AND
        # The text filter (the dashboard's /) reads the error as the table shows it, TYPE: message.
        (ItemFilter(text="exit 1"), [1, 2, 3, 8]),
        (ItemFilter(text="TIMEOUT: timed"), [5]),
        (ItemFilter(text="1: disk full"), [1, 2, 8]),
        (ItemFilter(text="doc/"), [10, 11]),  # and the key
    ],
)
def test_each_filter_field_narrows(store_path: Path, f: ItemFilter, seqs: list[int]) -> None:
    assert selected(store_path, Selection.of(f)) == seqs
    with ItemQueries(store_path) as view:
        assert view.count(f) == len(seqs)
        assert [r.seq for r in view.page(f, 0, 100)] == seqs


def test_filter_refuses_what_it_cannot_mean() -> None:
    with pytest.raises(ValueError, match="group id"):
        ItemFilter(error_group="exit 1")
    with pytest.raises(ValueError, match="seq range"):
        ItemFilter(seq_ranges=((7, 3),))
    assert ItemFilter(seq_ranges=((5, 9), (1, 2), (3, 4), (20, 20))).seq_ranges == ((1, 9), (20, 20))


# -- Selection ---------------------------------------------------------------------------------


def test_marks_ranges_views_and_exclusions(store_path: Path) -> None:
    sel = Selection()
    assert sel.is_empty and selected(store_path, sel) == []
    sel = sel.mark(3).mark(4).mark_range(9, 7)
    assert sel.ranges == ((3, 4), (7, 9))
    assert selected(store_path, sel) == [3, 4, 7, 8, 9]
    sel = sel.unmark(8)
    assert sel.ranges == ((3, 4), (7, 7), (9, 9)) and not sel.excluded  # no view: nothing to exclude
    failed = ItemFilter(status="failed")
    sel = sel.add_view(failed)
    assert selected(store_path, sel) == [1, 2, 3, 4, 5, 7, 8, 9]
    sel = sel.toggle(2, marked=True).toggle(8, marked=True)  # unmarked after the view: excluded
    assert sel.excluded == ((2, 2), (8, 8))
    assert selected(store_path, sel) == [1, 3, 4, 5, 7, 9]
    sel = sel.toggle(8, marked=False)
    assert selected(store_path, sel) == [1, 3, 4, 5, 7, 8, 9]
    assert sel.add_view(failed).excluded == ()  # `a` again: the whole view
    assert sel.add_view(failed).views == (failed,)
    with ItemQueries(store_path) as view:
        assert view.count_selected(sel) == 7
        assert view.sample_selected(sel, 2) == [(1, "img/1.png"), (3, "img/3.png")]
        assert view.selected_among(sel, [0, 1, 2, 8, 11, 500]) == {1, 8}
        assert view.selected_among(Selection(), [1, 2]) == set()


def test_selection_json_round_trip() -> None:
    sel = (
        Selection()
        .add_view(ItemFilter(status="failed", error_type="exit 1", match="disk"))
        .add_view(
            ItemFilter(error_group="476ba593", key_glob="a*", seqs=frozenset({4, 2}), seq_ranges=((1, 3),), text="x")
        )
        .mark_range(10, 20)
        .unmark(15)
    )
    obj = sel.to_json()
    assert obj["ranges"] == [[10, 14], [16, 20]] and obj["excluded"] == [[15, 15]]
    assert obj["views"][1]["seqs"] == [2, 4]
    assert Selection.from_json(obj) == sel
    import orjson

    assert Selection.from_json(orjson.loads(orjson.dumps(obj))) == sel


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "must be an object"),
        ({"views": [], "marks": []}, "unknown selection field"),
        ({"views": {"status": "failed"}}, "views must be a list"),
        ({"views": ["failed"]}, "filter must be an object"),
        ({"views": [{"state": "failed"}]}, "unknown filter field"),
        ({"views": [{"status": "broken"}]}, "unknown status"),
        ({"views": [{"status": 3}]}, "must be text"),
        ({"views": [{"error_group": "'; DROP TABLE items; --"}]}, "group id"),
        ({"views": [{"seqs": "1,2"}]}, "list of item numbers"),
        ({"views": [{"seqs": [1, -2]}]}, "bad item number"),
        ({"views": [{"seqs": [True]}]}, "bad item number"),
        ({"ranges": [[5, 1]]}, "seq range"),
        ({"ranges": [[1, 2, 3]]}, "pair"),
        ({"ranges": [[1, "9"]]}, "bad item number"),
        ({"ranges": [[0, 2**70]]}, "bad item number"),
        ({"ranges": "0-9"}, "list of"),
        ({"excluded": [[1]]}, "pair"),
    ],
)
def test_selection_from_json_refuses_anything_else(obj: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Selection.from_json(obj)


# -- changes, offline --------------------------------------------------------------------------


def test_retry_skip_and_prioritize_a_selection(store_path: Path) -> None:
    disk = group_id("exit 1", normalize_message("disk full on /data/out/x"))
    store = ItemStore.open(store_path, durable=False)
    try:
        # Retry: the failed and skipped items of the selection only.
        assert store.retry_selected(Selection.of(ItemFilter(error_group=disk))) == {"failed": 3}
        # Skip: every item not yet complete (0 and 4 are complete).
        assert store.skip_selected(Selection.of(ItemFilter(seq_ranges=((0, 4),)))) == {"pending": 2, "failed": 1}
        assert store.retry_selected(Selection().mark(2).mark(4)) == {"skipped": 1}
        # Prioritize: pending ones, and failed ones put back to pending first; newest first.
        retried, moved = store.prioritize(Selection.of(ItemFilter(seq_ranges=((9, 11),))))
        assert (retried, moved) == ({}, 3)
        retried, moved = store.prioritize(Selection().mark(5).mark(6))
        assert (retried, moved) == ({"failed": 1}, 2)
        assert [r[1] for r in store.next_first(None, 100)] == [5, 6, 9, 10, 11]
        assert store.has_first()
        status = dict(store.conn.execute("SELECT seq, status FROM items").fetchall())
    finally:
        store.close()
    assert [s for s, v in sorted(status.items()) if v == "skipped"] == [1, 3]
    assert [s for s, v in sorted(status.items()) if v == "failed"] == []
    with ItemQueries(store_path) as view:
        assert view.error_groups(None) == []


def test_a_selection_of_100k_items_is_counted_and_applied_without_holding_them(tmp_path: Path) -> None:
    """The `a` key on a 100k-item view, then a bulk skip: by one SQL condition, no seq in Python
    (a set of them would take ~4 MiB, a list ~3.5 MiB with its ints; bench/selection.py prints
    the figures at 300k)."""
    import time
    import tracemalloc

    from bench.selection import build

    path = tmp_path / "items.db"
    build(path, 100_000)  # 99,000 failed, every 100th pending
    sel = Selection().mark_range(0, 9).add_view(ItemFilter(status="failed")).unmark(1).unmark(2)
    tracemalloc.start()
    t0 = time.perf_counter()
    with ItemQueries(path) as view:
        assert view.count_selected(sel) == 99_000 + 1 - 2  # seq 0 (pending) marked, 1 and 2 unmarked
        assert view.sample_selected(sel, 3) == [(0, "item-0000000"), (3, "item-0000003"), (4, "item-0000004")]
        assert view.selected_among(sel, range(0, 200, 50)) == {0, 50, 150}
    store = ItemStore.open(path, durable=False)
    try:
        assert store.skip_selected(sel, at="t") == {"pending": 1, "failed": 98_998}
    finally:
        store.close()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * 2**20, peak  # Python's own allocations: nothing per item
    assert seconds < 60, seconds  # ~1 s on a loaded 2-core machine


def test_a_retried_item_loses_its_old_place_at_the_front(store_path: Path) -> None:
    """An item prioritized, then run and failed, then retried goes back in seq order: its place
    in the run-first queue is gone (else every later retry would jump the queue)."""
    store = ItemStore.open(store_path, durable=False)
    try:
        assert store.prioritize(Selection().mark(6).mark(7)) == ({}, 2)
        store.conn.execute("UPDATE items SET status='failed', error_type='x', error_group='x' WHERE seq IN (6, 7)")
        assert store.retry_failed(seqs=[6]) == [6]  # resume --retry-failed's way
        assert store.retry_selected(Selection().mark(7)) == {"failed": 1}  # the CLI's and the TUI's
        assert store.next_first(None, 10) == [] and not store.has_first()
    finally:
        store.close()


def test_selected_seqs_pins_what_an_action_changes_up_to_a_limit(store_path: Path) -> None:
    every = Selection.of(ItemFilter())
    with ItemQueries(store_path) as view:
        assert view.selected_seqs(every, ("failed",), retriable=True, limit=5) == [1, 2, 3, 5, 8]
        assert view.selected_seqs(every, ("failed",), retriable=True, limit=4) is None  # one past the limit
        assert view.selected_seqs(every, ("complete", "failed"), retriable=False, limit=100) == [0, 1, 2, 3, 4, 5, 8]
    pinned = Selection.of_seqs([8, 1, 2, 3, 5])
    assert pinned.views == () and pinned.ranges == ((1, 3), (5, 5), (8, 8))
    assert selected(store_path, pinned) == [1, 2, 3, 5, 8]


def test_a_snapshot_reads_one_state_while_the_store_is_written(store_path: Path) -> None:
    """The confirm dialog's counts and the items it pins come from one read transaction."""
    failed = Selection.of(ItemFilter(status="failed"))
    with ItemQueries(store_path) as view:
        with view.snapshot():
            assert view.count_selected(failed) == 5
            writer = ItemStore.open(store_path, durable=False)
            try:
                with writer.transaction() as conn:
                    conn.execute("UPDATE items SET status='failed' WHERE seq = 6")
            finally:
                writer.close()
            assert view.count_selected(failed) == 5  # the write is not seen inside
            assert view.selected_seqs(failed, ("failed",), retriable=True, limit=10) == [1, 2, 3, 5, 8]
        assert view.count_selected(failed) == 6  # and is after


def test_add_seqs_marks_runs_as_ranges_and_takes_them_out_of_the_exclusions() -> None:
    sel = Selection.of(ItemFilter(status="failed")).unmark(3).unmark(9)
    assert sel.excluded == ((3, 3), (9, 9))
    pinned = sel.add_seqs([4, 3, 5, 12])
    assert pinned.views == sel.views
    assert pinned.ranges == ((3, 5), (12, 12))
    assert pinned.excluded == ((9, 9),)  # 3 is marked again; 9 stays unmarked
    assert Selection().add_seqs([]).is_empty


def test_a_filter_copied_from_the_screen_finds_a_message_with_control_characters(tmp_path: Path) -> None:
    """Every view shows an ESC as ``\\x1b``; the filter typed from what it shows (``--match``,
    the dashboard's /) finds the message holding the ESC itself, and a message holding the text
    ``\\x1b`` (a backslash and three letters) is still found by that text."""
    path = tmp_path / "items.db"
    store = ItemStore.create(path, durable=False)
    messages = {1: "\x1b[31mred\x1b[0m boom", 2: "a path \\x1b[31m as text", 3: "red boom"}
    try:
        store.enqueue([(f"k{i}", f'"k{i}"', "line", "pending", *(None,) * 6) for i in range(4)])
        with store.transaction() as conn:
            for seq, msg in messages.items():
                row = (
                    1,
                    "exit 1",
                    "item",
                    msg,
                    "",
                    normalize_message(msg),
                    "2026-01-01T00:00:01",
                    0.1,
                    "2026-01-01T00:00:01",
                    seq,
                )
                conn.execute(bulk_mod.FAILED.sql, row)
    finally:
        store.close()
    shown = clean(messages[1])
    assert shown.startswith("\\x1b[31mred")
    assert selected(path, Selection.of(ItemFilter(match="\\x1b[31mred"))) == [1]
    assert selected(path, Selection.of(ItemFilter(match=shown))) == [1]
    assert selected(path, Selection.of(ItemFilter(text="exit 1: \\x1b[31m"))) == [1]
    assert selected(path, Selection.of(ItemFilter(match="path \\x1b"))) == [2]  # the text, as typed
    assert selected(path, Selection.of(ItemFilter(match="\\x1b"))) == [1, 2]
    with ItemQueries(path) as view:
        assert view.count(ItemFilter(match=shown)) == 1
