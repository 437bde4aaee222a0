"""Small modal screens: confirm, quit (stop or hand off), help."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no. ``y`` confirms, ``n`` or escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes", tooltip="Confirm"),
        Binding("n,escape", "answer(False)", "No", id="confirm_no", tooltip="Cancel"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.question, style="bold"), classes="dialog-title")
            if self.detail:
                yield Static(Text(self.detail), classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class QuitScreen(ModalScreen[str]):
    """Quitting while this app's engine runs: stop it (resumable), hand it off, or cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "choose('stop')", "Stop", id="quit_stop", tooltip="Stop the batch (resumable) and quit"),
        Binding(
            "b",
            "choose('handoff')",
            "Background",
            id="quit_handoff",
            tooltip="Hand the batch to a background engine and quit",
        ),
        Binding("escape,c", "choose('cancel')", "Cancel", id="quit_cancel", tooltip="Stay"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("The engine is running in this app.", style="bold"), classes="dialog-title")
            yield Static(
                Text(
                    "Stop it (in-flight items go back to pending; resume later), or keep it running"
                    " in a background engine (watch it again with `batchtui watch`)."
                ),
                classes="dialog-body",
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop (s)", id="stop", variant="error")
                yield Button("Background (b)", id="handoff", variant="success")
                yield Button("Cancel (esc)", id="cancel", variant="default")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


HELP = """\
Keys (all of them are in the command palette too: ctrl+p)

  p      pause / resume the engine        x      stop the batch (asks; y confirms)
  r      retry the selected failed item   R      retry every failed item of the error type
  s      skip the selected item           enter  item details (data, attempts, logs, result)
  /      filter items by key or error     esc    clear the filter
  1-5    all / running / failed / complete / skipped
  t      next theme                       b      all batches (the browser)
  ?      this help                        q      quit
  u      resume a stopped, halted or finished batch: workers, failure-rate limit, timeout,
         retry failed, here or in the background (it shows the `batchtui resume` command)

In the browser: enter opens a batch, r resumes it here, d deletes it (asks), w watches it.

Every view reads the batch directory: live_progress.json, manifest.json and items.db.
Commands go to the engine through control.jsonl; it acknowledges each one.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help_close", tooltip="Close the help"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(Text(HELP))

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
