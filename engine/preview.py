"""What an operator needs to choose a batch to resume, beyond its summary: its top error
groups, its runs (when each began, how it ended, what each resume changed) and the exact
commands that resume it.

The browser's preview pane shows it; it is built here, next to :mod:`.summary`, so the view
stays a view: the groups come from :class:`~.store.ItemQueries` (the same ids ``errors`` and
``--group`` use), the commands from :func:`~.batchdir.resume_command` (the text the CLI prints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from .basemodel import Model
from .batchdir import BatchDir, parse_iso, resume_command
from .errors import UserError
from .files import DamagedFile
from .models import ErrorGroup, HistoryEntry
from .store import ItemQueries, StoreError
from .summary import BatchSummary

#: Error groups a preview shows (the biggest first); ``batchtui errors`` lists them all.
TOP_GROUPS = 5


class RunLine(Model):
    """One run or resume of a batch, as the preview lists it."""

    model_config = ConfigDict(frozen=True)

    action: str  # "run" or "resume"
    started_at: str
    pid: int
    host: str
    #: How it ended: a state (``finished``, ``stopped``, ``halted: <reason>``), ``running`` for
    #: the run an engine holds now, ``interrupted`` for one that never wrote its end (killed).
    ended: str
    duration_s: float | None = None
    #: What this resume changed, as ``name value`` pairs (the operational overrides).
    changes: str = ""


class BatchPreview(Model):
    """The preview of one batch: its summary and what the summary leaves out."""

    model_config = ConfigDict(frozen=True)

    summary: BatchSummary
    error_groups: list[ErrorGroup] = []
    #: Failed items in all (the groups shown may be a few of more).
    failed: int = 0
    #: Why the groups could not be read (a damaged or missing items.db), else None.
    groups_problem: str | None = None
    runs: list[RunLine] = []
    #: ``batchtui resume ...``: None when there is nothing to resume or an engine runs it.
    resume_command: str | None = None
    #: ``batchtui resume ... --retry-failed``: None when no item failed or an engine runs it.
    retry_command: str | None = None


def describe_changes(overrides: dict[str, Any]) -> str:
    """A resume's overrides in one line: ``workers 8, timeout 30``."""
    return ", ".join(f"{name} {_value(value)}" for name, value in overrides.items())


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _runs(history: list[HistoryEntry], summary: BatchSummary) -> list[RunLine]:
    lines = []
    for index, entry in enumerate(history):
        last = index == len(history) - 1
        if entry.outcome:
            ended = entry.outcome
            if last and entry.outcome == "halted" and summary.halt_reason:
                ended = f"halted: {summary.halt_reason}"
        elif last and summary.engine is not None:
            ended = summary.state  # running, paused or stopping, as the engine says now
        else:
            ended = "interrupted"  # its engine never wrote its end: killed, or the host went down
        duration = None
        if entry.ended_at:
            try:
                duration = max(0.0, parse_iso(entry.ended_at) - parse_iso(entry.at))
            except ValueError:
                duration = None
        lines.append(
            RunLine(
                action=entry.action,
                started_at=entry.at,
                pid=entry.pid,
                host=entry.host,
                ended=ended,
                duration_s=duration,
                changes=describe_changes(entry.overrides),
            )
        )
    return lines


def preview(summary: BatchSummary, *, groups: int = TOP_GROUPS) -> BatchPreview:
    """The preview of the batch ``summary`` describes (never raises for a damaged or vanished
    batch: what cannot be read is left out, and said)."""
    if summary.error:  # damaged, or its folder is gone: nothing more to read
        return BatchPreview(summary=summary)
    bdir = BatchDir(Path(summary.path))
    try:
        history = bdir.read_manifest().history
    except (OSError, DamagedFile, UserError):
        history = []
    top: list[ErrorGroup] = []
    problem = None
    failed = summary.totals.failed
    if failed:
        try:
            with ItemQueries(bdir.items_db) as queries:
                top = queries.error_groups(limit=groups)
        except (StoreError, OSError) as exc:
            problem = str(exc)
    free = summary.engine is None
    return BatchPreview(
        summary=summary,
        error_groups=top,
        failed=failed,
        groups_problem=problem,
        runs=_runs(history, summary),
        resume_command=resume_command(bdir) if free and summary.resumable else None,
        retry_command=resume_command(bdir, retry_failed=True) if free and failed else None,
    )


__all__ = ["TOP_GROUPS", "BatchPreview", "RunLine", "describe_changes", "preview"]
