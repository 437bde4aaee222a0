"""The dask executor on real clusters with worker processes, through the CLI.

Skipped as a whole without the optional extra (``pip install 'batchtui[dask]'``), except the
checks that need no dask: the clear error without it, and that batchtui never imports it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from .conftest import CLI, cli_env, dask_client, only_batch, read_json, read_jsonl

#: Whether the dask extra is installed, asked without importing it: importing distributed costs
#: ~0.5 s of CPU in every test worker that collects this module, and one worker runs its tests.
HAVE_DASK = importlib.util.find_spec("distributed") is not None

needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="needs the dask extra: pip install 'batchtui[dask]'")

#: The module's tests share one LocalCluster (a module fixture): with --dist loadgroup they run on one
#: xdist worker, so it is built once, not once a worker.
pytestmark = pytest.mark.xdist_group("test_dask")

WORK = '''
import os
import time


def work(item):
    """~4 ms; seq % 37 == 5 fails for good, seq % 11 == 3 fails once (transient)."""
    time.sleep(0.004)
    if item.seq % 37 == 5:
        raise ValueError(f"bad item {item.seq}")
    if item.seq % 11 == 3 and item.attempt == 1:
        raise ConnectionError(f"reset on {item.seq}")
    return {"seq": item.seq, "pid": os.getpid()}


def slow(item):
    """30 ms, or no time once the file "fast" is in the batch folder."""
    if not os.path.exists(os.path.join(item.batch_dir, "fast")):
        time.sleep(0.03)
    return {"seq": item.seq, "pid": os.getpid()}


def slow_long(item):
    """As slow, but item 60 takes 3 s and leaves its worker's pid in the batch folder."""
    if item.seq == 60 and item.attempt == 1:
        with open(os.path.join(item.batch_dir, "long.pid"), "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(3)
    time.sleep(0.03)
    return {"seq": item.seq, "pid": os.getpid()}


def hang(item):
    if item.seq == 2:
        time.sleep(120)
    time.sleep(0.01)
    return {"seq": item.seq}
'''


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "dwork.py"
    path.write_text(WORK)
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A scheduler and two worker processes of two threads, shared by this module's tests that run
    on a cluster the engine does not own (those of the engine's own LocalCluster start theirs)."""
    with dask_client(2) as client:
        yield client


def _items(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "items.txt"
    path.write_text("".join(f"item-{i:04d}\n" for i in range(n)))
    return path


def _db(batch: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _check_invariants(batch: Path) -> dict[str, int]:
    """results.jsonl holds each complete item exactly once; manifest, live, report and db agree."""
    counts = dict(_db(batch, "SELECT status, COUNT(*) FROM items GROUP BY status"))
    db = {s: int(counts.get(s, 0)) for s in ("pending", "processing", "complete", "failed", "skipped")}
    db["total"] = sum(db.values())
    results = read_jsonl(batch / "results.jsonl")
    seqs = [int(r["seq"]) for r in results]  # type: ignore[call-overload]
    assert len(seqs) == len(set(seqs)), [s for s, n in Counter(seqs).items() if n > 1]
    assert set(seqs) == {s for (s,) in _db(batch, "SELECT seq FROM items WHERE status = 'complete'")}
    manifest = read_json(batch / "manifest.json")
    live = read_json(batch / "live_progress.json")
    report = read_json(batch / "report.json")
    for name, got in (("manifest", manifest["totals"]), ("live", live["counts"]), ("report", report["totals"])):
        assert {k: got[k] for k in db} == db, name  # type: ignore[index]
    assert db["processing"] == 0
    return db


def _wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _live(out: Path) -> dict[str, Any]:
    try:
        return read_json(only_batch(out) / "live_progress.json")
    except (AssertionError, FileNotFoundError, orjson.JSONDecodeError):
        return {}


def _complete(out: Path) -> int:
    return int((_live(out).get("counts") or {}).get("complete", 0))


def _dask_workers(engine_pid: int) -> list[psutil.Process]:
    """The LocalCluster's worker processes: the engine's spawned children (not its resource tracker)."""
    kids = psutil.Process(engine_pid).children()
    return [p for p in kids if "spawn_main" in " ".join(p.cmdline())]


def _start(args: list[str], out: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        env=cli_env(out),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


# -- runs on a LocalCluster the engine starts ------------------------------------------------------


@needs_dask
def test_local_cluster_with_failures_keeps_every_invariant(tmp_path: Path, out_dir: Path, work: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    n = 300
    items = _items(tmp_path, n)
    args = ["run", str(items), "--call", f"{work}:work", "--executor", "dask", "--workers", "2"]
    proc = run_cli([*args, "--headless", "--backoff", "0.05", "--backoff-max", "0.2"], timeout=120)
    assert proc.returncode == 1, proc.stderr  # some items failed for good
    batch = only_batch(out_dir)
    db = _check_invariants(batch)
    permanent = {s for s in range(n) if s % 37 == 5}
    transient = {s for s in range(n) if s % 11 == 3} - permanent
    assert db["failed"] == len(permanent) and db["complete"] == n - len(permanent)
    failed = _db(batch, "SELECT seq, error_type, error_category, attempts FROM items WHERE status = 'failed'")
    assert {(s, t, c, a) for s, t, c, a in failed} == {(s, "ValueError", "item", 1) for s in permanent}
    retried = _db(batch, "SELECT seq, attempts FROM items WHERE status = 'complete' AND attempts > 1")
    assert {s for s, _ in retried} == transient and all(a == 2 for _, a in retried)
    first = _db(batch, "SELECT seq, error_type, error_category FROM attempts WHERE attempt = 1 AND status = 'failed'")
    assert {(s, t, c) for s, t, c in first} >= {(s, "ConnectionError", "transient") for s in transient}

    live = read_json(batch / "live_progress.json")
    cluster = live["cluster"]
    assert isinstance(cluster, dict)
    assert cluster["local"] is True and cluster["workers"] == 2 and cluster["threads"] == 2
    assert cluster["memory_total_mb"] > 0 and cluster["memory_used_mb"] > 0
    assert str(cluster["scheduler"]).startswith("tcp://")
    pids = {r["result"]["pid"] for r in read_jsonl(batch / "results.jsonl")}  # type: ignore[index]
    assert len(pids) == 2 and live["pid"] not in pids  # both worker processes ran items, not the engine
    assert not psutil.pid_exists(next(iter(pids)))  # the engine closed its cluster


@needs_dask
def test_a_killed_worker_loses_nothing(tmp_path: Path, out_dir: Path, work: Path) -> None:
    n = 300
    items = _items(tmp_path, n)
    args = ["run", str(items), "--call", f"{work}:slow_long", "--executor", "dask", "-j", "2", "--headless"]
    proc = _start([*args, "--backoff", "0.05"], out_dir, tmp_path)
    try:
        # Kill the worker running item 60 once the engine knows it began (its 3 s are not over).
        def long_running() -> bool:
            found = list(out_dir.glob("*/long.pid"))
            return bool(found) and any(
                f["seq"] == 60 and not f.get("queued") for f in _live(out_dir).get("in_flight", [])
            )

        _wait_for(long_running, 60, "item 60 running")
        workers = _dask_workers(proc.pid)
        assert len(workers) == 2, workers
        victim = int(next(out_dir.glob("*/long.pid")).read_text())
        assert victim in {w.pid for w in workers}
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    batch = only_batch(out_dir)
    db = _check_invariants(batch)
    assert db["complete"] == n
    lost = _db(
        batch, "SELECT seq, attempt, error_category, error_message FROM attempts WHERE error_type = 'WorkerLost'"
    )
    assert 60 in {seq for seq, *_ in lost}, lost  # the item the killed worker was running
    assert all(cat == "transient" and "died" in msg for _, _, cat, msg in lost)
    retried = dict(_db(batch, "SELECT seq, attempts FROM items"))
    assert all(retried[seq] == attempt + 1 for seq, attempt, _, _ in lost)  # retried once, then complete
    pids = {r["result"]["pid"] for r in read_jsonl(batch / "results.jsonl")}  # type: ignore[index]
    assert victim in pids and len(pids) >= 3  # the nanny started a fresh worker process


@needs_dask
def test_scale_skip_then_ctrl_c_and_resume(tmp_path: Path, out_dir: Path, work: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """set_workers scales the LocalCluster; a skip of in-flight and queued items cancels them; SIGINT to the
    whole process group (a Ctrl-C) stops the batch: the workers ignore it, so no in-flight item is
    lost or failed; resume finishes on a new local cluster."""
    from batchtui.engine.batchdir import BatchDir
    from batchtui.engine.control import append_command, new_command, wait_for_ack

    n = 600
    items = _items(tmp_path, n)
    args = ["run", str(items), "--call", f"{work}:slow", "--executor", "dask", "-j", "2", "--headless"]
    proc = _start(args, out_dir, tmp_path)
    try:
        _wait_for(lambda: _complete(out_dir) >= 20, 60, "the first items")
        bdir = BatchDir(only_batch(out_dir))
        append_command(bdir, new_command("set_workers", value=3))
        _wait_for(lambda: (_live(out_dir).get("cluster") or {}).get("workers") == 3, 60, "a third worker")
        assert _live(out_dir)["workers"] == 3
        in_flight = [int(f["seq"]) for f in _live(out_dir)["in_flight"]]
        # The items take 30 ms and live_progress is a moment old: on a loaded machine all those
        # it lists may be done before the skip lands (CI, once). The next 200 are queued, or
        # handed to the cluster in a chunk: some of the skip always lands.
        targets = sorted({*in_flight, *range(max(in_flight, default=0) + 1, max(in_flight, default=0) + 201)})
        skip = new_command("skip", seqs=targets)
        append_command(bdir, skip)
        assert wait_for_ack(bdir, skip.id, timeout=20) is not None
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    batch = only_batch(out_dir)
    assert read_json(batch / "manifest.json")["state"] == "stopped"
    db = _check_invariants(batch)
    assert db["failed"] == 0 and db["pending"] > 0, _db(
        batch, "SELECT seq, attempts, error_type, error_message FROM items WHERE status = 'failed'"
    )
    assert not _db(batch, "SELECT * FROM attempts WHERE error_type = 'WorkerLost'")
    skipped = {s for (s,) in _db(batch, "SELECT seq FROM items WHERE status = 'skipped'")}
    assert skipped and skipped <= set(targets)  # those not finished before the skip landed

    (batch / "fast").touch()  # what is left has nothing more to prove by its pace
    resumed = run_cli(["resume", batch.name, "--headless"], timeout=120)
    assert resumed.returncode == 1, resumed.stderr  # 1: some items were skipped
    db = _check_invariants(batch)
    assert db["complete"] == n - len(skipped) and db["skipped"] == len(skipped)


@needs_dask
def test_timeout_of_a_hung_call_restarts_its_worker(tmp_path: Path, out_dir: Path, work: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A Python call cannot be interrupted, but on its own LocalCluster the engine restarts the
    worker running a timed-out item, as the process executor kills its process."""
    items = _items(tmp_path, 40)
    t0 = time.monotonic()
    args = ["run", str(items), "--call", f"{work}:hang", "--executor", "dask", "-j", "2", "--headless"]
    proc = run_cli([*args, "--timeout", "2", "--max-attempts", "2", "--backoff", "0.05"], timeout=110)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - t0 < 60  # far from the 2 x 120 s the hung calls would take
    batch = only_batch(out_dir)
    db = _check_invariants(batch)
    # Items queued behind the hung call (on the scheduler, or caught in its worker's restart)
    # have not used their time: only seq 2 times out.
    not_done = _db(batch, "SELECT seq, status, error_type FROM items WHERE status != 'complete'")
    assert db["complete"] == 39 and db["failed"] == 1, not_done
    assert _db(batch, "SELECT seq, error_type, attempts FROM items WHERE status = 'failed'") == [(2, "timeout", 2)]
    # Each attempt ran until it was killed, past the 2 s (the report and the ETA count it): the
    # outcome made up for the restarted worker said 0 s, begun and ended at the kill.
    attempts = _db(batch, "SELECT attempt, duration_s, started_at < finished_at FROM attempts WHERE seq = 2")
    assert len(attempts) == 2 and all(2.0 <= d < 30 and later for _, d, later in attempts), attempts


@needs_dask
def test_shell_template_runs_on_the_workers(tmp_path: Path, out_dir: Path, run_cli, cluster: Any) -> None:  # type: ignore[no-untyped-def]
    n = 40
    items = _items(tmp_path, n)
    cmd = "echo {} $PPID > {out}/v.txt; test {seq} -ne 7"
    args = ["run", str(items), "--cmd", cmd, "--executor", "dask", "-j", "2", "--headless"]
    proc = run_cli([*args, "--scheduler", cluster.scheduler.address], timeout=120)
    assert proc.returncode == 1, proc.stderr
    batch = only_batch(out_dir)
    db = _check_invariants(batch)
    assert db["complete"] == n - 1
    assert _db(batch, "SELECT seq, error_type FROM items WHERE status = 'failed'") == [(7, "exit 1")]
    engine_pid = read_json(batch / "live_progress.json")["pid"]
    parents = set()
    for seq in range(n):
        value, ppid = (batch / "out" / str(seq) / "v.txt").read_text().split()
        assert value == f"item-{seq:04d}"
        parents.add(int(ppid))
    assert engine_pid not in parents and parents <= set(cluster.run(os.getpid).values())  # by the workers


@needs_dask
def test_a_worker_that_cannot_build_the_processor_fails_fast(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """The engine imports the callable (preflight passes) but the workers cannot: one clear line."""
    engine_only = tmp_path / "engine_only.py"
    engine_only.write_text(
        "import multiprocessing\n"
        "if multiprocessing.parent_process() is not None:\n"
        "    raise ImportError('missing on the workers (simulated)')\n"
        "def work(item):\n"
        "    return 1\n"
    )
    items = _items(tmp_path, 10)
    args = ["run", str(items), "--call", f"{engine_only}:work", "--executor", "dask", "-j", "1", "--headless"]
    proc = run_cli(args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "a dask worker cannot run this batch" in proc.stderr and "missing on the workers" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_dask
def test_existing_scheduler_is_used_and_left_running(tmp_path: Path, out_dir: Path, work: Path, cluster: Any) -> None:
    client = cluster
    address = client.scheduler.address
    worker_pids = set(client.run(os.getpid).values())
    items = _items(tmp_path, 120)
    env = cli_env(out_dir, {"BATCHTUI_SCHEDULER": address})
    args = ["run", str(items), "--call", f"{work}:slow", "--executor", "dask", "-j", "3", "--headless"]
    proc = subprocess.run(
        [*CLI, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    batch = only_batch(out_dir)
    assert _check_invariants(batch)["complete"] == 120
    live = read_json(batch / "live_progress.json")
    cluster_info = live["cluster"]
    assert isinstance(cluster_info, dict)
    assert cluster_info["scheduler"] == address and cluster_info["local"] is False
    assert cluster_info["workers"] == 2 and cluster_info["threads"] == 4
    assert live["workers"] == 3  # on a cluster it does not own, --workers sizes the window
    assert read_json(batch / "manifest.json")["config"]["scheduler"] == address  # type: ignore[index]
    pids = {r["result"]["pid"] for r in read_jsonl(batch / "results.jsonl")}  # type: ignore[index]
    assert pids and pids <= worker_pids  # every result came from a worker of that cluster
    assert len(client.scheduler_info()["workers"]) == 2  # the engine left the cluster running
    # ... and asked it to forget the events of its run's topics (it keeps them as long as it runs)
    assert [topic for topic in client.get_events() if topic.startswith("batchtui-")] == []


@needs_dask
def test_unreachable_scheduler_fails_in_preflight(tmp_path: Path, out_dir: Path, work: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A wrong --scheduler is caught before any batch is made, in seconds (not the client's 15 s)."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    items = _items(tmp_path, 3)
    t0 = time.monotonic()
    args = ["run", str(items), "--call", f"{work}:slow", "--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{port}"]
    proc = run_cli([*args, "--headless"], timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach the dask scheduler at 127.0.0.1:{port}" in proc.stderr + proc.stdout
    assert time.monotonic() - t0 < 10
    assert not out_dir.exists() or not any(out_dir.iterdir())


@needs_dask
@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("tcp://[::1", "--scheduler 'tcp://[::1' is not host:port"),
        ("inproc://x", "--scheduler 'inproc://x' is not a dask scheduler's address"),
        ("TCP://127.0.0.1:8786", "--scheduler 'TCP://127.0.0.1:8786' is not a dask scheduler's address"),
        ("tcp://127.0.0.1:8786/x", "--scheduler 'tcp://127.0.0.1:8786/x' is not host:port"),
        ("WEB", "took the connection and sent nothing in 3s, where a dask scheduler speaks at once"),
    ],
)
def test_what_is_not_a_scheduler_fails_in_preflight(  # type: ignore[no-untyped-def]
    tmp_path: Path, out_dir: Path, run_cli, address: str, said: str
) -> None:
    """An address that cannot be one, or a port that is no scheduler's: a dask client waited on a
    web server's port (the dashboard's, a common slip) for ever, its timeout unheeded (distributed
    #8071), with the batch made; another address was a traceback."""
    import socket

    with socket.socket() as web:  # takes connections, and says nothing first, as a web server
        web.bind(("127.0.0.1", 0))
        web.listen()
        address = address.replace("WEB", f"tcp://127.0.0.1:{web.getsockname()[1]}")
        items = _items(tmp_path, 3)
        proc = run_cli(["run", str(items), "--cmd", "true", "--executor", "dask", "--scheduler", address], timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert said in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())


@needs_dask
def test_a_cluster_that_cannot_start_halts_the_run_and_leaves_its_settings(  # type: ignore[no-untyped-def]
    tmp_path: Path, out_dir: Path, run_cli
) -> None:
    """Something that speaks first but is no scheduler passes the checks; the client then fails.
    The batch said "running" with no engine after that, and its settings said it last ran on that
    address (a later resume elsewhere went to ask it about items that never ran there)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def babble() -> None:
        with server:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"x" * 64)

    threading.Thread(target=babble, daemon=True).start()
    items = _items(tmp_path, 2)
    first = run_cli(["run", str(items), "--cmd", "exit 3", "--max-attempts", "1"], timeout=60)
    assert first.returncode == 1, first.stderr
    batch = only_batch(out_dir)
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    moved = run_cli(["resume", str(batch), "--retry-failed", "--executor", "dask", "--scheduler", address], timeout=60)
    server.close()
    assert moved.returncode == 2, moved.stderr
    assert f"error: cannot connect to the dask scheduler at {address}: " in moved.stderr
    manifest = read_json(batch / "manifest.json")
    assert manifest["state"] == "halted" and "cannot connect" in manifest["halt_reason"]  # type: ignore[index,operator]
    assert manifest["history"][-1]["outcome"] == "halted"  # type: ignore[index]
    assert manifest["config"]["executor"] is None and manifest["config"]["scheduler"] is None  # type: ignore[index]
    again = run_cli(["resume", str(batch), "--headless"], timeout=60)  # here, with what it last ran with
    assert again.returncode == 1 and "does not answer" not in again.stderr, again.stderr


# -- without dask ----------------------------------------------------------------------------------


def test_without_dask_a_clear_error(tmp_path: Path, out_dir: Path, work: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "no_dask"
    for name in ("dask", "distributed"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed (simulated)')\n")
    items = _items(tmp_path, 5)
    env = {"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    args = ["run", str(items), "--call", f"{work}:work", "--executor", "dask", "--headless"]
    proc = run_cli(args, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'batchtui[dask]'" in proc.stderr and "Traceback" not in proc.stderr


def test_without_dask_make_executor_raises_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import queue

    from batchtui.engine.config import BatchConfig
    from batchtui.engine.errors import UserError
    from batchtui.engine.executors import make_executor
    from batchtui.engine.processors import python_spec

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    (tmp_path / "f.py").write_text("def f(item):\n    return 1\n")
    spec = python_spec(f"{tmp_path / 'f.py'}:f")
    with pytest.raises(UserError, match=r"pip install 'batchtui\[dask\]'"):
        make_executor(spec, BatchConfig(executor="dask", workers=1), queue.SimpleQueue())


def test_importing_batchtui_never_imports_dask() -> None:
    code = (
        "import sys\n"
        "import batchtui.engine, batchtui.engine.executors, batchtui.engine.dask_executor, batchtui.tui.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
