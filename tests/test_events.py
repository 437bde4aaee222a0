"""--on-event: halt, stall, new-group and finish reach their hooks as JSON on stdin, off the
engine's hot path, never fatal (engine/events.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine import eta
from batchtui.engine.events import StallWatch

from .conftest import assert_gone_soon, only_batch, read_json, read_jsonl

# a* items fail one way (the message differs only in a number: one group), b* another; the rest pass.
FAILING = 'case {} in a*) echo "disk A broken at {}" >&2; exit 3;; b*) echo "no route" >&2; exit 4;; *) true;; esac'


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_halting_batch_tells_new_groups_once_each_the_halt_and_the_finish(
    tmp_path: Path, out_dir: Path, invoke_cli: Any
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a1\nb1\na2\nb2\na3\na4\nok1\nok2\n")
    seen, finish_only, report_file = tmp_path / "events.out", tmp_path / "finish.out", tmp_path / "report.json"
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--workers",
            "1",
            "--cmd",
            FAILING,
            "--max-failure-rate",
            "0.5",
            "--min-items",
            "5",
            "--on-event",
            "halt,new-group,finish",
            f"cat >> {seen}",
            "--on-event",
            "finish",
            f"cat > {finish_only}",
            "--on-finish",
            f"cat > {report_file}",
        ]
    )
    assert proc.returncode == 3, proc.stderr
    batch = only_batch(out_dir)
    events = _events(seen)
    assert [e["kind"] for e in events] == ["new-group", "new-group", "halt", "finish"]
    for e in events:
        assert e["batch_id"] == batch.name and e["batch_dir"] == str(batch) and e["time"]
    # One event per group, not per failure (a1..a4 fail alike): its id, type, message, count, a sample.
    groups = {e["group"]["type"]: e["group"] for e in events[:2]}
    errors = {g["error_type"]: g for g in read_json_list(invoke_cli(["errors", batch.name, "--json"]).stdout)}
    assert groups["exit 3"] == {
        "id": errors["exit 3"]["id"],
        "type": "exit 3",
        "category": "item",
        "message": "disk A broken at a<n>",
        "count": 1,
        "sample_key": "a1",
        "sample_seq": 0,
        "sample_message": "disk A broken at a1",
    }
    assert groups["exit 4"]["id"] == errors["exit 4"]["id"] and groups["exit 4"]["sample_key"] == "b1"
    assert events[2]["reason"] == read_json(batch / "manifest.json")["halt_reason"]
    assert "failure rate" in events[2]["reason"]
    assert events[3]["state"] == "halted"
    assert events[3]["report"] == read_json(batch / "report.json")
    # Every hook that hears of an event gets it; --on-finish keeps getting report.json itself.
    assert _events(finish_only) == [events[3]]
    assert json.loads(report_file.read_text()) == read_json(batch / "report.json")
    log = read_jsonl(batch / "events.jsonl")
    assert [(line["kind"], line["hook"], line["outcome"]) for line in log] == [
        ("new-group", "--on-event halt,new-group,finish", "exit 0"),
        ("new-group", "--on-event halt,new-group,finish", "exit 0"),
        ("halt", "--on-event halt,new-group,finish", "exit 0"),
        ("finish", "--on-event halt,new-group,finish", "exit 0"),
        ("finish", "--on-event finish", "exit 0"),
        ("finish", "--on-finish", "exit 0"),
    ]


def read_json_list(text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    assert isinstance(data, list)
    return data


def test_a_resumed_batch_keeps_its_hooks_and_tells_only_groups_it_had_not_seen(
    tmp_path: Path, out_dir: Path, invoke_cli: Any
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a1\nb1\na2\nc1\nok1\n")
    command = FAILING.replace("*) true;;", 'c*) echo "c broke" >&2; exit 5;; *) true;;')
    seen = tmp_path / "events.out"
    hook = ["--on-event", "new-group,finish", f"cat >> {seen}"]
    halts = ["--workers", "1", "--cmd", command, "--max-failure-rate", "0.5", "--min-items", "2"]
    first = invoke_cli(["run", str(items), *halts, *hook])
    assert first.returncode == 3, first.stderr
    batch = only_batch(out_dir)
    shown = invoke_cli(["show", batch.name])
    assert f"  Hooks:     new-group,finish: cat >> {seen}\n" in shown.stdout, shown.stdout
    assert "each killed after 60 s (--hook-timeout)" in shown.stdout
    seen.write_text("")
    again = invoke_cli(["resume", batch.name, "--max-failure-rate", "1"])  # the stored hook stays
    assert again.returncode == 1, again.stderr
    events = _events(seen)
    # a2 fails as a1 did, in a group the batch had: only c1's group is new.
    assert [(e["kind"], e.get("group", {}).get("sample_key")) for e in events] == [
        ("new-group", "c1"),
        ("finish", None),
    ]


def test_a_hook_that_hangs_is_killed_and_the_batch_ends_normally(
    tmp_path: Path, out_dir: Path, invoke_cli: Any
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("x\ny\n")
    pid_file = tmp_path / "hook.pid"
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--cmd",
            "true",
            "--hook-timeout",
            "0.5",
            "--on-event",
            "finish",
            f"cat > /dev/null; sleep 300 & echo $! > {pid_file}; wait",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    batch = only_batch(out_dir)
    assert read_json(batch / "manifest.json")["state"] == "finished"
    assert_gone_soon(int(pid_file.read_text()))  # the hook's whole process group was killed
    live = read_json(batch / "live_progress.json")
    assert any("--on-event finish killed after 0.5 s" in w for w in live["warnings"]), live["warnings"]  # type: ignore[union-attr]
    (line,) = read_jsonl(batch / "events.jsonl")
    assert line["outcome"] == "killed after 0.5 s (--hook-timeout)"


def test_a_stall_is_told_once(tmp_path: Path, out_dir: Path, invoke_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stall is engine/eta.py's (what every view shows): nothing finished for its floor while
    # an item runs. The item waits for a file the stall hook makes, so the run goes on after it.
    monkeypatch.setattr(eta, "STALL_FLOOR_S", 0.5)
    items = tmp_path / "items.txt"
    items.write_text("one\ntwo\n")  # one ends at once (a usual duration), two waits
    go, seen = tmp_path / "go", tmp_path / "stall.out"
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--cmd",
            f"[ {{}} = one ] && exit 0; for i in $(seq 400); do [ -e {go} ] && exit 0; sleep 0.05; done; exit 1",
            "--on-event",
            "stall",
            f"cat >> {seen}; touch {go}",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    (event,) = _events(seen)
    assert event["kind"] == "stall" and event["stalled_s"] >= 0.5 and event["running"] == 1


def test_stall_watch_tells_each_stall_once() -> None:
    watch = StallWatch()
    assert [watch.check(s) for s in (None, 12.0, 13.0, 14.0, None, 11.0, None)] == [
        False,
        True,
        False,
        False,
        False,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--on-event", "explode", "true"], "unknown event 'explode'"),
        (["--on-event", "halt", "  "], "the command is empty"),
        (["--hook-timeout", "0"], "must be more than 0"),
        (["--hook-timeout", "7200"], "more than the maximum"),
    ],
)
def test_bad_hooks_are_usage_errors(tmp_path: Path, invoke_cli: Any, args: list[str], message: str) -> None:
    items = tmp_path / "items.txt"
    items.write_text("x\n")
    proc = invoke_cli(["run", str(items), "--cmd", "true", *args])
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_events_jsonl_is_never_written_through_a_link(tmp_path: Path, out_dir: Path, invoke_cli: Any) -> None:
    items = tmp_path / "items.txt"
    items.write_text("bad1\nbad2\nbad3\n")
    first = invoke_cli(["run", str(items), "--cmd", "false", "--max-failure-rate", "0.1", "--min-items", "1"])
    assert first.returncode == 3, first.stderr
    batch = only_batch(out_dir)
    outside = tmp_path / "outside.txt"
    (batch / "events.jsonl").symlink_to(outside)
    again = invoke_cli(["resume", batch.name, "--on-event", "finish", "true"])
    assert again.returncode == 2 and "events.jsonl is a symbolic link" in again.stderr, again.stderr
    assert not outside.exists()
