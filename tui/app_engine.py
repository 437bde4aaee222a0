"""The app's own engine: started on a thread of its own, its end, quitting, the hand-off.

:class:`EngineApp` is the part of :class:`~.app.BatchtuiApp` that runs an engine in the app
(``batchtui run`` / ``demo`` / ``resume`` on a terminal, the browser's and the dashboard's
resume). The engine lives on a thread (engine_thread.py) and writes the same files the dashboard
watches. It must not die with the terminal: when the terminal goes (SIGHUP, SIGTERM, a tty that
hung up; see hangup.py) the app ends, whatever state it is in, and hands the batch to a
background engine (``batchtui resume --headless`` in its own session) once the items running
here have ended (handover.py). A quit asks whether to stop the engine or hand it off, unless
its run has ended: then it waits for the engine to let go of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from typing import Any

from textual import on
from textual.worker import Worker, WorkerState

from batchtui.engine.batchdir import BatchLocked
from batchtui.engine.errors import EXIT_INTERRUPTED, EXIT_USAGE, BatchtuiError
from batchtui.engine.fmt import clean
from batchtui.engine.models import BatchState
from batchtui.engine.runner import BatchRunner, RunResult

from .engine_thread import start_engine_thread
from .handover import (
    HANDOFF_GRACE_S,
    HANDOFF_LOCK_WAIT_S,
    DrainFigure,
    engine_log,
    say,
    wait_drain_under_way,
    wait_for_handoff,
)
from .hangup import HandOff, TerminalWatch, silence_terminal, tty_gone
from .messages import EngineFinished
from .plain_app import PlainApp
from .screens.modals import QuitScreen

#: The engine in this app waits for its dashboard's first frame, at most this long: composing and
#: painting the first frame take the GIL for a few hundred ms, time the engine's first seconds
#: would otherwise lose (and the screen would come later).
FIRST_PAINT_WAIT_S = 1.0
#: How long a TUI whose terminal died may take to shut down before it just leaves.
DEAD_TERMINAL_EXIT_S = 5.0
#: A quit waiting for an ended run's engine to close the batch says so after this long.
CLOSING_SAID_S = 0.5
#: The states a run's end leaves (set by its last steps, before it closes the batch).
_ENDED: frozenset[BatchState] = frozenset({BatchState.FINISHED, BatchState.HALTED, BatchState.STOPPED})


class EngineApp(PlainApp[int]):
    """An app that may run one engine at a time, on a thread of its own; the return code is
    the CLI's exit code."""

    def __init__(self, runner: BatchRunner | None = None) -> None:
        super().__init__()
        self.runner = runner
        self.engine_result: RunResult | None = None
        self.engine_error: BaseException | None = None
        self.engine_worker: Worker[RunResult] | None = None
        # Set by the engine's own thread when runner.run returns: the event loop may be stuck
        # on a dead terminal, so nothing about the engine's end may depend on it.
        self._engine_done = threading.Event()
        self._engine_go = threading.Event()
        self._handoff_lock = threading.Lock()
        self._handoff_started = False
        self._handoff_done = threading.Event()
        self._drain_figure = DrainFigure()  # the running items the hand-off waits for, counted once
        self.handoff: HandOff | None = None
        self.terminal_watch: TerminalWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run_returned = threading.Event()

    # -- the engine in a worker thread ---------------------------------------------------------

    def _start_engine(self, runner: BatchRunner) -> None:
        _start_resource_tracker()
        self.runner = runner
        self.engine_result = None
        self.engine_error = None
        done = self._engine_done = threading.Event()
        go = self._engine_go = threading.Event()

        def ended(result: RunResult | None, error: BaseException | None) -> None:
            self.engine_result, self.engine_error = result, error

        finished = start_engine_thread(runner, go=go, go_wait=FIRST_PAINT_WAIT_S, done=done, on_end=ended)
        # An async worker awaits the engine's own thread (engine_thread.py says why not a thread worker).
        self.engine_worker = self.run_worker(
            finished, name=f"engine {runner.batch.batch_id}", group="engine", exit_on_error=False
        )

    def engine_may_start(self) -> None:
        self._engine_go.set()

    @property
    def engine_running(self) -> bool:
        return self.engine_worker is not None and not self._engine_done.is_set()

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        """The end of a worker the app runs (the engine's; the screens pass theirs to
        :meth:`handle_worker_error`)."""
        worker = event.worker
        if worker is not self.engine_worker:
            if event.state == WorkerState.ERROR:
                self.handle_worker_error(worker)
            return
        # The engine may end as the app shuts down, its screens already gone (CI, once): the
        # stack is read as it is, never through ``self.screen``, which raises when it is empty.
        stack = self.screen_stack
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR) and stack and isinstance(stack[-1], QuitScreen):
            stack[-1].dismiss(QuitScreen.ENDED)  # nothing left to stop or hand off: the quit goes on
        if event.state == WorkerState.SUCCESS:
            result = worker.result
            assert isinstance(result, RunResult)
            self.engine_result = result
            message = EngineFinished(result.batch.path, result.exit_code, result.state.value, result.halt_reason)
            for screen in self.screen_stack:
                screen.post_message(message)
            why = f": {result.halt_reason}" if result.halt_reason else ""
            self.notify(clean(f"engine finished: {result.state.value}{why}"), timeout=8 if why else 4)
        elif event.state == WorkerState.ERROR:
            error = worker.error
            self.notify(
                clean(f"the engine stopped with an error: {type(error).__name__}: {error}"),
                severity="error",
                timeout=30,
            )

    def handle_worker_error(self, worker: Worker[Any]) -> None:
        """The one handler of a failed thread worker. Every thread worker runs with
        ``exit_on_error=False``: an error in one (an unreadable output dir, a control file that
        cannot be written) is said in a notification, and the app, and an engine in it, go on."""
        error = worker.error
        if error is not None:
            self.notify(
                clean(f"{worker.name or 'a background task'} failed: {_said(error)}"), severity="error", timeout=10
            )

    # -- quitting and hand-off -----------------------------------------------------------------

    async def action_quit(self) -> None:
        if self.engine_running and self._engine_closing():
            await self._wait_engine_closed()
        if not self.engine_running:
            self._exit_after_engine()
            return

        async def chosen(choice: str | None) -> None:
            if choice == "stop":
                await self._stop_engine_and_exit()
            elif choice == "handoff":
                await self._handoff_and_exit()
            elif choice == QuitScreen.ENDED:
                self._exit_after_engine()

        self.push_screen(QuitScreen(), chosen)

    def _exit_after_engine(self) -> None:
        self.exit(self.engine_result.exit_code if self.engine_result else 0)

    def _engine_closing(self) -> bool:
        """The run is over (its state is final: the manifest says so, and the dashboard shows
        it) and the engine's thread only lets go of the batch: its pool, its store, its lock."""
        return self.runner is not None and self.runner.state in _ENDED

    async def _wait_engine_closed(self) -> None:
        """Quitting as a run ends: wait for its engine to close the batch instead of asking
        whether to stop or hand off an engine that has nothing left to run (a CI run once
        waited for ever on that question, the dashboard already showing FINISHED)."""
        said = False
        started = time.monotonic()
        while self.engine_running:
            if not said and time.monotonic() - started > CLOSING_SAID_S:
                self.notify("the batch has ended; its engine is closing it (finish hooks, files, lock)...")
                said = True
            await asyncio.sleep(0.02)

    async def _stop_engine_and_exit(self) -> None:
        assert self.runner is not None and self.engine_worker is not None
        self.notify("stopping: in-flight items get the grace period...")
        self.runner.request_stop("quit from the TUI")
        await self.engine_worker.wait()
        self.exit(EXIT_INTERRUPTED)

    async def _handoff_and_exit(self) -> None:
        """Background: the app ends at once; the hand-off (the running items end here first)
        goes on on a thread of its own, and the terminal says what it waits for (launch_tui)."""
        self._start_handoff("quit: the batch goes on in a background engine")
        self.exit(0)  # the exit code is the hand-off's (cli/watching.py _after_tui)

    def _start_handoff(self, reason: str, confirm_s: float = 15.0) -> None:
        if self._claim_handoff():  # not a daemon: the interpreter's exit waits for the hand-off
            threading.Thread(target=self._hand_off, args=(reason, confirm_s), name="batchtui-hand-off").start()

    def _claim_handoff(self) -> bool:
        with self._handoff_lock:
            started, self._handoff_started = self._handoff_started, True
        return not started

    def run(self, *args: Any, **kwargs: Any) -> int | None:
        try:
            return super().run(*args, **kwargs)
        finally:
            self._run_returned.set()

    def stop_engine_after_exit(self, timeout: float = 60.0, *, interrupted: bool = False) -> None:
        """After the app has exited for any reason: never leave the engine thread half-run.

        An engine still running here was not stopped by a choice in the app: the terminal died
        (a hand-off is under way, or starts now) or the app itself failed. It goes to a
        background engine rather than dying with the view; only an interrupt (Ctrl+C, SIGINT)
        stops it. Ends the terminal watch.
        """
        watch = self.terminal_watch
        gone = watch is not None and (watch.fired or tty_gone(watch.fd))
        try:
            if watch is not None and watch.fired:
                wait_for_handoff(watch.done, self.runner, None if gone else say, self._drain_figure)
            elif self.engine_running and self.runner is not None and not self._handoff_started:
                if interrupted:
                    self.runner.request_stop("the TUI was interrupted")
                    self._engine_done.wait(timeout)
                else:
                    if gone:
                        silence_terminal()
                    self._start_handoff("the TUI ended while its engine ran", confirm_s=5.0 if gone else 15.0)
            if self._handoff_started:  # a hand-off chosen in the app (q, b) is waited for too
                wait_for_handoff(self._handoff_done, self.runner, None if gone else say, self._drain_figure)
        finally:
            if watch is not None:
                watch.stop()

    def hand_off(self, reason: str = "handing the batch over", *, confirm_s: float = 15.0) -> HandOff | None:
        """Drain the in-process engine (nothing more starts; the running items end on their
        own: handover.py), then start a background engine on the batch.

        Returns what became of the batch (also kept as :attr:`handoff`), None when no engine of
        this app ran. Safe to call from any thread; runs once (a second caller waits for the
        first). The background engine waits up to HANDOFF_LOCK_WAIT_S for the lock; this
        waits ``confirm_s`` for it to take the lock. Every step is logged in engine.log: with
        the terminal gone, that is the only place anyone will read it.
        """
        if not self._claim_handoff():
            self._handoff_done.wait()
            return self.handoff
        return self._hand_off(reason, confirm_s)

    def _hand_off(self, reason: str, confirm_s: float) -> HandOff | None:
        from .launch import detach_engine

        try:
            runner = self.runner
            if runner is None or not self.engine_running:
                return None
            batch = runner.batch
            if runner.state == BatchState.STOPPING:
                # An operator's stop or a policy halt is under way: let it end as decided.
                self._engine_done.wait(HANDOFF_GRACE_S + runner.config.grace + 10)
                self.handoff = HandOff(note="the engine was already stopping: not handed over")
                engine_log(batch, f"{reason}; the engine was already stopping, so it was not handed over")
                return self.handoff
            # Nothing is killed: a running item cut short would be run (and paid for) again.
            runner.request_drain("handing the batch to a background engine")
            wait_drain_under_way(runner, self._engine_done)
            engine_log(
                batch,
                f"{reason}: the engine in the TUI (pid {os.getpid()}) starts nothing more;"
                f" {_drain_words(self._drain_figure.running(runner))}",
            )
            self._engine_done.wait()
            result = self.engine_result
            if result is not None and result.state in (BatchState.FINISHED, BatchState.HALTED):
                self.handoff = HandOff(note=f"the engine in the TUI ended the batch: {result.state.value}")
                engine_log(batch, f"not handed over: {self.handoff.note}")
                return self.handoff
            # An operator's pause goes with the batch: the background engine begins paused (as
            # the engine here ended it: a pause or unpause during the drain counts).
            paused = runner.paused
            try:
                pid = detach_engine(
                    batch, action="resume", lock_wait=HANDOFF_LOCK_WAIT_S, wait=confirm_s, paused=paused
                )
            except BatchLocked as exc:
                self.handoff = HandOff(error=f"the background engine could not take the batch: {exc}")
            except Exception as exc:
                self.handoff = HandOff(error=f"the background engine did not start: {type(exc).__name__}: {exc}")
            else:
                self.handoff = HandOff(pid=pid)
            if self.handoff.error:
                engine_log(batch, f"HAND-OFF FAILED: {self.handoff.error}")
            else:
                kept = " (paused, as the operator left it: `batchtui unpause` lets it go on)" if paused else ""
                engine_log(batch, f"handed the batch to a background engine, pid {self.handoff.pid}{kept}")
            return self.handoff
        finally:
            self._handoff_done.set()

    def _terminal_gone(self, reason: str) -> None:
        """The terminal went away (on TerminalWatch's thread): end, and hand the batch over.

        Never waits on the event loop: with the terminal gone it may be stuck on a write. The
        app is asked to exit at once; the hand-off waits for the running items (handover.py);
        if the app has not ended within DEAD_TERMINAL_EXIT_S after that, the process leaves.
        """
        watch = self.terminal_watch
        dead = tty_gone(watch.fd if watch is not None else None)
        if dead:
            silence_terminal()
        handing = self.runner is not None and self.engine_running
        code = self.engine_result.exit_code if self.engine_result is not None and not handing else 0
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.exit, code)
        if handing:
            outcome = self.hand_off(
                f"{reason}{' (the terminal is gone)' if dead else ''}", confirm_s=5.0 if dead else 15.0
            )
            code = EXIT_USAGE if outcome is not None and outcome.error else 0
        if self._run_returned.wait(DEAD_TERMINAL_EXIT_S if dead else 3 * DEAD_TERMINAL_EXIT_S):
            if dead:  # the rest (reports to /dev/null, the interpreter's exit) is bounded too
                threading.Thread(target=_exit_later, args=(code, 2 * DEAD_TERMINAL_EXIT_S), daemon=True).start()
            return
        os._exit(code)  # the app could not shut down: the batch is safe (handed over), leave


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker, handed the real stderr, before an engine starts
    in the app (on the app's thread, before the engine's own).

    The tracker is started by a process's first semaphore (a process pool's: ``--call`` runs
    on the process executor by default) and is handed ``sys.stderr.fileno()``. Inside the app
    sys.stderr is Textual's capture, whose ``fileno()`` is -1, and the start failed with
    "bad value(s) in fds_to_keep": an engine on the process executor never started in the app
    (a run, or a resume from the browser). It was started with every app, a Python process of
    13 MB whose start-up took CPU from the first paint of every `watch` and browser, which never
    need it. It carries no run's token (the orphan sweep spares it). Started once a process."""
    if sys.__stderr__ is None:
        return
    with contextlib.suppress(Exception):  # without it, a pool in the app fails as before, no worse
        from multiprocessing import resource_tracker

        with contextlib.redirect_stderr(sys.__stderr__):  # this thread's few ms: nothing prints
            resource_tracker.ensure_running()


def _said(error: BaseException) -> str:
    """An error in one line: a batchtui error says itself, any other says its type too."""
    return str(error) if isinstance(error, BatchtuiError) else f"{type(error).__name__}: {error}"


def _exit_later(code: int, delay: float) -> None:
    time.sleep(delay)
    os._exit(code)


def _drain_words(running: int) -> str:
    """What the hand-off waits for, in engine.log: the items running at the hand-off, if any."""
    if not running:
        return "no item was running at the hand-off: a background engine takes the batch now"
    items = (
        "the 1 item running at the hand-off ends"
        if running == 1
        else f"the {running} items running at the hand-off end"
    )
    return f"{items} first, then a background engine takes the batch"
