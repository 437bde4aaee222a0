"""Failure policy with real failing commands and callables (DESIGN section 5)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson
import psutil
import pytest

from .conftest import CLI, cli_env, only_batch, read_json, read_jsonl, wait_until

PROCS = Path(__file__).with_name("procs.py")


def _items(tmp_path: Path, n: int, fmt: str = "item-{i}") -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(fmt.format(i=i) + "\n" for i in range(n)))
    return path


def _db(batch: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_retry_counts_and_backoff(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 12)
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--call",
            f"{PROCS}:flaky",
            "--executor",
            "thread",
            "-j",
            "2",
            "--backoff",
            "0.3",
            "--backoff-max",
            "1",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    batch = only_batch(out_dir)
    db = _db(batch)
    for seq in range(12):
        rows = db.execute(
            "SELECT attempt, status, started_at, finished_at, error_type, error_category"
            " FROM attempts WHERE seq=? ORDER BY attempt",
            (seq,),
        ).fetchall()
        if seq % 3 == 0:
            assert [(r[0], r[1]) for r in rows] == [(1, "failed"), (2, "complete")]
            assert rows[0][4:] == ("ConnectionError", "transient")
            gap = _ts(rows[1][2]) - _ts(rows[0][3])
            assert 0.28 <= gap <= 1.5, gap  # exponential backoff with jitter: 0.3 s + up to 0.3 s
        else:
            assert [(r[0], r[1]) for r in rows] == [(1, "complete")]
    assert db.execute("SELECT MAX(attempts) FROM items").fetchone()[0] == 2
    results = read_jsonl(batch / "results.jsonl")
    assert {r["seq"]: r["attempts"] for r in results}[3] == 2


def test_transient_gives_up_after_max_attempts(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 3)
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--call",
            f"{PROCS}:always_transient",
            "--executor",
            "thread",
            "--max-attempts",
            "4",
            "--backoff",
            "0.01",
            "--backoff-max",
            "0.05",
        ]
    )
    assert proc.returncode == 1
    db = _db(only_batch(out_dir))
    assert db.execute("SELECT DISTINCT status, attempts, error_type, error_category FROM items").fetchall() == [
        ("failed", 4, "TimeoutError", "transient")
    ]
    assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 12


def test_classification_of_each_kind(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = tmp_path / "codes.txt"
    items.write_text("0\n3\n75\n9\n")
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--cmd",
            'echo "stderr of {}" >&2; exit {}',
            "--retry-exit-codes",
            "9",
            "--max-attempts",
            "2",
            "--backoff",
            "0",
        ]
    )
    assert proc.returncode == 1, proc.stderr
    db = _db(only_batch(out_dir))
    got = {
        row[0]: row[1:]
        for row in db.execute("SELECT data, status, attempts, error_type, error_category, error_message FROM items")
    }
    assert got['"0"'][0] == "complete"
    assert got['"3"'] == ("failed", 1, "exit 3", "item", "stderr of 3")  # message: stderr's last line
    assert got['"75"'] == ("failed", 2, "exit 75", "transient", "stderr of 75")  # EX_TEMPFAIL retried
    assert got['"9"'] == ("failed", 2, "exit 9", "transient", "stderr of 9")  # --retry-exit-codes
    detail = db.execute("SELECT error_detail FROM items WHERE data='\"3\"'").fetchone()[0]
    assert "stderr of 3" in detail

    items2 = tmp_path / "kinds.txt"
    items2.write_text("value\nconn\nok\n")
    out2 = tmp_path / "out2"
    proc = invoke_cli(
        [
            "run",
            str(items2),
            "--call",
            f"{PROCS}:classify_me",
            "--executor",
            "thread",
            "-o",
            str(out2),
            "--max-attempts",
            "2",
            "--backoff",
            "0",
        ]
    )
    assert proc.returncode == 1
    db2 = _db(only_batch(out2))
    got2 = {row[0]: row[1:] for row in db2.execute("SELECT data, status, error_type, error_category FROM items")}
    assert got2['"value"'] == ("failed", "ValueError", "item")
    assert got2['"conn"'] == ("failed", "ConnectionError", "transient")
    tb = db2.execute("SELECT error_detail FROM items WHERE data='\"value\"'").fetchone()[0]
    assert "Traceback" in tb and "bad value" in tb


def test_fatal_exit_code_and_fatal_exception_halt_resumably(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 30, "{i}")
    proc = invoke_cli(["run", str(items), "--cmd", "test {} -ne 5 || exit 42", "--fatal-exit-codes", "42", "-j", "1"])
    assert proc.returncode == 3, proc.stderr
    batch = only_batch(out_dir)
    m = read_json(batch / "manifest.json")
    assert m["state"] == "halted" and "fatal error on item 5" in str(m["halt_reason"])
    db = _db(batch)
    # The fatal item goes back to pending (its cause is outside it) and is redone on resume.
    assert db.execute("SELECT status, error_type, error_category FROM items WHERE seq=5").fetchone() == (
        "pending",
        "exit 42",
        "fatal",
    )
    report = read_json(batch / "report.json")
    assert report["state"] == "halted" and report["resume_command"]

    items2 = tmp_path / "kinds.txt"
    items2.write_text("ok\nfatal\nok2\n")
    out2 = tmp_path / "out2"
    proc = invoke_cli(
        ["run", str(items2), "--call", f"{PROCS}:classify_me", "--executor", "thread", "-j", "1", "-o", str(out2)]
    )
    assert proc.returncode == 3
    m2 = read_json(only_batch(out2) / "manifest.json")
    assert "Fatal: api key expired" in str(m2["halt_reason"])


def test_failure_rate_halt_then_resume_carries_on(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 200)
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--call",
            f"{PROCS}:half_fail",
            "--executor",
            "thread",
            "-j",
            "2",
            "--max-failure-rate",
            "0.2",
            "--min-items",
            "20",
        ]
    )
    assert proc.returncode == 3, proc.stderr
    batch = only_batch(out_dir)
    m = read_json(batch / "manifest.json")
    assert m["state"] == "halted" and "failure rate" in str(m["halt_reason"])
    totals = m["totals"]
    assert totals["pending"] > 100  # it stopped early  # type: ignore[index]
    live = read_json(batch / "live_progress.json")
    assert live["state"] == "halted" and live["counts"] == {**totals, "running": 0, "queued": 0, "retrying": 0}  # type: ignore[dict-item]

    again = invoke_cli(["resume", batch.name, "--max-failure-rate", "0.9"])
    assert again.returncode == 1, again.stderr
    m = read_json(batch / "manifest.json")
    assert m["state"] == "finished" and m["totals"]["failed"] == 100  # type: ignore[index]
    assert m["history"][-1]["overrides"] == {"max_failure_rate": 0.9}  # type: ignore[index]


def test_budget_is_spent_to_the_cap_and_never_past_it(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """Items of cost 1 with --max-cost 10 and 4 workers: exactly 10 run, whatever the timing (the
    spend committed plus every item in flight at the largest cost seen plus the next must fit)."""
    items = _items(tmp_path, 100)
    proc = invoke_cli(
        ["run", str(items), "--call", f"{PROCS}:costly", "--executor", "thread", "-j", "4", "--max-cost", "10"]
    )
    assert proc.returncode == 3, proc.stderr
    batch = only_batch(out_dir)
    spent = sum(float(r["result"]["cost"]) for r in read_jsonl(batch / "results.jsonl"))  # type: ignore[index]
    assert spent == 10
    assert read_json(batch / "manifest.json")["totals"]["complete"] == 10  # type: ignore[index]
    m = read_json(batch / "manifest.json")
    assert "--max-cost" in str(m["halt_reason"])
    assert read_json(batch / "report.json")["cost_spent"] == spent
    again = invoke_cli(["resume", batch.name, "--max-cost", "20"])
    assert again.returncode == 3
    spent2 = sum(float(r["result"]["cost"]) for r in read_jsonl(batch / "results.jsonl"))  # type: ignore[index]
    assert spent2 == 20


def test_rate_within_ten_percent(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 41)
    proc = invoke_cli(
        ["run", str(items), "--call", f"{PROCS}:noop", "--executor", "thread", "-j", "4", "--rate", "20/s"]
    )
    assert proc.returncode == 0, proc.stderr
    db = _db(only_batch(out_dir))
    starts = sorted(_ts(r[0]) for r in db.execute("SELECT started_at FROM attempts"))
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    assert rate <= 22, rate  # never over the rate (the promise)
    # Not under it by a wrong bucket either: at 20/s most starts come 50 ms apart; a bucket at
    # half the rate spaces every one 100 ms apart. Judged on the quicker half of the gaps, not
    # on the whole run's rate: a loaded machine delays some starts (the rate measured 11.4/s
    # beside an apt-get install, and 18/s at a load of 7), not most of them.
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    assert gaps[len(gaps) // 2] < 0.075, gaps


def test_timeout_kills_the_whole_group(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 2)
    marker = "31.4159"
    t0 = time.monotonic()
    proc = invoke_cli(
        [
            "run",
            str(items),
            "--cmd",
            f"sleep {marker} & sleep {marker}; true",
            "--timeout",
            "0.5",
            "--max-attempts",
            "2",
            "--backoff",
            "0",
        ]
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 10

    def leftovers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]

    wait_until(lambda: not leftovers(), 5, "every process of the timed-out groups gone")
    db = _db(only_batch(out_dir))
    assert db.execute("SELECT DISTINCT status, attempts, error_type, error_category FROM items").fetchall() == [
        ("failed", 2, "timeout", "timeout")
    ]


def test_timeout_of_a_python_item_in_a_process_worker(tmp_path: Path, out_dir: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 2)
    proc = run_cli(
        [
            "run",
            str(items),
            "--call",
            f"{PROCS}:sleepy",
            "--executor",
            "process",
            "-j",
            "2",
            "--timeout",
            "1",
            "--max-attempts",
            "1",
        ],
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    db = _db(only_batch(out_dir))
    assert db.execute("SELECT DISTINCT status, error_type FROM items").fetchall() == [("failed", "timeout")]
    # Each attempt is recorded with the time it ran until it was killed, as on the thread
    # executor: not 0.0 s, which read as an attempt that never ran.
    durations = [d for (d,) in db.execute("SELECT duration_s FROM attempts")]
    assert len(durations) == 2 and all(1.0 <= d < 30 for d in durations), durations


def test_a_python_item_killed_with_its_process_is_recorded_with_the_time_it_ran(
    tmp_path: Path, out_dir: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    """A call that does not unwind when its timeout asks it to dies with its worker process
    (KILL_ESCALATE_S later): its attempt still says how long it ran, not 0.0 s."""
    items = _items(tmp_path, 1)
    args = ["run", str(items), "--call", f"{PROCS}:stubborn", "--executor", "process", "-j", "1"]
    proc = run_cli([*args, "--timeout", "1", "--max-attempts", "1"], timeout=60)
    assert proc.returncode == 1, proc.stderr
    db = _db(only_batch(out_dir))
    rows = db.execute("SELECT status, error_type, duration_s FROM attempts").fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("failed", "timeout"), rows
    assert 1.0 <= rows[0][2] < 30, rows  # killed at the timeout and the escalation after it


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_timeout_counts_running_time_not_time_in_the_queue(
    executor: str, tmp_path: Path, out_dir: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    """Ten 0.6 s items on two workers, one of them hung: the engine keeps more items in flight
    than it has workers, so the last ones wait seconds before they start. Only the hung item
    may time out; a wait in the queue is not running time."""
    items = _items(tmp_path, 10)
    args = ["run", str(items), "--call", f"{PROCS}:nap_or_hang", "--executor", executor, "-j", "2"]
    proc = run_cli([*args, "--timeout", "2", "--max-attempts", "1"], timeout=90)
    assert proc.returncode == 1, proc.stderr
    db = _db(only_batch(out_dir))
    failed = db.execute("SELECT seq, error_type FROM items WHERE status != 'complete'").fetchall()
    assert failed == [(3, "timeout")]
    assert db.execute("SELECT count(*) FROM items WHERE status = 'complete'").fetchone() == (9,)


#: Item item-0 holds 300 MB for a minute (until the batch is stopped); the others, and item-0
#: once resumed with its hold file gone, end at once.
HOG = f'test {{}} != item-0 || ! test -e hold || {sys.executable} -c "b = b\\"x\\" * (300 << 20); import time; time.sleep(60)"'


def test_memory_guard_holds_dispatch(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 20)
    (tmp_path / "hold").touch()
    env = cli_env(out_dir)
    engine = subprocess.Popen(
        # A limit under the engine's own use is refused now (--memory-limit-mb under 128): the
        # first item holds 300 MB until it is stopped, over a limit of 200.
        [*CLI, "run", str(items), "--cmd", HOG, "--workers", "1", "--memory-limit-mb", "200", "--headless"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: out_dir.exists() and any(out_dir.iterdir()), 30, "the batch dir")
        wait_until((only_batch(out_dir) / "live_progress.json").exists, 30, "live_progress.json")
        batch = only_batch(out_dir)
        wait_until(
            lambda: any("memory-limit-mb" in w for w in read_json(batch / "live_progress.json")["warnings"]),  # type: ignore[union-attr]
            30,
            "the memory hold's warning",
        )
        live = read_json(batch / "live_progress.json")
        assert live["counts"]["complete"] == 0  # type: ignore[index]
        assert live["memory"]["rss_mb"] > 1 and live["memory"]["system_available_mb"] > 0  # type: ignore[index]
        stop = invoke_cli(["stop", batch.name])
        assert stop.returncode == 0
        assert engine.wait(30) == 130
    finally:
        if engine.poll() is None:
            engine.kill()
    (tmp_path / "hold").unlink()
    again = invoke_cli(["resume", batch.name, "--memory-limit-mb", "4000"])
    assert again.returncode == 0, again.stderr


def test_chunked_callable(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 23)
    proc = invoke_cli(
        ["run", str(items), "--call", f"{PROCS}:chunk_double", "--executor", "thread", "--chunk-size", "5"]
    )
    assert proc.returncode == 0, proc.stderr
    results = read_jsonl(only_batch(out_dir) / "results.jsonl")
    assert sorted(r["seq"] for r in results) == list(range(23))
    assert {r["result"]["n"] for r in results} <= {5, 3, 4, 2, 1}  # type: ignore[index]
    assert max(r["result"]["n"] for r in results) == 5  # type: ignore[index]


def test_on_finish_hook_gets_the_report(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    items = _items(tmp_path, 3)
    hook_out = tmp_path / "hook.json"
    proc = invoke_cli(["run", str(items), "--cmd", "true", "--on-finish", f"cat > {hook_out}"])
    assert proc.returncode == 0
    report = json.loads(hook_out.read_text())
    assert report["state"] == "finished" and report["totals"]["complete"] == 3
    failing = invoke_cli(
        ["run", str(_items(tmp_path, 2, "x{i}")), "--cmd", "true", "--on-finish", "exit 9", "-o", str(tmp_path / "o2")]
    )
    assert failing.returncode == 0  # a failing hook is logged, never fatal
    live = orjson.loads((only_batch(tmp_path / "o2") / "live_progress.json").read_bytes())
    assert any("--on-finish exited 9" in w for w in live["warnings"])


def test_check_catches_bad_module_and_missing_csv_field(tmp_path: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "people.csv"
    data.write_text("id,name\n1,ann\n")
    bad = invoke_cli(["check", str(data), "--call", "no_such_module_q:f"])
    assert bad.returncode == 2 and "FIX_ISSUES" in bad.stdout and "cannot import no_such_module_q" in bad.stdout
    broken = tmp_path / "broken.py"
    broken.write_text("import json\nimport not_installed_anywhere\ndef f(item):\n    return 1\n")
    bad2 = invoke_cli(["check", str(data), "--call", f"{broken}:f"])
    assert bad2.returncode == 2 and "not_installed_anywhere" in bad2.stdout
    field = invoke_cli(["check", str(data), "--cmd", "echo {name} {email}"])
    assert field.returncode == 2 and "email" in field.stdout and "FIX_ISSUES" in field.stdout
    ok = invoke_cli(["check", str(data), "--cmd", "echo {name}", "--json"])
    assert ok.returncode == 0 and json.loads(ok.stdout)["recommendation"] == "PROCEED"
    refused = invoke_cli(["run", str(data), "--cmd", "echo {email}"])
    assert refused.returncode == 2 and "FIX_ISSUES" in refused.stderr
    assert not (tmp_path / "batch_output").exists() or not any((tmp_path / "batch_output").iterdir())


def test_dry_run_reports_problems_per_item(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "docs"
    d.mkdir()
    (d / "good.pdf").write_bytes(b"%PDF-1.7\n...")
    (d / "fake.pdf").write_bytes(b"<html>not a pdf</html>")
    (d / "empty.pdf").write_bytes(b"")
    (d / "big.pdf").write_bytes(b"%PDF" + b"0" * 2_000_000)
    (d / "notes.txt").write_text("hi")
    proc = invoke_cli(
        ["run", str(d), "--cmd", "cat {path}", "--dry-run", "--max-size-mb", "1", "--extensions", ".pdf", "--json"]
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    problems = {Path(p["key"]).name: p["problem"] for p in report["problems"]}
    assert report["items"] == 5 and report["problem_count"] == 4
    assert "not PDF" in problems["fake.pdf"] and "empty" in problems["empty.pdf"]
    assert "over the 1 MB limit" in problems["big.pdf"] and ".txt not in .pdf" in problems["notes.txt"]
    assert "good.pdf" not in problems
    assert not out_dir.exists()  # a dry run makes no batch


def test_failure_rate_limit_is_exclusive_and_checked_from_min_items() -> None:
    """The boundaries, exactly: a rate equal to --max-failure-rate goes on (the halt is for a rate
    over it), and the check starts at the --min-items-th finished item, not one before or after."""
    from batchtui.engine.config import BatchConfig
    from batchtui.engine.policy import HaltCheck

    check = HaltCheck(BatchConfig(max_failure_rate=0.2, min_items=10))
    assert check.failure_rate(complete=8, failed=2) is None  # 20% of 10: at the limit, not over it
    assert check.failure_rate(complete=7, failed=3) == "failure rate 30% over --max-failure-rate 20% after 10 items"
    assert check.failure_rate(complete=0, failed=9) is None  # 9 finished: before --min-items
    assert check.failure_rate(complete=0, failed=10) is not None  # the 10th: checked
    assert check.failure_rate(complete=80, failed=20) is None
    assert check.failure_rate(complete=79, failed=21) is not None
    zero = HaltCheck(BatchConfig(max_failure_rate=0.0, min_items=1))
    assert zero.failure_rate(complete=5, failed=0) is None  # 0 allows no failure, and halts on none
    assert zero.failure_rate(complete=5, failed=1) is not None


@pytest.mark.parametrize(
    ("lines", "code", "halt"),
    [
        # 0, 1/2, 1/3, 2/4, ...: exactly at 50% again and again, never over it: the batch runs to its end.
        (["ok", "fail"] * 6, 1, None),
        # 1/1, 2/2, 2/3: over 50% from the first item, halted at the second (--min-items 2), not the first or third.
        (["fail", "fail", *["ok"] * 10], 3, "failure rate 100% over --max-failure-rate 50% after 2 items"),
    ],
)
def test_failure_rate_boundaries_in_a_real_run(
    tmp_path: Path,
    out_dir: Path,
    invoke_cli,  # type: ignore[no-untyped-def]
    lines: list[str],
    code: int,
    halt: str | None,
) -> None:
    items = tmp_path / "kinds.txt"
    items.write_text("".join(f"{kind}-{i}\n" for i, kind in enumerate(lines)))
    args = ["run", str(items), "--call", f"{PROCS}:fail_marked", "--executor", "thread", "-j", "1"]
    proc = invoke_cli([*args, "--max-failure-rate", "0.5", "--min-items", "2"])
    assert proc.returncode == code, proc.stderr
    m = read_json(only_batch(out_dir) / "manifest.json")
    assert m["halt_reason"] == halt
    if halt is None:
        assert m["state"] == "finished" and m["totals"]["failed"] == 6  # type: ignore[index]
    else:
        assert m["state"] == "halted" and m["totals"]["failed"] == 2 and m["totals"]["complete"] == 0  # type: ignore[index]


def test_a_resume_over_the_failure_rate_already_starts_nothing(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """A batch halted by its failure rate, resumed with the limit unchanged, is over it before
    anything runs: it halts at once (it ran one more item, a paid call perhaps, to halt again
    each time), and says how to go on."""
    log = tmp_path / "runs.log"
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(50)))
    cmd = f"echo {{seq}} >> {log}; if [ {{seq}} -lt 8 ]; then exit 3; fi"
    policy = ["--max-failure-rate", "0.5", "--min-items", "10", "-j", "1", "--headless"]
    assert invoke_cli(["run", str(items), "--cmd", cmd, *policy]).returncode == 3
    ran = log.read_text().split()
    batch = only_batch(out_dir)
    again = invoke_cli(["resume", batch.name, "--headless"])
    assert again.returncode == 3, again.stderr
    assert log.read_text().split() == ran  # nothing started
    said = "nothing started: the batch is over its failure rate already (failure rate 80% over"
    assert said in again.stdout + again.stderr
    m = read_json(batch / "manifest.json")
    assert m["state"] == "halted" and m["totals"]["pending"] == 40  # type: ignore[index]
    onward = invoke_cli(["resume", batch.name, "--headless", "--max-failure-rate", "0.9"])
    assert onward.returncode == 1 and len(log.read_text().split()) == 50  # a higher limit: on to the end


def test_a_failure_rate_that_can_never_be_judged_is_said(tmp_path: Path, out_dir: Path, invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """--min-items over the batch's items: the policy can never halt it, and the run says so
    (in its output and in live_progress.json's warnings, which the dashboard shows) rather than
    watch in silence."""
    items = tmp_path / "kinds.txt"
    items.write_text("".join(f"fail-{i}\n" for i in range(5)))
    args = ["run", str(items), "--call", f"{PROCS}:fail_marked", "--executor", "thread", "-j", "1", "--headless"]
    proc = invoke_cli([*args, "--max-failure-rate", "0.5", "--min-items", "6"])
    assert proc.returncode == 1, proc.stderr
    said = "--max-failure-rate never halts this batch: it is judged from --min-items 6 items on, and the batch has 5"
    assert said in proc.stdout + proc.stderr
    live = read_json(only_batch(out_dir) / "live_progress.json")
    assert any(said in w for w in live["warnings"])  # type: ignore[union-attr]


def test_help_says_the_failure_rate_limit_is_exclusive(invoke_cli) -> None:  # type: ignore[no-untyped-def]
    """--help, the README and the code agree: over the limit halts, equal to it goes on."""
    text = " ".join(invoke_cli(["run", "--help"]).stdout.split())
    assert "Halt once failed/finished is over this (a rate equal to it goes on)." in text
    assert "Checked from the N-th finished item on [20]." in text


def test_a_worker_process_that_dies_is_said_in_its_own_words(tmp_path: Path, out_dir: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """os._exit(3) in a call: the item fails as WorkerLost with the exit, and without the
    ConnectionResetError its pipe's end raised in the engine (noise to the user)."""
    items = _items(tmp_path, 12)  # chunks sent ahead: a worker dies with input unread (a reset)
    args = ["run", str(items), "--call", f"{PROCS}:exits_hard", "--executor", "process", "-j", "2"]
    proc = run_cli([*args, "--max-attempts", "1", "--chunk-size", "1"], timeout=60)
    assert proc.returncode == 1, proc.stderr
    db = _db(only_batch(out_dir))
    rows = db.execute("SELECT DISTINCT status, error_type, error_message FROM items").fetchall()
    assert rows == [("failed", "WorkerLost", "worker process died (exit 3)")], rows


def test_check_of_a_resume_checks_its_flags_and_says_it_would_halt_at_once(
    tmp_path: Path, out_dir: Path, invoke_cli
) -> None:  # type: ignore[no-untyped-def]
    """`check --batch B` checks the config the resume would run with (the stored one and the
    operational flags given: they were parsed, then ignored), and says when that resume would
    halt before anything starts."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(50)))
    cmd = "if [ {seq} -lt 8 ]; then exit 3; fi"
    policy = ["--max-failure-rate", "0.5", "--min-items", "10", "-j", "1", "--headless"]
    assert invoke_cli(["run", str(items), "--cmd", cmd, *policy]).returncode == 3
    batch = only_batch(out_dir).name
    same = invoke_cli(["check", "--batch", batch])
    assert same.returncode == 0, same.stderr
    text = " ".join(same.stdout.split())
    assert "[warn] policy: a resume with these settings halts before anything starts (failure rate 80% over" in text
    assert "fix: raise the failure-rate limit, or retry the failed items" in text
    raised = invoke_cli(["check", "--batch", batch, "--max-failure-rate", "0.9", "--workers", "3"])
    assert raised.returncode == 0, raised.stderr
    assert "policy" not in raised.stdout
    assert "config: 3 workers" in raised.stdout  # the flag given, not the stored 1
    # What a resume cannot take is refused as resume refuses it, not checked and ignored.
    command = invoke_cli(["check", "--batch", batch, "--cmd", "echo {}"])
    assert command.returncode == 2 and "which cannot change --cmd" in command.stderr, command.stderr
    sources = invoke_cli(["check", "--batch", batch, str(items)])
    assert sources.returncode == 2 and "which reads no SOURCES" in sources.stderr, sources.stderr
