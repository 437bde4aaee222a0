"""A resume that moves a batch off the dask cluster it last ran on (``--executor thread``, another
``--scheduler``): what an earlier run left running there must not run here a second time at once
(DESIGN section 6). Shell items are killed there first; a Python call still running refuses the
resume (and ``batchtui check``), naming it and the ways on; a cluster that does not answer is said.
See engine/dask_leave.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchtui.engine.config import BatchConfig, load_config
from batchtui.engine.dask_leave import ClusterStillRuns, cluster_left
from batchtui.engine.errors import UserError
from batchtui.engine.resume import plan_resume
from batchtui.engine.shell.item import Item

from .conftest import CLI, cli_env, dask_client, only_batch, read_json, read_jsonl
from .test_dask import needs_dask
from .test_dask_orphans import BEAT_PY, _runs, beat_script, killed_mid_run

pytestmark = pytest.mark.xdist_group("test_dask_leave")

ITEMS = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with dask_client(1) as client:
        yield client


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _killed_mid_run(tmp_path: Path, out_dir: Path, address: str, processor: list[str], log: Path) -> Path:
    """A run on the cluster at ``address`` killed -9 while its ITEMS items run there."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"i{n}\n" for n in range(ITEMS)))
    args = ["run", str(items), *processor, "--executor", "dask", "--scheduler", address, "-j", str(ITEMS), "--headless"]
    return killed_mid_run(tmp_path, out_dir, cli_env(out_dir), args, log, ITEMS)


def _each_once_and_never_twice_at_once(batch: Path, log: Path) -> dict[int, list[tuple[str, float, float]]]:
    runs = _runs(log)
    assert sorted(runs) == list(range(ITEMS))
    for seq, copies in runs.items():
        assert len(copies) == 2, (seq, copies)
        (_, _, last_beat), (_, second_start, _) = sorted(copies, key=lambda c: c[1])
        assert last_beat < second_start, f"item {seq} ran twice at once: {last_beat - second_start:.2f} s overlap"
    assert sorted(int(r["seq"]) for r in read_jsonl(batch / "results.jsonl")) == list(range(ITEMS))  # type: ignore[call-overload]
    return runs


@needs_dask
def test_a_python_call_still_running_on_the_cluster_refuses_a_resume_elsewhere(
    tmp_path: Path, out_dir: Path, cluster: Any
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "beatmod.py").write_text(BEAT_PY)
    log = work / "ran.log"
    address = cluster.scheduler.address
    batch = _killed_mid_run(tmp_path, out_dir, address, ["--call", f"{work / 'beatmod.py'}:beat"], log)
    (work / "fast").touch()  # the next copies end at once
    env = cli_env(out_dir)
    try:
        checked = _cli(env, tmp_path, "check", "--batch", str(batch), "--executor", "thread")
        assert checked.returncode == 2, checked.stdout + checked.stderr
        assert "[FAIL] cluster: 2 items of an earlier run of this batch still run" in checked.stdout
        assert f"on the dask cluster at {address}" in checked.stdout and "(#0, #1:" in checked.stdout
        manifest_before = (batch / "manifest.json").read_bytes()
        refused = _cli(env, tmp_path, "resume", str(batch), "--executor", "thread", "--headless")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "run here too, each would run twice at once" in refused.stderr
        assert f"Resume on that cluster (--executor dask --scheduler {address}" in refused.stderr
        assert (batch / "manifest.json").read_bytes() == manifest_before  # refused before anything changed
        # The engine's own refusal (the TUI's resume, or calls begun after the checks): a run
        # that would leave the cluster takes the batch there first, and stops before it changes
        # anything.
        plan = plan_resume(out_dir, batch, flags={"executor": "thread"})
        with pytest.raises(ClusterStillRuns, match=r"2 items of an earlier run .* \(#0, #1: a Python call"):
            plan.runner().run()
        assert (batch / "manifest.json").read_bytes() == manifest_before
        assert log.read_text().count("start ") == ITEMS  # nothing ran a second time
    finally:
        (work / "release").touch()
    deadline = time.monotonic() + 30  # the calls see the release within 0.1 s, then end
    while _cli(env, tmp_path, "check", "--batch", str(batch), "--executor", "thread").returncode != 0:
        assert time.monotonic() < deadline, "the earlier calls never ended on the cluster"
        time.sleep(0.2)
    done = _cli(env, tmp_path, "resume", str(batch), "--executor", "thread", "--headless")
    assert done.returncode == 0, done.stderr
    _each_once_and_never_twice_at_once(batch, log)
    assert read_json(batch / "manifest.json")["config"]["scheduler"] is None  # type: ignore[index]


