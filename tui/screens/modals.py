"""Small modal screens: confirm, quit (stop or hand off), help.

The confirm and quit dialogs are :class:`FittingDialog`: their text scrolls above the buttons
when the terminal is too small for it, so no line is cut off at any size (80x24 is the size the
layout is made for, not a floor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, TypeVar

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Static

from batchtui.engine.fmt import clean

from ..keys import KeyEntry, label_buttons
from ..text import cut_middle
from .help_text import help_renderable

#: The width of a dialog (app.tcss's .dialog), at most the terminal's.
_DIALOG_WIDTH = 76
#: Cells a sample line of the confirm dialog may take (the dialog is 76 wide, 70 inside).
_SAMPLE_WIDTH = 66

#: Under this terminal size a dialog is compact: no padding, one-line buttons, the whole height.
_ROOMY = (80, 24)

_T = TypeVar("_T")


class DialogText(VerticalScroll, can_focus=False):
    """A dialog's text above its buttons: it takes the height the buttons leave and scrolls
    (arrow keys, the wheel) when it is taller. Not focusable, so the first button keeps the
    focus the dialog always gave it."""


class FittingDialog(ModalScreen[_T]):
    """A dialog of a :class:`DialogText` and a row of buttons (docked under it) that fits any
    terminal: compact below 80x24 (one-line buttons, stacked when a row of them is too wide),
    its text scrolled rather than cut."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "scroll_text(-1)", "Scroll up", id="dialog_scroll_up", tooltip="Scroll the text", show=False),
        Binding(
            "down", "scroll_text(1)", "Scroll down", id="dialog_scroll_down", tooltip="Scroll the text", show=False
        ),
    ]

    #: Its buttons that say a key: ``{button id: (binding id, label)}`` (see keys.label_buttons).
    BUTTON_KEYS: ClassVar[dict[str, tuple[str, str]]] = {}

    def on_mount(self) -> None:
        label_buttons(self, self.BUTTON_KEYS)

    def on_resize(self, _event: events.Resize) -> None:
        width, height = _ROOMY
        compact = self.size.width < width or self.size.height < height
        self.set_class(compact, "-compact")
        buttons = list(self.query(Button))
        for button in buttons:
            button.compact = compact
        # A compact button is its label and a cell each side, a cell apart; inside the border and
        # the padding of a cell a side.
        row = sum(cell_len(str(button.label)) + 3 for button in buttons) - 1
        self.set_class(compact and row > min(self.size.width, _DIALOG_WIDTH) - 4, "-stacked")

    def action_scroll_text(self, lines: int) -> None:
        self.query_one(DialogText).scroll_relative(y=lines, animate=False)


class SampleLines(Widget):
    """The confirm dialog's sample items, one a line (``#seq key``, the key cut in the middle
    to the width there is, at most :data:`_SAMPLE_WIDTH`), then how many more of ``total``."""

    DEFAULT_CSS = "SampleLines { height: auto; }"

    def __init__(self, samples: Sequence[tuple[int, str]], total: int, *, classes: str = "") -> None:
        super().__init__(classes=classes)
        self.samples = list(samples)
        self.total = total

    def render(self) -> Text:
        width = min(self.size.width or _SAMPLE_WIDTH, _SAMPLE_WIDTH)
        seq_width = max(len(str(seq)) for seq, _ in self.samples)
        out = Text(no_wrap=True, overflow="ellipsis")
        for seq, key in self.samples:
            out.append(f"  #{seq:<{seq_width}} ", style="dim")
            out.append(cut_middle(clean(key), width - seq_width - 4) + "\n")
        more = self.total - len(self.samples)
        if more > 0:
            out.append(f"  … and {more:,} more", style="dim")
        else:
            out.rstrip()
        return out


