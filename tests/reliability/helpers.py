"""Shared tools of the reliability suite: run the real CLI, read batch files, check invariants.

The invariants (checked after every engine that ends on its own, and after every resume):

- results.jsonl is valid JSONL: every line parses, the file ends with a newline;
- no item is completed twice: every seq (and key) appears at most once in results.jsonl;
- no item is lost: the store holds every item of the input (seq dense from 0), and the items
  complete in the store are exactly the items with a result line;
- one source of truth: the counts in manifest.json, live_progress.json and report.json equal the
  store's own ``SELECT status, COUNT(*) FROM items GROUP BY status``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil

CLI = [sys.executable, "-m", "batchtui.tui.cli"]
PROCS = Path(__file__).with_name("procs.py")
STATUSES = ("pending", "processing", "complete", "failed", "skipped")


def env_for(out: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_") or k == "BATCHTUI_SPAWNER"}
    env["BATCHTUI_OUTPUT_DIR"] = str(out)
    env.update(extra or {})
    return env


def cli(
    args: Sequence[str],
    *,
    out: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: str | bytes | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``batchtui ARGS`` to its end; stdout and stderr as text."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        timeout=timeout,
        env=env_for(out, env),
        input=data,
        cwd=cwd,
        check=False,
        preexec_fn=preexec_fn,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def cli_many(
    jobs: Sequence[tuple[Sequence[str], Path]], *, cwd: Path, timeout: float = 120
) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent ``batchtui`` commands at once ((args, output dir) each): the
    interpreter start-up, most of a short command's cost, then overlaps."""
    procs = [
        subprocess.Popen(
            [*CLI, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env_for(out),
            cwd=cwd,
        )
        for args, out in jobs
    ]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        done.append(
            subprocess.CompletedProcess(
                proc.args, proc.returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
            )
        )
    return done


def invoke(
    args: Sequence[str],
    *,
    out: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    input: str | bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """As :func:`cli`, in this process (tests/conftest.py: invoke_in_process): for tests about
    what the CLI says and does, not about processes (signals, limits set in the child, kill -9)."""
    from ..conftest import invoke_in_process

    return invoke_in_process(args, out=out, cwd=cwd, env=env, input=input)


def invoke_many(jobs: Sequence[tuple[Sequence[str], Path]], *, cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """As :func:`cli_many`, one after the other in this process."""
    return [invoke(args, out=out, cwd=cwd) for args, out in jobs]


def start(
    args: Sequence[str],
    *,
    out: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    stdout: Any = subprocess.DEVNULL,
    stderr: Any = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start ``batchtui ARGS`` in its own session (so its whole group can be killed), with
    faulthandler on: :func:`wait_or_dump` asks a hung engine for its threads' stacks."""
    return subprocess.Popen(
        [*CLI, *args],
        env=env_for(out, {"PYTHONFAULTHANDLER": "1", **(env or {})}),
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509 - the tests set a umask or RLIMIT_FSIZE in the child; no threads here
    )


def wait_or_dump(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """``proc.wait(timeout)``; past it, the failure holds where the process hung: SIGABRT makes
    faulthandler (on in every process :func:`start` starts) print each thread's stack on its
    stderr, which is read here (when it is a pipe), and the whole group is killed. A hang that
    happened once in a hundred runs said nothing of where the engine was."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.kill(proc.pid, signal.SIGABRT)
    except ProcessLookupError:
        pass
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        err = b""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what it started, and itself if the dump hung
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    text = err.decode(errors="replace") if isinstance(err, bytes) else ""
    raise AssertionError(f"pid {proc.pid} did not end within {timeout:g} s; its threads then:\n{text[-20000:]}")


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """``sig`` to ``proc``'s whole group, then wait for ``proc``; one that does not end within
    60 s fails the test with its threads' stacks (:func:`wait_or_dump`): a SIGTERM'd engine that
    hung once under a loaded suite said only "timed out"."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    wait_or_dump(proc, 60)


def batches(out: Path) -> list[Path]:
    if not out.exists():
        return []
    return sorted(
        p
        for p in out.iterdir()
        if p.is_dir() and ((p / "manifest.json").exists() or (p / "manifest.json.bak").exists())
    )


def only_batch(out: Path) -> Path:
    found = batches(out)
    assert len(found) == 1, found
    return found[0]


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


def exited(pid: int) -> Callable[[], bool]:
    """A predicate: process ``pid`` (not necessarily our child) has ended."""

    def check() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return check


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]


# -- reading batch files -----------------------------------------------------------------------


def strict_jsonl(path: Path) -> list[dict[str, Any]]:
    """results.jsonl as a list; fails unless every line parses and the file ends with a newline."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), f"{path.name} does not end with a newline: {data[-120:]!r}"
    out = []
    for n, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{path.name} line {n} is not JSON ({exc}): {line[:200]!r}") from None
        assert isinstance(obj, dict), f"{path.name} line {n} is not an object"
        out.append(obj)
    return out


def read_json(path: Path) -> dict[str, Any]:
    obj = orjson.loads(path.read_bytes())
    assert isinstance(obj, dict)
    return obj


def db(batch: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)


def store_counts(batch: Path) -> dict[str, int]:
    """The store's own counts: ``SELECT status, COUNT(*) FROM items GROUP BY status``, plus total."""
    conn = db(batch)
    try:
        rows = dict(conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())
    finally:
        conn.close()
    assert set(rows) <= set(STATUSES), rows
    counts = {s: int(rows.get(s, 0)) for s in STATUSES}
    counts["total"] = sum(counts.values())
    return counts


def store_items(batch: Path) -> dict[int, tuple[str, str]]:
    """seq -> (key, status)."""
    conn = db(batch)
    try:
        return {int(s): (k, st) for s, k, st in conn.execute("SELECT seq, key, status FROM items")}
    finally:
        conn.close()


def error_types(batch: Path, seqs: Sequence[int] | None = None) -> dict[int, list[str | None]]:
    """seq -> error types of its attempts, in order."""
    conn = db(batch)
    try:
        out: dict[int, list[str | None]] = {}
        for seq, etype in conn.execute("SELECT seq, error_type FROM attempts ORDER BY seq, attempt"):
            if seqs is None or seq in seqs:
                out.setdefault(int(seq), []).append(etype)
        return out
    finally:
        conn.close()


def _counts_of(obj: dict[str, Any]) -> dict[str, int]:
    return {k: int(obj[k]) for k in (*STATUSES, "total")}


def assert_invariants(
    batch: Path,
    *,
    n_items: int | None = None,
    state: str | set[str] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Check every invariant of the module doc on ``batch`` (no engine may be running)."""
    results = strict_jsonl(batch / "results.jsonl")
    seqs = [int(r["seq"]) for r in results]
    dup = sorted({s for s in seqs if seqs.count(s) > 1}) if len(seqs) != len(set(seqs)) else []
    assert not dup, f"items completed twice in results.jsonl: {dup[:20]}"
    keys = [r["key"] for r in results]
    assert len(keys) == len(set(keys)), "a key appears twice in results.jsonl"
    for r in results:
        assert set(r) >= {"seq", "key", "result", "attempts", "duration_s", "finished_at"}, r

    counts = store_counts(batch)
    items = store_items(batch)
    if n_items is not None:
        assert counts["total"] == n_items, f"items lost or added: store has {counts['total']}, input {n_items}"
        assert sorted(items) == list(range(n_items)), "seqs are not 0..n-1"
    complete = {s for s, (_k, st) in items.items() if st == "complete"}
    assert set(seqs) == complete, (
        f"complete in the store but no result line: {sorted(complete - set(seqs))[:20]}; "
        f"result line but not complete: {sorted(set(seqs) - complete)[:20]}"
    )
    for r in results:
        assert items[int(r["seq"])][0] == r["key"], f"result line of seq {r['seq']} names another key"
    assert counts["processing"] == 0, f"items left processing by an engine that ended: {counts}"

    manifest = read_json(batch / "manifest.json")
    assert _counts_of(manifest["totals"]) == counts, f"manifest totals {manifest['totals']} != store {counts}"
    live = read_json(batch / "live_progress.json")
    assert _counts_of(live["counts"]) == counts, f"live_progress counts {live['counts']} != store {counts}"
    assert live["total"] == counts["total"]
    if report:
        rep = read_json(batch / "report.json")
        assert _counts_of(rep["totals"]) == counts, f"report totals {rep['totals']} != store {counts}"
    if state is not None:
        states = {state} if isinstance(state, str) else state
        assert manifest["state"] in states, manifest["state"]
        assert live["state"] in states, live["state"]
    return {"counts": counts, "results": results, "manifest": manifest, "live": live}


def exec_log(path: Path) -> list[tuple[int, int, int]]:
    """(seq, attempt, pid) per execution start logged by procs._log_start."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def tree_snapshot(root: Path, *, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """relative path -> (mode, size) of everything under ``root`` (``skip``'s subtree left out)."""
    snap: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = here / name
            st = p.lstat()
            snap[str(p.relative_to(root))] = (st.st_mode, st.st_size if not p.is_dir() else 0)
    return snap
