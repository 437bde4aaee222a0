"""engine/resume.py: the decisions of a resume, taken by the engine API (no CLI, no subprocess).

Which batch, its lock (held by the plan, let go of when planning refuses), the stored config
with only operational overrides, a creation cut short rebuilt, nothing to do, retry-failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtui.engine.batchdir import BatchDir, BatchLock, BatchLocked
from batchtui.engine.batches import iter_batches
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.errors import UserError
from batchtui.engine.files import write_model
from batchtui.engine.models import BatchState
from batchtui.engine.processors import shell_spec
from batchtui.engine.resume import plan_resume
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.engine.summary import INTERRUPTED, summarize


def _batch(tmp_path: Path, name: str, lines: list[str], command: str = "true", *, run: bool = False) -> BatchDir:
    source = tmp_path / f"{name}.txt"
    source.write_text("".join(f"{line}\n" for line in lines))
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2, "name": name}, environ={}, cwd=tmp_path)
    batch = create_batch(config, build_spec([str(source)]), shell_spec(command))
    if run:
        BatchRunner(batch, config=config, action="run").run()
    return batch


def _free(batch: BatchDir) -> bool:
    """Whether another process could take the batch's lock now (this object is a second holder)."""
    probe = BatchLock(batch.lock)
    try:
        probe.acquire(wait=0)
    except BatchLocked:
        return False
    probe.release()
    return True


def test_a_named_batch_is_planned_with_its_lock_held_and_its_overrides(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "named", ["a", "b", "c"])
    plan = plan_resume(tmp_path / "out", batch.batch_id, flags={"workers": 5, "timeout": 9.0})
    try:
        assert plan.batch.path == batch.path
        assert plan.reason is None and not plan.rebuilt
        assert plan.overrides == {"timeout": 9.0, "workers": 5}
        assert (plan.config.workers, plan.config.timeout, plan.config.name) == (5, 9.0, "named")
        assert (plan.counts.total, plan.counts.pending) == (3, 3)
        assert not plan.nothing_to_do
        assert not _free(batch)  # held by the plan...
        runner = plan.runner()
        assert runner.lock is plan.lock and runner.overrides == plan.overrides  # ...and handed on
    finally:
        plan.release()
    assert _free(batch)


def test_a_setting_that_is_not_operational_is_refused_and_the_lock_let_go(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "fixed", ["a"])
    settings = tmp_path / "settings.toml"
    settings.write_text('name = "other"\nworkers = 3\n')
    with pytest.raises(UserError, match=r"^cannot change name on resume \(only operational settings may change\)$"):
        plan_resume(tmp_path / "out", batch.path, config_file=str(settings))
    assert _free(batch)
    # A flag that is no operational knob is not this resume's to give: left out, not applied.
    plan = plan_resume(tmp_path / "out", batch.path, flags={"name": "other", "workers": 3})
    plan.release()
    assert (plan.config.name, plan.overrides) == ("fixed", {"workers": 3})


def test_without_a_batch_the_newest_one_no_engine_runs_is_chosen_and_said(tmp_path: Path) -> None:
    _batch(tmp_path, "one", ["a"])
    _batch(tmp_path, "two", ["b"])
    newest, other = (BatchDir(b.path.resolve()) for b in iter_batches(tmp_path / "out"))
    said: list[str] = []
    held = BatchLock(newest.lock)
    held.acquire()  # an engine runs the newest one
    try:
        plan = plan_resume(tmp_path / "out", say=said.append)
    finally:
        held.release()
    plan.release()
    assert plan.batch.path == other.path
    assert plan.reason is not None and f"{newest.batch_id} is run by" in plan.reason
    assert said == [f"resuming {other.batch_id} ({plan.reason})"]


def test_nothing_to_do_for_a_finished_batch_unless_its_failures_are_retried(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "done", ["a", "bad", "c"], "test {} != bad", run=True)
    assert batch.read_manifest().state == BatchState.FINISHED
    plan = plan_resume(tmp_path / "out", batch.path, hold=False)
    assert plan.lock is None and plan.nothing_to_do
    assert (plan.counts.complete, plan.counts.failed) == (2, 1)
    retry = plan_resume(tmp_path / "out", batch.path, retry_failed=True)
    try:
        assert not retry.nothing_to_do
        assert retry.requeue_failed() == 1
    finally:
        retry.release()
    again = plan_resume(tmp_path / "out", batch.path, hold=False)
    assert (again.counts.pending, again.counts.failed) == (1, 0) and not again.nothing_to_do


def test_a_batch_whose_creation_was_cut_short_gets_its_store_first(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "cut", ["a", "b"])
    assert batch.read_manifest().state == BatchState.CREATED
    batch.items_db.unlink()  # the engine died before items.db existed
    said: list[str] = []
    plan = plan_resume(tmp_path / "out", batch.path, say=said.append)
    try:
        assert plan.rebuilt and (plan.counts.total, plan.counts.pending) == (2, 2)
        assert said == [f"batch {batch.batch_id} has no items.db yet (creation was cut short): building it"]
        assert plan.lock is not None and not _free(batch)  # taken again after the rebuild
    finally:
        plan.release()


def test_a_batch_an_engine_runs_is_refused_naming_it(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "busy", ["a"])
    held = BatchLock(batch.lock)
    held.acquire()
    try:
        with pytest.raises(BatchLocked, match=f"batch {batch.batch_id} is being run by pid "):
            plan_resume(tmp_path / "out", batch.path, lock_try=0)
    finally:
        held.release()


def test_a_batch_whose_engine_died_is_said_to_be_so(tmp_path: Path) -> None:
    batch = _batch(tmp_path, "died", ["a", "b"])
    manifest = batch.read_manifest()
    write_model(batch.manifest, manifest.model_copy(update={"state": BatchState.RUNNING}))
    plan = plan_resume(tmp_path / "out", hold=False)
    assert summarize(batch).state == INTERRUPTED
    assert plan.reason is not None and plan.reason.startswith("running when its engine died ")
