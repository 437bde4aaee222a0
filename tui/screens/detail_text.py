"""What the item detail's sections say, from the item's row and, while it is in flight, what
live_progress.json says it does now (:mod:`..flight`): pure functions of their arguments."""

from __future__ import annotations

import json
import os
from typing import Any

from rich.text import Text

from batchtui.engine.fmt import clean_block, decode_output, fmt_duration
from batchtui.engine.logs import AttemptLog
from batchtui.engine.store.queries import ItemRow

from ..flight import Flight
from ..text import cap_middle


def log_of(logs: list[AttemptLog], attempt: int) -> AttemptLog | None:
    return next((log for log in logs if log.attempt == attempt), None)


def command_ending(error_type: str | None) -> bool:
    """Whether the error is how the command itself ended (a code, a signal, a timeout)."""
    return error_type is not None and (error_type == "timeout" or error_type.startswith(("exit ", "signal ")))


def ending(row: ItemRow, flight: Flight | None = None, held: bool = True) -> str:
    """How the item's command ended: exit code, signal or timeout (or that it has not; ``held``:
    an engine holds the batch, else an item left 'processing' is one a dead engine ran)."""
    if flight is not None:  # a try under way: the error shown (if any) is an earlier try's
        return "queued: not started yet" if flight.queued else f"running (try {flight.attempt})"
    if row.status == "complete":
        return "exit 0"
    if row.error_type == "timeout":
        return "timed out: killed (its process group) past --timeout"
    if row.error_type and row.error_type.startswith("signal "):
        return f"killed by {row.error_type}"
    if command_ending(row.error_type):
        return str(row.error_type)
    if row.error_type:
        return f"did not run to an exit: {row.error_type}"
    if row.status == "processing":
        return "running" if held else "cut short: no engine runs the batch (a resume runs it again)"
    return "not run yet" if row.status == "pending" else row.status


def pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def title(row: ItemRow, flight: Flight | None, now: float) -> Text:
    """The detail's first line: seq, key, status and tries. An item in flight says what it
    does now (the store's 'processing' and its count of finished tries say neither): RUNNING
    on try N for so long, or QUEUED (handed out, waiting for a worker)."""
    text = Text()
    text.append(f"#{row.seq}  ", style="bold")
    text.append(cap_middle(row.key, 200))  # its start and its end: the end tells keys apart
    if flight is not None and not flight.queued:
        text.append(f"  [RUNNING]  try {flight.attempt}  {fmt_duration(flight.running_s(now))}", style="bold")
        return text
    status = "QUEUED" if flight is not None else row.status.upper()
    text.append(f"  [{status}]  attempts {row.attempts}", style="bold")
    if flight is not None:
        text.append("  waiting for a worker")
    elif row.duration_s is not None:
        text.append(f"  {row.duration_s:.3f}s")
    if row.cost is not None:
        text.append(f"  cost {row.cost:g}")
    return text


def flight_cells(flight: Flight, now: float) -> tuple[str, str, str, str]:
    """The Attempts table's row of the try under way: try, status, started, duration."""
    if flight.queued:
        return str(flight.attempt), "queued", "", ""
    return str(flight.attempt), "running", flight.started_at, fmt_duration(flight.running_s(now))


def escaped_copies(paths: list[str], folder: str) -> list[str]:
    """Copies of an item's logs, named as they are, in ``folder``, for a pager on the app's
    terminal: every control character but newlines shown escaped (``\\x1b``), as ``batchtui
    logs`` prints them to a terminal. A log is the item's untrusted output (an escape sequence can
    write the clipboard, retitle the window, answer into the terminal's input), and $PAGER may
    send it on as it is (``cat``, ``less -r``). A log that cannot be read is left out."""
    copies = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        copy = os.path.join(folder, os.path.basename(path))
        with open(copy, "w", encoding="utf-8") as fh:
            text = clean_block(decode_output(data))
            fh.write(text + "\n" if text else "")
        copies.append(copy)
    return copies


def steer_question(op: str, row: ItemRow | None) -> tuple[str, str] | str:
    """The confirmation of ``op`` (retry, skip) on this item, as (question, what it does), or
    why it does not apply."""
    if op == "retry":
        if row is None or row.status != "failed":
            return "only a failed item can be retried"
        return f"Retry item #{row.seq}?", f"It goes back to pending and runs again (try {row.attempts + 1})."
    if row is None or row.status not in ("pending", "processing", "failed"):
        return "this item cannot be skipped now"
    does = {
        "processing": "It is in flight: if it runs, its processes are killed, and it does not run again.",
        "pending": "It will not run.",
        "failed": "It stays as it is, skipped: a retry of the failed items leaves it out.",
    }[row.status]
    return f"Skip item #{row.seq}?", does


def error_text(row: ItemRow, shell: bool) -> str:
    """The item's error as the detail shows it (``shell``: it ran a command, whose stderr's tail
    is the error's detail)."""
    if not row.error_type:
        # A skipped item has no error, but says why it was skipped (the table shows it).
        return f"(none: {row.error_message})" if row.status == "skipped" and row.error_message else "(none)"
    head = f"{row.error_type} [{row.error_category}]: {row.error_message}"
    if shell and command_ending(row.error_type):
        return f"{head}\n\nstderr (tail):\n{row.error_detail or '(no stderr)'}"
    return f"{head}\n\n{row.error_detail or ''}".rstrip("\n")
