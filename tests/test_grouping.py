"""Error groups that hold: one group per cause, however the messages vary per item.

A command whose stderr ends in a random request id, or names the item it failed on, made one
error group per item (36 failures of one cause, 36 groups), and triage by group (``errors``,
``retry --group``, the dashboard's R) fell apart. Here: the normalization's rules, a real run
whose failures carry random ids and item names, and the one-time regrouping of a store grouped
by the earlier rules (on a read-write open, and by ``recover``).
"""

from __future__ import annotations

import json
import random
import sqlite3
import string
from pathlib import Path

import pytest

from batchtui.engine.grouping import GROUPING_VERSION, group_id, normalize_message
from batchtui.engine.store import ItemQueries, ItemStore

from .conftest import only_batch

RNG_ALPHABET = string.ascii_letters + string.digits
URLSAFE = RNG_ALPHABET + "-_"  # secrets.token_urlsafe's


@pytest.mark.parametrize(
    ("message", "item", "normalized"),
    [
        # Random ids: base64, mixed-case request ids, short git hashes, named ids.
        ("bad signature aGVsbG8gd29ybGQ9876abcXYZ+/== at end.", None, "bad signature <token> at end."),
        ("upload rejected: request id req_fqvSQyrEGtiIm", None, "upload rejected: request id <token>"),
        ("commit 1a2b3c4d failed", None, "commit <id> failed"),
        # Hex after an underscore (found over ssh: 1 in 10 of a command's token_<12 hex> split off).
        ("invalid JSON: token_123456df7890", None, "invalid JSON: token_<id>"),
        ("invalid JSON: token_997785c20b99", None, "invalid JSON: token_<id>"),
        ("invalid JSON: token_5f3a9c1d", None, "invalid JSON: token_<id>"),
        ("no change at 20261206", None, "no change at <n>"),
        ("request id req_Ab9xYz-Q1w- at byte 7", None, "request id <token> at byte <n>"),  # urlsafe base64
        ("trace_id=abcDEFghi failed", None, "trace_id=<token> failed"),
        ("token=abc1d2e3f4g5 invalid", None, "token=<token> invalid"),
        ("slashes in Q/1pGPIFGZLhbA/x9Kq", None, "slashes in <token>"),
        # URLs, e-mails, UUIDs, paths, numbers.
        ("GET https://api.example.com/v1/items/abc?id=12 returned 503", None, "GET <url> returned <n>"),
        ("mail to bob.smith@example.org bounced", None, "mail to <email> bounced"),
        ("job 6ba7b812-9dad-11d1-80b4-00c04fd430c8 lost", None, "job <id> lost"),
        ("cannot open /tmp/x/y: no such file", None, "cannot open <path>: no such file"),
        # The item itself: its key, its file name, its stem; a whole word only.
        ("cannot parse a17.json: line 3", "/data/in/a17.json", "cannot parse <item>: line <n>"),
        ("gzip: /data/in/a17.json: unexpected end", "/data/in/a17.json", "gzip: <item>: unexpected end"),
        ("no thumbnail for photo_x7 yet", "/data/in/photo_x7.jpg", "no thumbnail for <item> yet"),
        ("Paris: HTTP 404", "Paris", "<item>: HTTP <n>"),
        ("cannot parse data.txt", "/x/a.txt", "cannot parse data.txt"),  # not inside a longer name
        ("error: not found", "error", "error: not found"),  # a plain word is not folded
        ("exit 17", "17", "exit <n>"),  # a number is a number
        ("row 12345 is bad", "12345", "row <n> is bad"),
    ],
)
def test_variable_parts_fold(message: str, item: str | None, normalized: str) -> None:
    assert normalize_message(message, item) == normalized


@pytest.mark.parametrize(
    "constant",
    [
        "ERR_HTTP2_PROTOCOL_ERROR",
        "ConnectionResetError",
        "getHTTPResponseCode",
        "IsADirectoryError",
        "XMLHttpRequest",
        "some_snake_case_name",
        "org.apache.hadoop.fs.FileSystem",
        "key ABC_DEF",
        "session Main-Branch",
    ],
)
def test_names_and_constants_stay(constant: str) -> None:
    assert "<token>" not in normalize_message(f"failed: {constant} here")


def test_random_ids_make_one_group_and_the_rest_stays_apart() -> None:
    rng = random.Random(22)
    for alphabet, length, most in ((RNG_ALPHABET, 24, 2), (RNG_ALPHABET, 16, 8), (URLSAFE, 16, 8)):
        # of 200: the module's figures, with room
        ids = ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(200)]
        groups = {normalize_message(f"upload rejected: {i} (retry later)") for i in ids}
        assert "upload rejected: <token> (retry later)" in groups
        assert len(groups) - 1 <= most, (length, sorted(groups)[:5])
    assert normalize_message("disk full on /dev/sda1") != normalize_message("permission denied on /dev/sda1")


