"""The item detail's copy menu: pick what to copy (key, path, log, command, error), by its letter
or with the arrows and enter. It only chooses: the detail copies (OSC 52, see App.copy_to_clipboard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.events import Key
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from batchtui.engine.fmt import clean

__all__ = ["CopyChoice", "CopyMenu"]


@dataclass(frozen=True, slots=True)
class CopyChoice:
    """One thing the menu offers: its letter, its name and the text copied."""

    letter: str
    name: str
    text: str


class CopyMenu(ModalScreen[CopyChoice | None]):
    """Choose what to copy; escape copies nothing."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="copy_cancel", tooltip="Copy nothing"),
    ]

    def __init__(self, choices: list[CopyChoice]) -> None:
        super().__init__()
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("Copy to the clipboard (OSC 52: works over SSH)", style="bold"), classes="dialog-title")
            options = []
            for choice in self.choices:
                label = Text(f"{choice.letter}  {choice.name:<8} ", style="bold")
                label.append(clean(choice.text.replace("\n", " ⏎ "), 48))  # a preview, one line, plain
                options.append(Option(label, id=choice.letter))
            yield OptionList(*options, id="copy-options")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._pick(event.option.id)

    def on_key(self, event: Key) -> None:
        if any(choice.letter == event.character for choice in self.choices):
            event.stop()
            self._pick(event.character)

    def _pick(self, letter: str | None) -> None:
        self.dismiss(next((c for c in self.choices if c.letter == letter), None))

    def action_cancel(self) -> None:
        self.dismiss(None)
