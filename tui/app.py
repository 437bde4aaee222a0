"""The batchtui Textual app: batch browser, live dashboard, item detail.

The app is a client of the batch directory like any other process. When it runs the engine
itself (``batchtui run`` / ``demo`` / ``resume`` on a terminal), the engine lives in a thread
worker and writes the same files the dashboard watches. The engine must not die with the
terminal: on SIGHUP (an SSH drop) the app stops it quickly and hands the batch to a background
engine (``batchtui resume --headless`` in its own session) before exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.runner import EXIT_INTERRUPTED, BatchRunner, RunResult

from .messages import EngineFinished
from .screens.browser import BrowserScreen
from .screens.dashboard import DashboardScreen
from .screens.modals import HelpScreen, QuitScreen
from .text import clean
from .themes import load_themes, next_theme, theme_names, user_dir

HANDOFF_GRACE_S = 3.0


class BatchtuiApp(App[int]):
    """One app for every view; the return code is the CLI's exit code."""

    CSS_PATH = "app.tcss"
    TITLE = "batchtui"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Quit (asks when the engine runs in this app)"),
        Binding("t", "cycle_theme", "Theme", id="theme", tooltip="Switch to the next theme"),
        Binding("question_mark", "help", "Help", id="help", tooltip="Keys and what they do", key_display="?"),
    ]

    def __init__(
        self,
        *,
        output_dir: Path,
        batch: Path | None = None,
        runner: BatchRunner | None = None,
        theme: str | None = None,
        watch_files: bool = True,
        clock: Callable[[], float] | None = None,
        handle_hangup: bool = True,
        strict_display: bool = False,
    ) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.initial_batch = batch
        self.runner = runner
        self.watch_files = watch_files
        self.clock: Callable[[], float] = clock or time.time
        self.handle_hangup = handle_hangup
        self.strict_display = strict_display
        self.requested_theme = theme
        self.engine_result: RunResult | None = None
        self.engine_worker: Worker[RunResult] | None = None
        self.theme_problems: list[str] = []
        self._names: list[str] = []
        self._handed_off = False

    # -- start-up ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        themes, problems = load_themes()
        for theme in themes.values():
            self.register_theme(theme)
        self._names = theme_names(themes)
        self.theme_problems = problems
        wanted = self.requested_theme or "dark"
        if wanted not in themes:
            self.notify(clean(f"no theme {wanted!r}; have {', '.join(self._names)}"), severity="warning")
            wanted = "dark"
        self.theme = wanted
        for problem in problems:
            self.notify(clean(problem), severity="warning", timeout=8)
        self._load_keymap()
        if self.handle_hangup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hangup)
        if self.runner is not None:
            self._start_engine(self.runner)
            self.push_screen(DashboardScreen(self.runner.batch.path, in_process=True))
        elif self.initial_batch is not None:
            self.push_screen(DashboardScreen(self.initial_batch))
        else:
            self.push_screen(BrowserScreen(self.output_dir))

    def _load_keymap(self) -> None:
        """User key overrides: {binding id = "keys"} in $XDG_CONFIG_HOME/batchtui/keymap.toml."""
        path = user_dir().parent / "keymap.toml"
        if not path.is_file():
            return
        try:
            data = tomllib.loads(path.read_text())
            keymap = {str(k): str(v) for k, v in data.get("keymap", data).items()}
        except (OSError, tomllib.TOMLDecodeError, AttributeError) as exc:
            self.notify(clean(f"{path}: {exc}"), severity="warning")
            return
        self.set_keymap(keymap)

    # -- the engine in a worker thread ---------------------------------------------------------

    def _start_engine(self, runner: BatchRunner) -> None:
        self.runner = runner
        self.engine_result = None
        self.engine_worker = self.run_worker(
            runner.run, name=f"engine {runner.batch.batch_id}", group="engine", thread=True, exit_on_error=False
        )

    @property
    def engine_running(self) -> bool:
        return self.engine_worker is not None and self.engine_worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker is not self.engine_worker:
            return
        if event.state == WorkerState.SUCCESS:
            result = worker.result
            assert isinstance(result, RunResult)
            self.engine_result = result
            message = EngineFinished(result.batch.path, result.exit_code, result.state.value)
            for screen in self.screen_stack:
                screen.post_message(message)
            self.notify(f"engine finished: {result.state.value}", timeout=4)
        elif event.state == WorkerState.ERROR:
            error = worker.error
            self.notify(
                clean(f"the engine stopped with an error: {type(error).__name__}: {error}"),
                severity="error",
                timeout=30,
            )

    def resume_batch(self, path: Path) -> None:
        """Resume a batch with its engine in this app (the browser's ``r``)."""
        if self.engine_running:
            self.notify("an engine already runs in this app", severity="warning")
            return
        try:
            runner = BatchRunner(BatchDir(path), action="resume")
        except Exception as exc:
            self.notify(clean(f"cannot resume: {exc}"), severity="error")
            return
        self._start_engine(runner)
        self.push_screen(DashboardScreen(path, in_process=True))

    def open_batch(self, path: Path) -> None:
        in_process = self.runner is not None and self.runner.batch.path == path and self.engine_running
        self.push_screen(DashboardScreen(path, in_process=in_process))

    # -- quitting and hand-off -----------------------------------------------------------------

    async def action_quit(self) -> None:
        if not self.engine_running:
            self.exit(self.engine_result.exit_code if self.engine_result else 0)
            return

        async def chosen(choice: str | None) -> None:
            if choice == "stop":
                await self._stop_engine_and_exit()
            elif choice == "handoff":
                await self._handoff_and_exit()

        self.push_screen(QuitScreen(), chosen)

    async def _stop_engine_and_exit(self) -> None:
        assert self.runner is not None and self.engine_worker is not None
        self.notify("stopping: in-flight items get the grace period...")
        self.runner.request_stop("quit from the TUI")
        await self.engine_worker.wait()
        self.exit(EXIT_INTERRUPTED)

    async def _handoff_and_exit(self) -> None:
        await asyncio.to_thread(self.hand_off)
        self.exit(0)

    def stop_engine_after_exit(self, timeout: float = 60.0) -> None:
        """After the app has exited for any reason: never leave the engine thread half-run."""
        if self.runner is not None and self.engine_worker is not None and self.engine_running:
            self.runner.request_stop("the TUI exited")
            deadline = time.monotonic() + timeout
            while self.engine_running and time.monotonic() < deadline:
                time.sleep(0.05)

    def hand_off(self) -> int | None:
        """Stop the in-process engine quickly, then start a background engine on the batch.

        Returns the background engine's pid. Safe to call from any thread; runs once.
        """
        from .launch import detach_engine

        if self._handed_off or self.runner is None or not self.engine_running:
            return None
        self._handed_off = True
        runner = self.runner
        runner.request_stop("handing the batch to a background engine", grace=HANDOFF_GRACE_S)
        done = threading.Event()
        worker = self.engine_worker
        deadline = time.monotonic() + HANDOFF_GRACE_S + 10
        while worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
            if time.monotonic() > deadline:
                break
            done.wait(0.05)
        try:
            return detach_engine(runner.batch, action="resume")
        except Exception:
            return None

    def _on_hangup(self) -> None:
        """SIGHUP: the terminal is gone. Hand the batch off, then leave."""
        if self.engine_running:
            loop = asyncio.get_running_loop()
            thread = threading.Thread(target=self._hangup_thread, args=(loop,), name="batchtui-handoff")
            thread.start()
        else:
            self.exit(0)

    def _hangup_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        self.hand_off()
        # Never wait on the event loop here: with the terminal gone it may not answer.
        with contextlib.suppress(Exception):
            loop.call_soon_threadsafe(self.exit, 0)
        time.sleep(3)
        os._exit(0)  # the app could not shut down on a dead terminal: the batch is safe, leave

    # -- themes, help, the command palette -----------------------------------------------------

    def action_cycle_theme(self) -> None:
        self.theme = next_theme(self.theme, self._names or [self.theme])
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # Every key binding of the current screen is in the palette too (when it applies now).
        for binding in _bindings(screen):
            action, _, _params = binding.action.partition("(")
            if binding.description and screen.check_action(action, ()) is True:
                yield SystemCommand(
                    binding.description,
                    binding.tooltip or binding.description,
                    partial(self.run_action, f"screen.{binding.action}"),
                )
        yield SystemCommand("Next theme", "Switch to the next theme (t)", self.action_cycle_theme)
        yield SystemCommand("Help", "Keys and what they do (?)", self.action_help)
        yield SystemCommand(
            "Batches", "All batches in the output dir", partial(self.push_screen, BrowserScreen(self.output_dir))
        )
        yield from super().get_system_commands(screen)


def _bindings(screen: Screen[Any]) -> list[Binding]:
    out = []
    for item in getattr(screen, "BINDINGS", []):
        if isinstance(item, Binding):
            out.append(item)
    return out