@needs_dask
def test_shell_items_still_running_on_the_cluster_are_killed_before_a_resume_elsewhere(
    tmp_path: Path, out_dir: Path, cluster: Any
) -> None:
    script, log = beat_script(tmp_path)
    batch = _killed_mid_run(tmp_path, out_dir, cluster.scheduler.address, ["--cmd", f"{script} {{seq}} {log}"], log)
    (log.parent / "fast").touch()
    done = _cli(cli_env(out_dir), tmp_path, "resume", str(batch), "--executor", "thread", "--headless")
    assert done.returncode == 0, done.stderr
    assert "killed 2 shell items an earlier run left running on the dask cluster" in done.stderr
    time.sleep(0.3)  # an old copy left running would beat meanwhile
    runs = _each_once_and_never_twice_at_once(batch, log)
    old = [sorted(copies, key=lambda c: c[1])[0] for copies in runs.values()]
    assert all(last - start < 15 for _, start, last in old), old  # killed, not waited out (20 s or more)


@needs_dask
def test_a_cluster_that_no_longer_answers_is_said_and_the_resume_goes_on(tmp_path: Path, out_dir: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\nc\n")
    env = cli_env(out_dir)
    with dask_client(1) as gone:
        address = gone.scheduler.address
        first = _cli(env, tmp_path, "run", str(items), "--cmd", "exit 3", "--executor", "dask", "--scheduler", address)
        assert first.returncode == 1, first.stderr
    batch = only_batch(out_dir)
    done = _cli(env, tmp_path, "resume", str(batch), "--executor", "thread", "--retry-failed", "--headless")
    assert done.returncode == 1, done.stderr  # exit 3 again, here: it ran
    assert f"the dask cluster at {address} this batch last ran on does not answer" in done.stderr
    assert read_json(batch / "live_progress.json")["counts"]["failed"] == 3  # type: ignore[index]


# -- without a cluster ------------------------------------------------------------------------------


def test_another_executor_on_resume_takes_the_batch_off_its_cluster() -> None:
    base = BatchConfig(executor="dask", scheduler="tcp://10.0.0.5:8786").model_dump(mode="json")
    moved = load_config({"executor": "process"}, base=base, environ={})
    assert moved.executor == "process" and moved.scheduler is None
    kept = load_config({"workers": 3}, base=base, environ={})
    assert kept.executor == "dask" and kept.scheduler == "tcp://10.0.0.5:8786"
    with pytest.raises(UserError, match="add --executor dask, or leave the scheduler out"):
        load_config({"executor": "process", "scheduler": "tcp://10.0.0.6:8786"}, base=base, environ={})


def test_which_resumes_leave_the_cluster_the_batch_last_ran_on() -> None:
    last = {"executor": "dask", "scheduler": "tcp://a:1"}
    assert cluster_left(last, BatchConfig(executor="thread")) == "tcp://a:1"
    assert cluster_left(last, BatchConfig(executor="dask", scheduler="tcp://b:1")) == "tcp://a:1"
    assert cluster_left(last, BatchConfig(executor="dask")) == "tcp://a:1"  # a LocalCluster of its own
    assert cluster_left(last, BatchConfig(executor="dask", scheduler="tcp://a:1")) is None
    assert cluster_left(last, BatchConfig(executor="dask", scheduler="a:1")) is None  # one address
    here = {"executor": "dask", "scheduler": "tcp://127.0.0.1:8786"}
    assert cluster_left(here, BatchConfig(executor="dask", scheduler="tcp://localhost:8786")) is None
    assert cluster_left(here, BatchConfig(executor="dask", scheduler="tcp://localhost:8787")) == "tcp://127.0.0.1:8786"
    assert cluster_left({"executor": "dask", "scheduler": None}, BatchConfig(executor="thread")) is None
    assert cluster_left({"executor": "thread"}, BatchConfig(executor="thread")) is None


class _Deaf:
    """A cluster one of whose workers never answers (its call holds the GIL, or it hangs)."""

    def __init__(self, running: list[int]) -> None:
        self.running = running
        self.closed = False

    def ask_all(self, function: Any, *args: Any) -> tuple[list[list[int]], bool]:
        return [self.running], False

    def close(self, wait: float) -> None:
        self.closed = True


def test_a_worker_that_does_not_answer_refuses_a_resume_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """What it runs cannot be known: such an item would run twice at once (a call holding its
    worker's GIL blocked the answer, and the resume went on with a warning: 11 s of overlap)."""
    from batchtui.engine import dask_leave

    deaf = _Deaf([])
    monkeypatch.setattr(dask_leave, "_connect", lambda address: (deaf, ""))
    for kind in ("python", "shell"):
        with pytest.raises(ClusterStillRuns, match="not every worker of the dask cluster at tcp://a:1"):
            dask_leave.leave_cluster("tcp://a:1", Path("/nowhere"), kind)
        level, said = dask_leave.check_left_cluster("tcp://a:1", Path("/nowhere"), kind)
        assert level == "fail" and "would run twice at once if run here too" in said, said
    assert deaf.closed


def test_a_worker_that_does_not_answer_holds_every_item_until_it_does() -> None:
    """On the same cluster: what an earlier run still runs there is not known, so nothing goes
    out until every worker has answered (the run went on with a warning, and ran items twice)."""
    from types import SimpleNamespace

    from batchtui.engine.dask_orphans import Orphans

    deaf = _Deaf([7])
    executor = SimpleNamespace(
        dask=deaf, task=SimpleNamespace(batch="b", engine="e"), spec=SimpleNamespace(kind="python")
    )
    orphans = Orphans(executor)  # type: ignore[arg-type]
    said = orphans.take_batch()
    assert said is not None and "nothing starts here until every worker has answered" in said
    other = SimpleNamespace(items=[Item(2, "c", "c", 1, "")])
    assert orphans.holding and orphans.blocks(other)  # type: ignore[arg-type]
    orphans.refresh()  # still one deaf worker: everything waits
    assert orphans.blocks(other)  # type: ignore[arg-type]
    deaf.ask_all = lambda function, *args: ([[9], []], True)  # type: ignore[method-assign]
    orphans.refresh()
    assert orphans.seqs == {9} and not orphans.blocks(other)  # type: ignore[arg-type]
    assert orphans.blocks(SimpleNamespace(items=[Item(9, "i", "i", 1, "")]))  # type: ignore[arg-type]


@needs_dask
def test_only_a_batch_that_ran_before_is_taken_on_the_cluster(
    tmp_path: Path, cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run has nothing of an earlier run to find, and a worker slow to answer (busy with
    another batch's call) would hold all of it: it asks nothing; a resume does."""
    from batchtui.engine.dask_orphans import Orphans
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import shell_spec
    from batchtui.engine.runner import BatchRunner
    from batchtui.engine.sources import build_spec

    asked: list[str] = []
    taken = Orphans.take_batch
    monkeypatch.setattr(Orphans, "take_batch", lambda self: asked.append("take") or taken(self))
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    config = BatchConfig(output_dir=str(tmp_path / "out"), executor="dask", scheduler=cluster.scheduler.address)
    batch = create_batch(config, build_spec([str(items)]), shell_spec("exit 3"))
    assert BatchRunner(batch).run().counts.failed == 2
    assert asked == []
    plan = plan_resume(tmp_path / "out", batch, retry_failed=True)
    plan.requeue_failed()
    assert plan.runner().run().counts.failed == 2
    assert asked == ["take"]


@needs_dask
def test_the_code_check_does_not_wait_on_a_worker_that_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker busy with a call holding its GIL (another batch's) held a run's whole start in
    the --call source check, without bound (32 s; for ever for a hung one)."""
    import threading
    from types import SimpleNamespace

    from batchtui.engine import dask_cluster
    from batchtui.engine.processors import python_spec

    release = threading.Event()
    monkeypatch.setattr(dask_cluster, "BROADCAST_TIMEOUT_S", 0.2)
    cluster = dask_cluster.DaskCluster(BatchConfig(executor="dask", scheduler="tcp://127.0.0.1:1"))
    cluster.client = SimpleNamespace(run=lambda *args, **kwargs: release.wait(60))
    (tmp_path / "m.py").write_text("def f(item):\n    return 1\n")
    task = SimpleNamespace(code="0" * 64)
    try:
        done = threading.Thread(target=cluster._check_code, args=(task, python_spec(f"{tmp_path / 'm.py'}:f")))
        done.start()
        done.join(10)
        assert not done.is_alive(), "the check waited on the worker that does not answer"
    finally:
        release.set()
        cluster._rpc.shutdown(wait=False)
