"""What the help dialog says below the keys: the panels, the figures and the error categories
(DESIGN section 5), and how it is laid out.

Each entry is one paragraph, never broken by hand: the dialog is as wide as the terminal allows,
and a line broken for one width breaks again mid-sentence at every other. Rich wraps each
paragraph at word boundaries to the width there is, under its term (a hanging indent), so a
term and what it means read as one block at 80 columns as at 200.
"""

from __future__ import annotations

from typing import Final

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

#: A term and what it means, in one paragraph; a term "" is a note of the section's own.
HelpEntry = tuple[str, str]

HELP_SECTIONS: Final[tuple[tuple[str, tuple[HelpEntry, ...]], ...]] = (
    (
        "The dashboard",
        (
            (
                "Status line",
                "Always on screen: the batch's state, progress, done/total, rate, ETA and the counts."
                " Counts, rate, ETA and memory are the engine's own committed figures, read from"
                " live_progress.json: every view (this one, `batchtui show`, the headless lines) shows the same.",
            ),
            (
                "Charts",
                "Throughput (items finished a second) and memory over the last two minutes, one bar a"
                " second, the newest on the right, each scaled from zero to its highest value shown (a flat"
                " row is a steady rate). A dashboard opened late draws the history the engine kept.",
            ),
            (
                "Errors",
                "The failed items grouped by error type and message (a group has a short id that"
                " `batchtui errors` and --group use); enter on a group shows its items.",
            ),
            (
                "In flight",
                "The items running now, the longest-running first (queued ones are handed out to a worker"
                " but not started).",
            ),
            ("Items", "Every item, read from items.db a screen at a time; the tabs filter by status."),
            (
                "Events",
                "State changes, new errors, warnings and what became of each command sent, each at the"
                " time it happened.",
            ),
        ),
    ),
    (
        "Figures",
        (
            (
                "Rate",
                "Items finished (complete or failed) a second over the last 30 s, up to now: it falls when"
                " nothing finishes.",
            ),
            (
                "ETA",
                "A range (ETA 4-6 min; one figure when tight) from the recent item durations, the workers"
                ' in use, items waiting out a retry backoff and the --rate ceiling. "stalled 1m30s": nothing'
                " has finished for much longer than usual (over 10 s and 3x the usual gap).",
            ),
            (
                "Memory",
                "The engine's resident memory (RSS) plus its item processes' (children); peak is the highest"
                " seen in this run; available is the system's free memory. --memory-limit-mb holds dispatch"
                " while the total is over the limit.",
            ),
        ),
    ),
    (
        "Error categories",
        (
            (
                "transient",
                "Timeouts, connection errors, exit 75 and --retry-exit-codes: retried with backoff up to"
                " --max-attempts, then failed.",
            ),
            ("item", "Any other exception or non-zero exit: failed at once; the batch goes on."),
            ("fatal", "batchtui.engine.Fatal and --fatal-exit-codes: the batch halts (resumable)."),
            ("timeout", "Ran past --timeout: killed, then retried as transient."),
            (
                "",
                "--max-failure-rate (after --min-items) and --max-cost halt the batch too; `batchtui resume`"
                " goes on where it stopped.",
            ),
        ),
    ),
    (
        "",
        (
            (
                "",
                "Everything shown is read from the batch directory (live_progress.json, manifest.json,"
                " items.db); commands go to the engine through control.jsonl, and it acknowledges each one.",
            ),
        ),
    ),
)


def help_renderable() -> RenderableType:
    """The sections: a bold heading, then each term with its paragraph wrapped beside it."""
    parts: list[RenderableType] = []
    for n, (heading, entries) in enumerate(HELP_SECTIONS):
        if heading:
            parts.append(Text(heading, style="bold"))
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, style="bold")
        table.add_column(ratio=1)
        notes = []
        for term, text in entries:
            if term:
                table.add_row(Text(term), Text(text))
            else:
                notes.append(Text(text))
        below = 1 if n + 1 < len(HELP_SECTIONS) else 0  # a blank line between sections
        parts.append(Padding(Group(table, *notes), (0, 0, below, 2 if heading else 0)))
    return Group(*parts)
