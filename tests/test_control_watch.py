"""The engine's control watcher wakes for control.jsonl alone (Linux: inotify, engine/inotify.py).

watchfiles watched the whole batch directory, and its thread woke for every write of the run's
own files: 7,065 times in a run of 3,000 `true` commands, on the cores the commands ran on. The
watcher asks inotify for the directory's entries made, moved in or removed, and for the writes
of control.jsonl; what the run writes to items.db-wal and results.jsonl never reaches it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from batchtui.engine import inotify
from batchtui.engine.control import CONTROL_FILE, ControlWatcher

from .conftest import wait_until

pytestmark = pytest.mark.skipif(not inotify.available(), reason="inotify: Linux only")


def _append(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def test_it_wakes_for_control_jsonl_and_not_for_the_runs_own_writes(
    tmp_path: Path, inotify_events: list[inotify.Event]
) -> None:
    pokes: list[int] = []
    wal = (tmp_path / "items.db-wal").open("ab")
    results = (tmp_path / "results.jsonl").open("ab")
    watcher = ControlWatcher(tmp_path, lambda: pokes.append(1), delay=0)
    watcher.start()
    try:
        assert watcher.watching.wait(5)
        for _ in range(200):  # a run's writes: the files stay open, as the store's and the log's do
            wal.write(b"page" * 256)
            wal.flush()
            results.write(b'{"seq": 1}\n')
            results.flush()
        control = tmp_path / CONTROL_FILE
        _append(control, b'{"op": "pause"}\n')  # made by the first command
        wait_until(lambda: pokes, timeout=5, what="a poke for the new control.jsonl")
        # Its events come after the 400 writes' in the one queue: every event read is of it.
        assert inotify_events and {e.name for e in inotify_events} <= {CONTROL_FILE, ""}, inotify_events
        done = len(pokes)
        _append(control, b'{"op": "resume"}\n')  # a command appended to the file watched
        wait_until(lambda: len(pokes) > done, timeout=5, what="a poke for an appended command")
        done = len(pokes)
        fresh = tmp_path / "control.tmp"
        fresh.write_bytes(b'{"op": "stop"}\n')
        os.replace(fresh, control)  # rewritten atomically: a new file in its place
        wait_until(lambda: len(pokes) > done, timeout=5, what="a poke for the replaced file")
        # A writer that keeps the new file open (`exec 3>>control.jsonl` in a script): its
        # writes close nothing, so only the watch on the file itself tells of them.
        held = os.open(control, os.O_WRONLY | os.O_APPEND)
        try:
            for op in (b"pause", b"resume"):
                done = len(pokes)
                os.write(held, b'{"op": "' + op + b'"}\n')
                wait_until(lambda n=done: len(pokes) > n, timeout=5, what="a poke for a write kept open")
        finally:
            os.close(held)
    finally:
        watcher.stop()
        wal.close()
        results.close()


def test_stop_ends_the_watcher_at_once(tmp_path: Path) -> None:
    watcher = ControlWatcher(tmp_path, lambda: None, delay=0)
    watcher.start()
    assert watcher.watching.wait(5)
    watcher.stop()  # it waits in poll() with no timeout: stop() wakes it
    assert not watcher._thread.is_alive()


def test_no_inotify_left_ends_the_watcher_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past max_user_instances (128 by default) inotify_init1 fails with EMFILE: the runner's
    loop still reads control.jsonl by itself (a stat each turn), so the watcher just ends."""
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))

    def refused() -> inotify.Inotify:
        raise OSError(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(inotify, "Inotify", refused)
    watcher = ControlWatcher(tmp_path, lambda: None, delay=0)
    watcher.start()
    watcher._thread.join(5)
    assert not watcher._thread.is_alive() and not watcher.watching.is_set()
    assert errors == []


def test_a_run_over_before_the_delay_never_makes_the_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Made at once, the watch (ctypes imported, inotify set up: about 15 ms on a thread) was
    on the way out of every short run: its end waited for the watcher's thread (a 1-item run
    spent 20 ms in ControlWatcher.stop)."""
    made: list[object] = []
    monkeypatch.setattr(inotify, "FolderWatch", lambda *args, **kw: made.append(args))
    watcher = ControlWatcher(tmp_path, lambda: None)  # the engine's delay
    watcher.start()
    watcher.stop()
    assert not watcher._thread.is_alive()
    assert made == []


def test_the_watchs_slow_end_overlaps_the_runs_final_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing an inotify instance that has watches waits for the kernel (an SRCU grace period:
    8-16 ms here, measured); the run's end waited for it before its final commit and files
    (28-30 ms from the last item to the exit of a 3,000-item run, 17-23 ms now). The watcher is
    told to stop as the loop ends and its thread is joined last: here, with an end made to take
    a second, the stop is asked before report.json is written, the store is closed before that
    end is over, and the thread is gone once the run returns."""
    from batchtui.engine import control, finishing, takeover
    from batchtui.engine.config import load_config
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.processors import shell_spec
    from batchtui.engine.runner import BatchRunner
    from batchtui.engine.sources import build_spec
    from batchtui.engine.store import ItemStore

    events: list[str] = []
    made: list[ControlWatcher] = []
    real_stop, real_close, real_write = inotify.FolderWatch.stop, inotify.Inotify.close, finishing.write_model
    real_store_close = ItemStore.close

    def noted_stop(self: inotify.FolderWatch) -> None:
        events.append("stop asked")
        real_stop(self)

    written = threading.Event()

    def slow_close(self: inotify.Inotify) -> None:
        # The kernel's wait, made long: it ends a second after report.json is written (or
        # after the first 10 s), so that what the run does meanwhile is in order before it.
        written.wait(10)
        threading.Event().wait(1.0)
        real_close(self)
        events.append("watch ended")

    def noted_write(path: Path, *args: object, **kw: object) -> None:
        real_write(path, *args, **kw)  # type: ignore[arg-type]
        if Path(path).name == "report.json":
            events.append("report written")
            written.set()

    def noted_store_close(self: ItemStore) -> None:
        real_store_close(self)
        events.append("store closed")

    def watcher_at_once(*args: object, **kw: object) -> ControlWatcher:
        watcher = control.ControlWatcher(*args, **{**kw, "delay": 0})  # type: ignore[arg-type]
        made.append(watcher)
        return watcher

    monkeypatch.setattr(inotify.FolderWatch, "stop", noted_stop)
    monkeypatch.setattr(inotify.Inotify, "close", slow_close)
    monkeypatch.setattr(finishing, "write_model", noted_write)
    monkeypatch.setattr(ItemStore, "close", noted_store_close)
    monkeypatch.setattr(takeover, "ControlWatcher", watcher_at_once)
    items = tmp_path / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(3)))
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec("true"))
    runner = BatchRunner(batch, config=config)
    loop = runner._loop

    def loop_once_watched() -> None:  # the run is short: it begins once the watch is there
        assert made and made[0].watching.wait(5), "the watch was never made"
        loop()

    monkeypatch.setattr(runner, "_loop", loop_once_watched)
    result = runner.run()
    assert result.counts.complete == 3
    asked, report = events.index("stop asked"), events.index("report written")
    assert asked < report and events[-1] == "watch ended" and events.count("watch ended") == 1, events
    assert "store closed" in events[report:], events  # the run's store, closed while the watch ended
    assert not made[0]._thread.is_alive()
