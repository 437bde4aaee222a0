"""TerminalWatch notices a dead terminal without the event loop; a failed hand-off is said."""

from __future__ import annotations

import os
import pty
import signal
import threading
import time
from pathlib import Path

import pytest

from batchtui.engine.batchdir import BatchLocked, LockInfo
from batchtui.engine.config import load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.processors import shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec
from batchtui.tui import launch
from batchtui.tui.app import BatchtuiApp
from batchtui.tui.cli.watching import _after_tui
from batchtui.tui.hangup import TerminalWatch, tty_gone

from .conftest import run


def _watch() -> tuple[TerminalWatch, list[str], threading.Event]:
    seen: list[str] = []
    called = threading.Event()

    def gone(reason: str) -> None:
        seen.append(reason)
        called.set()

    return TerminalWatch(gone, fd=-1), seen, called


def test_a_hung_up_tty_is_noticed_without_any_signal() -> None:
    master, slave = pty.openpty()
    seen: list[str] = []
    called = threading.Event()
    watch = TerminalWatch(lambda reason: (seen.append(reason), called.set()), fd=slave)
    try:
        watch.start()
        time.sleep(0.3)
        assert not called.is_set() and not tty_gone(slave)
        os.close(master)  # the terminal's far end goes: an SSH drop, a killed tmux
        assert called.wait(3), "the hang-up was not noticed"
        assert seen == ["the terminal hung up"] and tty_gone(slave)
        assert watch.wait(3)
    finally:
        watch.stop()
        os.close(slave)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_and_sigterm_call_back_once_and_the_old_handlers_come_back(sig: signal.Signals) -> None:
    old = signal.getsignal(sig)
    watch, seen, called = _watch()
    watch.fd = None
    watch.start()
    try:
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), sig)
        assert called.wait(3)
        time.sleep(0.1)
        assert seen == [f"{sig.name} received"]  # once, however many signals come
    finally:
        watch.stop()
    assert signal.getsignal(sig) == old


def test_a_sighup_ignored_when_the_app_started_stays_ignored() -> None:
    """Under nohup the watch leaves SIGHUP ignored (its tty poll still sees the terminal go)."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        watch, seen, _called = _watch()
        watch.fd = None
        watch.start()
        try:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # watched as before
        finally:
            watch.stop()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN and seen == []
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_hand_off_that_fails_is_said_never_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = tmp_path / "items.txt"
    # 2,000 items of 50 ms: the batch is still running when `b` asks for the hand-off, however
    # slow a loaded machine makes the pilot (with 200, a loaded run finished first: exit 0).
    items.write_text("".join(f"{i}\n" for i in range(2000)))
    config = load_config({"output_dir": str(tmp_path / "out"), "workers": 2, "grace": 2}, environ={})
    batch = create_batch(config, build_spec([str(items)]), shell_spec("sleep 0.05"))
    runner = BatchRunner(batch, config=config)

    def locked(*args: object, **kwargs: object) -> int:
        raise BatchLocked(batch.path, LockInfo(pid=4242, host="elsewhere", started_at="now"))

    monkeypatch.setattr(launch, "detach_engine", locked)

    async def body() -> BatchtuiApp:
        app = BatchtuiApp(output_dir=batch.path.parent, runner=runner, handle_hangup=False, strict_display=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.8)
            await pilot.press("q")
            await pilot.pause(0.2)
            await pilot.press("b")
            for _ in range(100):
                await pilot.pause(0.1)
                if not app.is_running:
                    break
        return app

    app = run(body)
    # The app ends at once (the running items finish before the hand-off): the exit code is the
    # CLI's, once launch_tui has waited for the hand-off.
    app.stop_engine_after_exit()
    assert _after_tui(app, app.return_value) == 2  # not 0: the batch was not handed over
    assert app.handoff is not None and app.handoff.pid is None
    assert app.handoff.error is not None and "pid 4242 on elsewhere" in app.handoff.error
    log = batch.engine_log.read_text()
    assert "HAND-OFF FAILED" in log and "pid 4242 on elsewhere" in log, log


def test_a_signal_while_the_main_thread_holds_threadings_lock_does_not_wait_for_it() -> None:
    """The handler started the hand-off's thread itself, which takes threading's lock of the
    threads starting: a SIGHUP that landed while the main thread held it (starting a worker
    thread) would have waited for the main thread, in the main thread. The handler runs here on
    another thread (which the old code blocked, instead of hanging the test) with the lock held."""
    watch, seen, called = _watch()
    watch.fd = None
    watch.start()
    go, handled = threading.Event(), threading.Event()

    def handler() -> None:
        go.wait()
        watch._on_signal(signal.SIGHUP, None)
        handled.set()

    thread = threading.Thread(target=handler)
    thread.start()
    try:
        with threading._active_limbo_lock:  # type: ignore[attr-defined]  # what Thread.start takes
            go.set()
            assert handled.wait(10), "the handler waited for threading's lock"
        thread.join()
        assert called.wait(10) and seen == ["SIGHUP received"]
    finally:
        watch.stop()
