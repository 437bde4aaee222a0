"""The batchtui Textual app: batch browser, live dashboard, item detail.

The app is a client of the batch directory like any other process. When it runs the engine
itself (``batchtui run`` / ``demo`` / ``resume`` on a terminal), the engine lives on a thread of
its own and writes the same files the dashboard watches: that part, with quitting and the
hand-off to a background engine when the terminal goes, is :class:`~.app_engine.EngineApp`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.command import Provider
from textual.screen import Screen

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.batches import BatchScope
from batchtui.engine.fmt import clean
from batchtui.engine.resume import ResumePlan, plan_resume
from batchtui.engine.runner import BatchRunner

from .app_engine import EngineApp
from .commands import ActionsProvider
from .glyphs import ASCII_CLASS, ascii_driver, ascii_terminal
from .hangup import TerminalWatch
from .keymap import binding_table, check_keymap, read_keymap, summary
from .keys import key_entries, key_words
from .screens.browser import BrowserScreen
from .screens.dashboard import DashboardScreen
from .screens.modals import HelpScreen
from .themes import load_themes, next_theme, theme_names, user_dir

#: How the help names the screen it was opened from.
_SCREEN_NAMES = {
    "DashboardScreen": "the dashboard",
    "BrowserScreen": "the batch browser",
    "ItemDetailScreen": "the item detail",
}


class BatchtuiApp(EngineApp):
    """One app for every view; the return code is the CLI's exit code."""

    CSS_PATH = "app.tcss"
    TITLE = "batchtui"
    ENABLE_COMMAND_PALETTE = True
    #: Every action once, with its key; greyed with why when it cannot apply now.
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = {ActionsProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Quit (asks when the engine runs in this app)"),
        Binding("t", "cycle_theme", "Theme", id="theme", tooltip="Switch to the next theme"),
        Binding("question_mark", "help", "Help", id="help", tooltip="Keys and what they do", key_display="?"),
    ]

    def __init__(
        self,
        *,
        output_dir: Path | BatchScope,
        batch: Path | None = None,
        runner: BatchRunner | None = None,
        theme: str | None = None,
        watch_files: bool = True,
        clock: Callable[[], float] | None = None,
        handle_hangup: bool = True,
        strict_display: bool = False,
        ascii_only: bool | None = None,
        read_only: bool = False,
        served: bool = False,
    ) -> None:
        super().__init__(runner)
        self.read_only = read_only
        self.served = served
        #: The terminal gets ASCII only (tui/glyphs.py; None: decided from the locale).
        self.ascii_only = ascii_terminal() if ascii_only is None else ascii_only
        if self.ascii_only:
            self.driver_class = ascii_driver(self.driver_class)
        self.output_dir = output_dir
        self.initial_batch = batch
        self.watch_files = watch_files
        self.clock: Callable[[], float] = clock or time.time
        self.handle_hangup = handle_hangup
        self.strict_display = strict_display
        self.requested_theme = theme
        self.theme_problems: list[str] = []
        self._names: list[str] = []

    # -- start-up ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.ascii_only:
            self.add_class(ASCII_CLASS)
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
        self._loop = asyncio.get_running_loop()
        if self.handle_hangup:
            self.terminal_watch = TerminalWatch(self._terminal_gone)
            self.terminal_watch.start()
        if self.runner is not None:
            self._start_engine(self.runner)
            self.push_screen(DashboardScreen(self.runner.batch.path, in_process=True))
        elif self.initial_batch is not None:
            self.push_screen(DashboardScreen(self.initial_batch))
        else:
            self.push_screen(BrowserScreen(self.output_dir))

    def get_key_display(self, binding: Binding) -> str:
        shown = super().get_key_display(binding)
        return key_words(shown) if self.ascii_only else shown

    def _load_keymap(self) -> None:
        """The user's keymap: what can be applied is, and what cannot is said in one toast (an
        id no binding has, a value that is not a key, a key another binding keeps...):
        none of it is dropped without a word (tui/keymap.py)."""
        path = user_dir().parent / "keymap.toml"
        keymap, problems = read_keymap(path)
        if keymap:
            table = binding_table()
            keymap, wrong = check_keymap(keymap, table)
            problems += wrong
            if "help" in keymap and "help_close" not in keymap:  # the key that opens the help closes it
                keymap["help_close"] = ",".join([*sorted(table["help_close"].keys), keymap["help"]])
            self.set_keymap(keymap)
        if problems:
            self.notify(clean(summary(path, problems)), severity="warning", timeout=15)

    def resume_batch(self, path: Path, plan: ResumePlan | None = None) -> None:
        """Resume a batch with its engine in this app (the browser's ``r``; the dashboard's
        resume dialog passes the plan it made with the operator's overrides, its lock held).

        The batch's dashboard, when it is the screen on top, is replaced by the one of the run
        (it shows the engine as running in this app)."""
        if self.served or self.read_only:  # its keys are refused; nothing else may start one either
            if plan is not None:
                plan.release()
            self.notify("no engine runs in a served app: resume in the background", severity="warning")
            return
        if self.engine_running:
            if plan is not None:
                plan.release()
            self.notify("an engine already runs in this app", severity="warning")
            return
        if plan is None:
            try:
                # The plan takes the lock here, not in the engine's thread: a batch another
                # engine runs is said at once, and its dashboard never says it runs in this app.
                plan = plan_resume(path.parent, BatchDir(path), lock_try=0.2)
            except Exception as exc:
                self.notify(clean(f"cannot resume: {exc}"), severity="error")
                return
        if plan.nothing_to_do:
            plan.release()
            self.notify(f"batch {plan.batch.batch_id} is finished; nothing to resume", severity="warning")
            return
        try:
            runner = plan.runner()
        except Exception as exc:
            plan.release()
            self.notify(clean(f"cannot resume: {exc}"), severity="error")
            return
        self._start_engine(runner)
        dashboard = DashboardScreen(path, in_process=True)
        current = self.screen
        if isinstance(current, DashboardScreen) and current.bdir.path == path:
            self.switch_screen(dashboard)
        else:
            self.push_screen(dashboard)

    def open_batch(self, path: Path) -> None:
        in_process = self.runner is not None and self.runner.batch.path == path and self.engine_running
        self.push_screen(DashboardScreen(path, in_process=in_process))

    def open_browser(self) -> None:
        # Back to the browser under this screen (b, enter, b... never piles screens up); a new
        # one lists what the app was started for (the registry too), not one batch's folder.
        below = [s for s in self.screen_stack[:-1] if isinstance(s, BrowserScreen)]
        if not below:
            self.push_screen(BrowserScreen(self.output_dir))
            return
        while self.screen is not below[-1]:
            self.pop_screen()

    # -- themes, help, the command palette -----------------------------------------------------

    def action_cycle_theme(self) -> None:
        self.theme = next_theme(self.theme, self._names or [self.theme])
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_help(self) -> None:
        """``?``: the keys of the screen on top (generated from its bindings), then the rest."""
        screen = self.screen
        self.push_screen(HelpScreen(key_entries(screen), _SCREEN_NAMES.get(type(screen).__name__, "")))

    def extra_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette's commands that no key of ``screen`` or the app has (tui/commands.py
        lists the keys' actions first and leaves out any of these that one of them is)."""
        yield SystemCommand("Batches", "All batches: the output dir's and every registered one", self.open_browser)
        for command in super().get_system_commands(screen):
            if command.title == "Theme":  # Textual's theme picker; ours (t) goes to the next one
                command = command._replace(title="Choose theme")
            yield command