def test_item_folding_copes_with_every_occurrence_and_odd_keys() -> None:
    assert normalize_message("a17.json vs a17.json.bak and xa17.json", "/in/a17.json") == (
        "<item> vs <item>.bak and xa<n>.json"
    )
    assert normalize_message("failed", "") == "failed"
    long_key = "x" * 600
    assert normalize_message(f"bad {long_key}", long_key) == f"bad {long_key}"[:200]


# -- a real run ---------------------------------------------------------------------------------


def test_a_run_whose_failures_carry_random_ids_and_item_names_has_one_group_per_cause(
    tmp_path: Path, out_dir: Path, invoke_cli
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(6)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(24):  # each .jpg holds a random request id its upload 'returns'
        (src / f"photo_{rng.randrange(10**6)}{i}.jpg").write_text("req_" + "".join(rng.choices(RNG_ALPHABET, k=20)))
    fruit = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "kiwi", "lemon", "mango", "olive", "peach"]
    for name in fruit:  # names that differ in letters: only the item's own name folds them
        (src / f"{name}.csv").write_text("a,b\n")
    cmd = (
        'case {name} in *.jpg) echo "upload rejected: request id $(cat {path}) (retry later)" >&2; exit 3;;'
        ' [a-f]*.csv) echo "parse error in {name}: bad header" >&2; exit 4;; *) echo ok;; esac'
    )
    told = tmp_path / "events.jsonl"
    run = [
        "run",
        str(src),
        "--cmd",
        cmd,
        "--headless",
        "--max-attempts",
        "1",
        "--on-event",
        "new-group",
        f"cat >> {told}",
    ]
    proc = invoke_cli(run)
    assert proc.returncode == 1, proc.stderr
    batch = only_batch(out_dir)
    shown = invoke_cli(["errors", batch.name, "--json"])
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    groups = {(g["error_type"], g["message"]): g["count"] for g in listed}
    assert groups == {
        ("exit 3", "upload rejected: request id <token> (retry later)"): 24,
        ("exit 4", "parse error in <item>: bad header"): 6,
    }
    # The new-group hook heard of each group once, by the id `errors` gives it.
    events = [json.loads(line) for line in told.read_text().splitlines()]
    assert sorted(e["group"]["id"] for e in events) == sorted(g["id"] for g in listed)
    # The group is what triage acts on: one retry by its id takes every upload back.
    gid = group_id("exit 3", "upload rejected: request id <token> (retry later)")
    retried = invoke_cli(["retry", batch.name, "--group", gid])
    assert retried.returncode == 0, retried.stderr
    with ItemQueries(batch / "items.db") as view:
        assert view.counts().pending == 24


# -- regrouping a store grouped by the earlier rules ---------------------------------------------

FAILURES = [
    (0, "/in/a1.json", "cannot parse a1.json: request id req_fqvSQyrEGtiIm"),
    (1, "/in/b22.json", "cannot parse b22.json: request id req_jCkHwitXedBu1th"),
    (2, "/in/c3.json", "disk full"),
]


def _old_store(path: Path) -> None:
    """A store as batchtui wrote it before the grouping version: the three failures grouped by
    the earlier rules (three groups), and no ``grouping`` in its meta."""
    store = ItemStore.create(path)
    try:
        with store.transaction() as conn:
            for seq, key, message in FAILURES:
                conn.execute(
                    "INSERT INTO items(seq, key, data, status, attempts, error_type, error_category,"
                    " error_message, error_group, finished_at) VALUES (?, ?, ?, 'failed', 1, 'exit 1',"
                    " 'item', ?, ?, '2026-12-01T00:00:00Z')",
                    (seq, key, json.dumps(key), message, message),
                )
            conn.execute("DELETE FROM meta WHERE k='grouping'")
    finally:
        store.close()


def _groups(path: Path) -> dict[str, int]:
    with ItemQueries(path) as view:
        return {g.message: g.count for g in view.error_groups(None)}


def test_a_store_grouped_by_the_earlier_rules_is_regrouped_once_on_a_read_write_open(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    _old_store(db)
    assert len(_groups(db)) == 3  # a read-only view changes nothing
    store = ItemStore.open(db)
    try:
        assert store.get_meta("grouping") == GROUPING_VERSION
    finally:
        store.close()
    assert _groups(db) == {"cannot parse <item>: request id <token>": 2, "disk full": 1}
    raw = sqlite3.connect(db)
    try:
        raw.execute("UPDATE items SET error_group='planted' WHERE seq=2")
        raw.commit()
    finally:
        raw.close()
    ItemStore.open(db).close()  # the version is recorded: not regrouped again
    assert "planted" in _groups(db)


def test_a_new_store_records_the_grouping_version(tmp_path: Path) -> None:
    store = ItemStore.create(tmp_path / "items.db")
    try:
        assert store.get_meta("grouping") == GROUPING_VERSION
    finally:
        store.close()


def test_recover_regroups_what_it_salvages(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"item-{i}\n" for i in range(6)))
    cmd = 'echo "rejected {}: request id $(echo {} | sha256sum | cut -c1-6)Zq$(echo {} | cut -c6)xY" >&2; exit 3'
    proc = invoke_cli(["run", str(source), "--cmd", cmd, "--headless", "--max-attempts", "1"])
    assert proc.returncode == 1, proc.stderr
    batch = only_batch(out_dir)
    raw = sqlite3.connect(batch / "items.db")
    try:  # as the earlier rules left them: one group per item
        raw.execute("UPDATE items SET error_group = error_message")
        raw.commit()
    finally:
        raw.close()
    recovered = invoke_cli(["recover", batch.name, "--force", "--json"])
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["salvaged_failed"] == 6
    assert _groups(batch / "items.db") == {"rejected <item>: request id <token>": 6}


