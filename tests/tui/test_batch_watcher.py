"""The batch watcher reads a live file again whenever it may have changed, and only then.

Its stamp of a file (modification time, inode, size) can repeat across a replacement: a file
system keeps times to a tick (or a second), and a freed inode is reused. A dashboard that trusts
such a stamp misses the engine's last write ("finished") for good. These tests make the stamp
repeat on purpose (same inode, same size, the time set back) and check what is posted. The last
two check that the dashboard shows the later of two reads, whichever thread posted each.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from textual.message import Message

from batchtui.engine import inotify
from batchtui.engine.batchdir import BatchDir
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.files import read_model, write_model
from batchtui.engine.models import BatchState, LiveProgress
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui import watch
from batchtui.tui.messages import LiveUpdated
from batchtui.tui.watch import RACY_S, BatchWatcher

from ..conftest import wait_until
from .conftest import run
from .fixtures import make_batch
from .test_snapshots import dashboard_open, settle


def _finished(tmp_path: Path) -> BatchDir:
    source = tmp_path / "items.txt"
    source.write_text("a\nb\nc\n")
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 1}, environ={}, cwd=tmp_path)
    batch = create_batch(config, build_spec([str(source)]), shell_spec("true"))
    BatchRunner(batch, config=config, action="run").run()
    return batch


def _states(posted: list[Message]) -> list[str]:
    return [str(m.live.state) for m in posted if isinstance(m, LiveUpdated)]


def _rewrite_keeping_stamp(path: Path, change: tuple[bytes, bytes], mtime_ns: int) -> None:
    """New content of the same size in the same inode, its modification time put back."""
    raw = path.read_bytes()
    old, new = change
    assert len(old) == len(new) and old in raw
    with open(path, "r+b") as f:
        f.write(raw.replace(old, new))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_change_under_the_same_stamp_is_seen_while_the_stamp_is_recent(tmp_path: Path) -> None:
    batch = _finished(tmp_path)
    live = batch.live_progress
    # As an engine leaves it a moment before its last write: running, written just now.
    _rewrite_keeping_stamp(live, (b'"state": "finished"', b'"state": "running" '), os.stat(live).st_mtime_ns)
    now = os.stat(live).st_mtime_ns
    os.utime(live, ns=(now, now))
    posted: list[Message] = []
    watcher = BatchWatcher(batch.path, posted.append, use_inotify=False)
    watcher.read_all()
    assert _states(posted) == ["running"]
    # The engine's last write: same inode, same size, same time (one tick).
    _rewrite_keeping_stamp(live, (b'"state": "running" ', b'"state": "finished"'), now)
    watcher.read_all()
    assert _states(posted) == ["running", "finished"]
    # Nothing changed: nothing more is posted, however often it looks.
    watcher.read_all()
    watcher.read_all()
    assert _states(posted) == ["running", "finished"]


def test_an_old_stamp_is_trusted_and_the_file_is_not_read_again(tmp_path: Path) -> None:
    batch = _finished(tmp_path)
    live = batch.live_progress
    old = os.stat(live).st_mtime_ns - int((RACY_S + 10) * 1e9)
    os.utime(live, ns=(old, old))
    posted: list[Message] = []
    watcher = BatchWatcher(batch.path, posted.append, use_inotify=False)
    watcher.read_all()
    assert _states(posted) == ["finished"]
    # The same stamp, long settled, with other bytes behind it (which no writer does): the
    # stamp is what the watcher goes by, so it does not read the file on every look.
    _rewrite_keeping_stamp(live, (b'"state": "finished"', b'"state": "running" '), old)
    watcher.read_all()
    assert _states(posted) == ["finished"]
    assert orjson.loads(live.read_bytes())["state"] == "running"


def test_a_read_of_the_old_file_never_posts_after_a_read_of_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch thread and the dashboard's tick both read. The watch thread read "running",
    was held before it posted; the tick read the engine's last write, "finished", and posted
    it; then the watch thread posted "running", which replaced "finished" in the queue
    (LiveUpdated.can_replace), while the stamp kept was the new file's: no later read posted
    again. Seen once in CI: a dashboard said "running" 90 s after its engine had finished."""
    batch = _finished(tmp_path)
    live = batch.live_progress
    finished = live.read_bytes()
    live.write_bytes(finished.replace(b'"state": "finished"', b'"state": "running"'))
    posted: list[Message] = []
    watcher = BatchWatcher(batch.path, posted.append, use_inotify=False)
    read_old, release = threading.Event(), threading.Event()
    real_read_model = watch.read_model

    def held_read(path: Path, model: Any, **kwargs: Any) -> Any:
        value = real_read_model(path, model, **kwargs)
        if threading.current_thread().name == "slow" and model is LiveProgress:
            read_old.set()
            assert release.wait(30)
        return value

    monkeypatch.setattr(watch, "read_model", held_read)
    slow = threading.Thread(target=watcher.read_all, name="slow")
    slow.start()
    assert read_old.wait(30)  # it has read "running" and holds it
    tmp = live.with_name("live_progress.json.tmp")
    tmp.write_bytes(finished)
    os.replace(tmp, live)  # the engine's last write, a new file
    tick = threading.Thread(target=watcher.read_all, name="tick")
    tick.start()
    # Unserialized, the tick posts "finished" at once; serialized, it waits for the slow read.
    deadline = time.monotonic() + 1.0
    while "finished" not in _states(posted) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    slow.join(30)
    tick.join(30)
    for _ in range(3):  # the dashboard's ticks after that
        watcher.read_all()
    assert _states(posted)[-1] == "finished", _states(posted)


