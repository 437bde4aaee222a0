"""Small modal screens: confirm, quit (stop or hand off), help."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from batchtui.engine.fmt import clean

from ..text import cut_middle

#: Cells a sample line of the confirm dialog may take (the dialog is 76 wide, 70 inside).
_SAMPLE_WIDTH = 66


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no. ``y`` confirms, ``n`` or escape cancels.

    ``samples`` are a few of the items the question is about, as ``(seq, key)``: each shown on
    its own line as plain text, cut in the middle, then how many more there are (of ``total``).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
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
            yield Static(Text(self.question, style="bold"), classes="dialog-title")
            if self.detail:
                yield Static(Text(self.detail), classes="dialog-body")
            if self.samples:
                yield Static(self._sample_lines(), classes="dialog-samples")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def _sample_lines(self) -> Text:
        seq_width = max(len(str(seq)) for seq, _ in self.samples)
        out = Text(no_wrap=True, overflow="ellipsis")
        for seq, key in self.samples:
            out.append(f"  #{seq:<{seq_width}} ", style="dim")
            out.append(cut_middle(clean(key), _SAMPLE_WIDTH - seq_width - 4) + "\n")
        more = self.total - len(self.samples)
        if more > 0:
            out.append(f"  … and {more:,} more", style="dim")
        else:
            out.rstrip()
        return out

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
  r      retry the marked items (or the   s      skip the marked items (or the
         item under the cursor)                  item under the cursor)
  +      run the marked items first       R      retry every failed item of the error group
  space  mark / unmark the item, go down  shift+up / shift+down   mark a range
  a      mark every item of the view      esc    clear the marks, then the filter
         (tab, filter and group)          enter  item details (data, attempts, logs, result)
  e      the errors table (enter on a     i      the items table
         group shows its items)           o      sort: seq, slowest first, most tries
  /      filter items by key or error     1-5    all / running / failed / complete / skipped
  t      next theme                       b      all batches (the browser)
  ?      this help                        q      quit
  u      resume a stopped, halted or finished batch: workers, failure-rate limit, timeout,
         retry failed, here or in the background (it shows the `batchtui resume` command)

r, s, + and R ask first, with the count and a few of the items; y confirms, n cancels.
A click on the seq, tries or duration header sorts by that column.

In the browser: enter watches the selected batch when an engine runs it, else opens its dashboard
(u there resumes it); r resumes it here at once, d deletes it (asks), p shows or hides the preview
(its top errors, its runs and what each resume changed, the command that resumes it), f5 reads
the batches again.

In the item detail: f follows the output live (f again stops), v shows both streams / stdout /
stderr, o opens the log in $PAGER (O the whole detail), c copies the key, path, log, command
or error (OSC 52: works over SSH; ctrl+c too, or the mouse selection), y the item as JSON.

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