def test_a_large_regrouping_says_so_before_it_begins(
    tmp_path: Path, out_dir: Path, invoke_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from batchtui.engine.store import schema

    source = tmp_path / "ids.txt"
    source.write_text("".join(f"item-{i}\n" for i in range(5)))
    proc = invoke_cli(["run", str(source), "--cmd", "echo broken {} >&2; exit 3", "--headless", "--max-attempts", "1"])
    assert proc.returncode == 1, proc.stderr
    batch = only_batch(out_dir)
    raw = sqlite3.connect(batch / "items.db")
    try:  # as an earlier batchtui left it
        raw.execute("UPDATE items SET error_group = error_message")
        raw.execute("DELETE FROM meta WHERE k='grouping'")
        raw.commit()
    finally:
        raw.close()
    monkeypatch.setattr(schema, "REGROUP_SAID", 5)  # a million, in small
    retried = invoke_cli(["retry", batch.name, "--seq", "0"])
    assert retried.returncode == 0, retried.stderr
    assert "regrouping the batch's 5 failed items by this batchtui's error rules (once: about 1s)" in retried.stderr
    again = invoke_cli(["retry", batch.name, "--seq", "1"])  # once: the version is recorded
    assert again.returncode == 0 and "regrouping" not in again.stderr, again.stderr
    assert _groups(batch / "items.db") == {"broken <item>": 3}


# -- families: groups that differ in one word only -------------------------------------------------


def test_families_of_groups_that_differ_in_one_word() -> None:
    from batchtui.engine.grouping import families

    groups = [
        ("exit 3", "something else", 9),
        ("exit 3", "disk quota exceeded on node ALPHA", 5),
        ("exit 3", "disk quota exceeded on node BRAVO", 3),
        ("exit 3", "disk quota exceeded on node CHARLIE", 1),
        ("exit 4", "disk quota exceeded on node DELTA", 1),  # another type: not one of them
        ("exit 3", "upload <token> refused: code QWE", 1),
        ("exit 3", "upload <token> refused: code RTY", 1),
        ("exit 5", "two alike ONE", 1),
        ("exit 5", "two alike TWO", 1),  # two are no family (at least 3)
    ]
    found = families(groups)
    assert [(f.error_type, f.pattern, f.members, f.match) for f in found] == [
        ("exit 3", "disk quota exceeded on node *", [1, 2, 3], "disk quota exceeded on node"),
    ]
    groups.append(("exit 3", "upload <token> refused: code UIO", 1))
    second = families(groups)[1]
    # The words around the one that differs, without a placeholder: what --match can find.
    assert (second.pattern, second.members, second.match) == (
        "upload <token> refused: code *",
        [5, 6, 9],
        "refused: code",
    )
    assert families([("t", "<n> <n> A", 1), ("t", "<n> <n> B", 1), ("t", "<n> <n> C", 1)])[0].match is None


def test_errors_names_a_family_with_a_selection_that_takes_it_whole(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    import shlex

    (tmp_path / "nodes.txt").write_text("alpha\nbravo\ncharlie\ndelta\necho\nfoxtrot\n")
    cmd = (
        'case {} in e*|f*) echo "bad header in input" >&2; exit 4;;'
        ' *) echo "disk quota exceeded on node $(echo {} | tr a-z A-Z)" >&2; exit 3;; esac'
    )
    assert invoke_cli(["run", "nodes.txt", "--cmd", cmd, "--headless", "--max-attempts", "1"]).returncode == 1
    batch = only_batch(out_dir)
    shown = invoke_cli(["errors", batch.name])
    assert shown.returncode == 0, shown.stderr
    assert "4 groups of exit 3 (4 items) differ in one word only: disk quota exceeded on node *" in shown.stdout
    together = [line for line in shown.stdout.splitlines() if line.startswith("  together: ")]
    assert len(together) == 1, shown.stdout
    words = shlex.split(together[0].removeprefix("  together: "))
    assert words[:3] == ["batchtui", "retry", batch.name] and words[-1] == "--dry-run"
    dry = invoke_cli([*words[1:], "--json"])
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["selected"] == 4  # the four nodes, not the bad headers
    listed = json.loads(invoke_cli(["errors", batch.name, "--json"]).stdout)
    assert len(listed) == 5 and all("pattern" not in g for g in listed)  # --json: the groups only