def test_a_read_posted_from_the_watch_thread_never_lands_after_a_later_read_of_the_ui_thread(tmp_path: Path) -> None:
    """The reads are serialized, but not the posts' ways into the screen's queue: the watch
    thread's post goes through the event loop (call_soon_threadsafe) and reaches the queue only
    when the loop next runs its callbacks, while the tick's (or the resume dialog's) read on the
    UI thread puts its message in at once. The watch thread read "running" and posted it; before
    the loop ran again, the UI thread read the engine's last write, "finished", and posted it;
    then "running" was queued after it and replaced it (LiveUpdated.can_replace), with the new
    stamp kept: the dashboard said "running" for good (a background resume, once in CI)."""
    out = tmp_path / "out"
    batch = make_batch(out, state=BatchState.RUNNING)
    live = batch / "live_progress.json"
    running = read_model(live, LiveProgress)

    async def body() -> None:
        async with dashboard_open(out, batch) as (pilot, screen):
            assert screen.live is not None and screen.live.state == BatchState.RUNNING
            watcher = BatchWatcher(batch, screen.post_message, use_inotify=False)
            # The watch thread reads "running" and posts it; the loop has not run since.
            thread = threading.Thread(target=watcher.read_all, kwargs={"force": True}, name="batchtui-watch")
            thread.start()
            thread.join(30)
            write_model(live, running.model_copy(update={"state": BatchState.FINISHED}))  # the last write
            watcher.read_all()  # the tick, on the UI thread: "finished", posted at once
            for _ in range(3):  # the ticks after that
                await settle(pilot)
                watcher.read_all()
            assert screen.live is not None and screen.live.state == BatchState.FINISHED, screen.live.state

    run(body)


def test_an_earlier_read_never_replaces_a_later_one_in_the_queue(tmp_path: Path) -> None:
    batch = _finished(tmp_path)
    live = read_model(batch.live_progress, LiveProgress)
    earlier, later = LiveUpdated(batch.path, live), LiveUpdated(batch.path, live)
    assert earlier.order < later.order
    assert earlier.can_replace(later)  # the later read is handled instead of the earlier one
    assert not later.can_replace(earlier)  # a thread's late post does not take the later one's place


@pytest.mark.skipif(not inotify.available(), reason="inotify: Linux only")
def test_the_engines_own_writes_wake_no_watcher_and_a_new_live_file_is_posted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify_events: list[inotify.Event]
) -> None:
    """With watchfiles on the folder, every write of the engine to items.db-wal and
    results.jsonl woke the dashboard's watcher thread (7,065 times in a run of 3,000 `true`).
    inotify reports the names of the folder made, moved in or removed, or closed after a write."""
    batch = _finished(tmp_path)
    inotify_events.clear()  # what the run's own control watcher read
    monkeypatch.setattr(watch, "POLL_S", 600.0)  # no read again by time: only the event posts it
    posted: list[Message] = []
    watcher = BatchWatcher(batch.path, posted.append)
    wal = (batch.path / "items.db-wal").open("ab")
    results = (batch.path / "results.jsonl").open("ab")
    watcher.start()
    try:
        wait_until(lambda: watcher._inotify is not None, timeout=5, what="the watch in place")
        for _ in range(200):
            wal.write(b"page" * 256)
            wal.flush()
            results.write(b'{"seq": 9}\n')
            results.flush()
        live = read_model(batch.live_progress, LiveProgress)
        live.state = BatchState.PAUSED
        before = len(posted)
        write_model(batch.live_progress, live, durable=False)  # atomically, as the engine does
        wait_until(lambda: "paused" in _states(posted[before:]), timeout=5, what="the new live file posted")
        assert not {"items.db-wal", "results.jsonl"} & {e.name for e in inotify_events}, inotify_events
    finally:
        watcher.stop()
        wal.close()
        results.close()
    assert not watcher._thread.is_alive()
