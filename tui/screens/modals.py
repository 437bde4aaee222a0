"""Small modal screens: confirm, quit (stop or hand off), help."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from batchtui.engine.fmt import clean

from ..keys import KeyEntry
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
            tooltip="Quit; the running items finish, then a background engine runs the rest",
        ),
        Binding("escape,c", "choose('cancel')", "Cancel", id="quit_cancel", tooltip="Stay"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
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


#: What the help says below the keys: the panels, the figures and the error categories
#: (DESIGN section 5). The keys themselves are generated from the screen's bindings.
HELP = """\
The dashboard
  The status line (always on screen): the batch's state, progress, done/total, rate, ETA and
  the counts. Counts, rate, ETA and memory are the engine's own committed figures, read from
  live_progress.json: every view (this one, `batchtui show`, the headless lines) shows the same.
  Charts: throughput (items finished a second) and memory over the last two minutes, one bar a
  second, the newest on the right, each scaled from zero to its highest value shown (a flat row
  is a steady rate). A dashboard opened late draws the history the engine kept.
  Errors: the failed items grouped by error type and message (a group has a short id that
  `batchtui errors` and --group use); enter on a group shows its items.
  In flight: the items running now, the longest-running first (queued ones are handed out to
  a worker but not started).
  Items: every item, read from items.db a screen at a time; the tabs filter by status.
  Events: state changes, new errors, warnings and what became of each command sent.

Figures
  Rate: items finished (complete or failed) a second over the last 30 s, up to now: it
  falls when nothing finishes.
  ETA: a range (ETA 4-6 min; one figure when tight) from the recent item durations, the
  workers in use, items waiting out a retry backoff and the --rate ceiling. "stalled 1m30s":
  nothing has finished for much longer than usual (over 10 s and 3x the usual gap).
  Memory: the engine's resident memory (RSS) plus its item processes' (children); peak is the
  highest seen in this run; available is the system's free memory. --memory-limit-mb holds
  dispatch while the total is over the limit.

Error categories
  transient  timeouts, connection errors, exit 75 and --retry-exit-codes: retried with backoff
             up to --max-attempts, then failed.
  item       any other exception or non-zero exit: failed at once; the batch goes on.
  fatal      batchtui.engine.Fatal and --fatal-exit-codes: the batch halts (resumable).
  timeout    ran past --timeout: killed, then retried as transient.
  --max-failure-rate (after --min-items) and --max-cost halt the batch too; `batchtui resume`
  goes on where it stopped.

Everything shown is read from the batch directory (live_progress.json, manifest.json,
items.db); commands go to the engine through control.jsonl, and it acknowledges each one.
"""


class HelpScreen(ModalScreen[None]):
    """The keys of the screen it was opened from (generated from its bindings, see
    tui/keys.py), then what the panels and figures mean. As wide as the terminal allows
    (at most 92 columns) and scrollable."""

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
            yield Static(Text(HELP), id="help-text")


def keys_table(entries: Sequence[KeyEntry]) -> Table:
    """Key, what it does and its longer explanation; one that does nothing now is dim."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column(ratio=1)
    shown: set[tuple[str, str]] = set()
    for entry in entries:
        if (entry.key_text, entry.title) in shown:
            continue  # the focused table's key that the screen binds too
        shown.add((entry.key_text, entry.title))
        what = Text(entry.title)
        if entry.tooltip and entry.tooltip != entry.title:
            what.append(f": {entry.tooltip}", style="dim" if entry.enabled else "")
        if not entry.enabled:
            what.append(" (not now)", style="italic")
        table.add_row(Text(entry.key_text), what, style="" if entry.enabled else "dim")
    table.add_row("", "")
    return table