class ConfirmScreen(FittingDialog[bool]):
    """Yes/no. ``y`` confirms, ``n`` or escape cancels.

    ``samples`` are a few of the items the question is about, as ``(seq, key)``: each shown on
    its own line as plain text, cut in the middle, then how many more there are (of ``total``).
    No has the focus: a stray enter cancels (``y`` is the one way to confirm).
    """

    AUTO_FOCUS: ClassVar[str | None] = "#no"

    BUTTON_KEYS: ClassVar[dict[str, tuple[str, str]]] = {"yes": ("confirm_yes", "Yes"), "no": ("confirm_no", "No")}
    BINDINGS: ClassVar[list[BindingType]] = [
        *FittingDialog.BINDINGS,
        Binding("y", "answer(True)", "Yes", id="confirm_yes", tooltip="Confirm"),
        Binding("n,escape", "answer(False)", "No", id="confirm_no", tooltip="Cancel"),
    ]

    def __init__(
        self, question: str, detail: str = "", *, samples: Sequence[tuple[int, str]] = (), total: int = 0
    ) -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.samples = list(samples)
        self.total = total

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            with DialogText(classes="dialog-text"):
                yield Static(Text(self.question, style="bold"), classes="dialog-title")
                if self.detail:
                    yield Static(Text(self.detail), classes="dialog-body")
                if self.samples:
                    yield SampleLines(self.samples, self.total, classes="dialog-samples")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class QuitScreen(FittingDialog[str]):
    """Quitting while this app's engine runs: stop it (resumable), hand it off, or cancel.
    Cancel has the focus: a stray enter stays (stop and hand-off have their keys)."""

    AUTO_FOCUS: ClassVar[str | None] = "#cancel"
    #: What the dialog gives when the engine ended while it was shown: the quit goes on.
    ENDED: ClassVar[str] = "ended"

    BUTTON_KEYS: ClassVar[dict[str, tuple[str, str]]] = {
        "stop": ("quit_stop", "Stop"),
        "handoff": ("quit_handoff", "Background"),
        "cancel": ("quit_cancel", "Cancel"),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        *FittingDialog.BINDINGS,
        Binding("s", "choose('stop')", "Stop", id="quit_stop", tooltip="Stop the batch (resumable) and quit"),
        Binding(
            "b",
            "choose('handoff')",
            "Background",
            id="quit_handoff",
            tooltip="Quit; the running items finish, then a background engine runs the rest",
        ),
        Binding("escape,c", "choose('cancel')", "Cancel", id="quit_cancel", tooltip="Stay"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            with DialogText(classes="dialog-text"):
                yield Static(Text("The engine is running in this app.", style="bold"), classes="dialog-title")
                yield Static(
                    Text(
                        "Stop it (in-flight items go back to pending; resume later), or keep it running"
                        " in a background engine (watch it again with `batchtui watch`): nothing more"
                        " starts here, the running items finish here first (the terminal waits for them;"
                        " Ctrl-C there stops them, and they run again), then the background engine runs"
                        " the rest."
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


class HelpScreen(ModalScreen[None]):
    """The keys of the screen it was opened from (generated from its bindings, see
    tui/keys.py), then what the panels and figures mean (.help_text). As wide as the terminal
    allows (at most 92 columns), every line wrapped at word boundaries to it, and scrollable."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help_close", tooltip="Close the help"),
    ]

    def __init__(self, entries: Sequence[KeyEntry] = (), where: str = "") -> None:
        super().__init__()
        self.entries = list(entries)
        self.where = where

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help", id="help-scroll"):
            title = f"Keys: {self.where}" if self.where else "Keys"
            yield Static(Text(f"{title} (every one is in the command palette too: ctrl+p)", style="bold"))
            yield Static(keys_table(self.entries), id="help-keys")
            yield Static(help_renderable(), id="help-text")


def keys_table(entries: Sequence[KeyEntry]) -> Table:
    """Key, what it does and its longer explanation; one that does nothing now is dim."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column(ratio=1)
    for entry in listed_keys(entries):
        table.add_row(Text(entry.key_text), key_description(entry), style="" if entry.enabled else "dim")
    table.add_row("", "")
    return table


def listed_keys(entries: Sequence[KeyEntry]) -> list[KeyEntry]:
    """The entries the help lists: a key and title once (the focused table's key that the
    screen binds too is the screen's)."""
    listed: dict[tuple[str, str], KeyEntry] = {}
    for entry in entries:
        listed.setdefault((entry.key_text, entry.title), entry)
    return list(listed.values())


def key_description(entry: KeyEntry) -> Text:
    """What a key does, as its row of the help says it (wrapped at word boundaries there)."""
    what = Text(entry.title)
    if entry.tooltip and entry.tooltip != entry.title:
        what.append(f": {entry.tooltip}", style="dim" if entry.enabled else "")
    if not entry.enabled:
        what.append(" (not now)", style="italic")
    return what
