"""The dashboard's keys: what each does and its footer label (the help dialog and the command
palette list them from here, with the user's keymap applied: tui/keys.py)."""

from __future__ import annotations

from textual.binding import Binding, BindingType

from ..keys import explained

__all__ = ["DASHBOARD_BINDINGS"]

_BINDINGS: list[BindingType] = [
    Binding("p", "toggle_pause", "Pause/Resume", id="pause", tooltip="Pause dispatch, or let it go on"),
    Binding("r", "bulk('retry')", "Retry", id="retry", tooltip="Retry the marked items (or the one under the cursor)"),
    Binding(
        "R",
        "retry_group",
        "Retry group",
        id="retry_type",
        tooltip="Retry every failed item of the error group (errors table)",
    ),
    Binding(
        "s",
        "bulk('skip')",
        "Skip",
        id="skip",
        tooltip="Skip the marked items, or the one under the cursor (kills running ones)",
    ),
    Binding(
        "plus",
        "bulk('prioritize')",
        "Run first",
        id="prioritize",
        key_display="+",
        tooltip="Move the marked items (or the one under the cursor) to the front of the queue",
    ),
    Binding("a", "mark_all", "Mark all", id="mark_all", tooltip="Mark every item of the view (tab, filter, group)"),
    Binding("space", "mark", "Mark", id="mark", show=False, tooltip="Mark or unmark the item under the cursor"),
    Binding("shift+down", "mark_range(1)", "Mark down", id="mark_down", show=False, tooltip="Extend the marks down"),
    Binding("shift+up", "mark_range(-1)", "Mark up", id="mark_up", show=False, tooltip="Extend the marks up"),
    Binding("o", "sort", "Sort", id="sort", tooltip="Sort the items: seq, slowest first, most tries first"),
    Binding("e", "focus_errors", "Errors", id="focus_errors", show=False, tooltip="Go to the errors table"),
    Binding("i", "focus_items", "Items", id="focus_items", show=False, tooltip="Go to the items table"),
    Binding("x", "stop", "Stop", id="stop", tooltip="Stop the batch gracefully (resumable)"),
    Binding("enter", "details", "Details", id="details", tooltip="Open the selected item", show=False),
    # A key that opens a field or a dialog is a priority binding: it runs as the app takes the key
    # in, before the keys typed after it, and the field has the focus for them ("/retry" is a
    # filter, never a retry; "u8" is 8 workers). Typed in the filter they are text: Textual leaves
    # out a binding whose key the focused field takes as a character, but has no character for
    # "slash", so "/" is left out there by dashboard_gates.py.
    Binding("slash", "filter", "Filter", id="filter", priority=True, tooltip="Filter the items by key or error text"),
    Binding("1", "tab('tab-all')", "All", id="tab1", show=False),
    Binding("2", "tab('tab-processing')", "In flight", id="tab2", show=False),
    Binding("3", "tab('tab-failed')", "Failed", id="tab3", show=False),
    Binding("4", "tab('tab-complete')", "Complete", id="tab4", show=False),
    Binding("5", "tab('tab-skipped')", "Skipped", id="tab5", show=False),
    Binding(
        "escape", "clear_filter", "Clear", id="clear_filter", show=False, tooltip="Clear the marks, then the filter"
    ),
    Binding(
        "l",
        "events",
        "Events",
        id="events",
        show=False,
        tooltip="The event log on the whole screen, to read back (l or escape: back)",
    ),
    Binding("b", "browser", "Batches", id="browser", tooltip="All batches in the output dir"),
    Binding(
        "u",
        "resume_batch",
        "Resume batch",
        id="resume_batch",
        priority=True,  # its dialog has the focus for the keys typed right after u (see "/")
        tooltip="Resume this batch: workers, failure-rate limit, timeout, retry failed, here or in the background",
    ),
]

#: Greyed out while no engine runs the batch, or it stops: pressed then, they say why.
DASHBOARD_BINDINGS = explained(_BINDINGS, ("toggle_pause", "stop"))
