"""How a run ends on the terminal: the batch summary (also `show`'s head), its ``--json`` form,
the line of a detached engine, and a headless run from its first progress line to its summary.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import click

from batchtui.engine.batchdir import BatchDir, BatchLock, resume_command
from batchtui.engine.fmt import clean, fmt_duration, fmt_percent, shell_line
from batchtui.engine.models import BatchState, Counts, LiveCounts, LiveProgress, Manifest
from batchtui.engine.summary import BatchSummary, summarize

from .output import echo_json, plain, read_json
from .progress import ProgressPrinter

if TYPE_CHECKING:
    from batchtui.engine.runner import BatchRunner, RunResult


def _in_flight_split(counts: Counts) -> str:
    """How many of the items in flight run, how many wait in a worker's queue and how many wait
    out a retry's backoff, as the live file tells it (an item is 'processing' from its hand-out
    until it ends, so the total can exceed the workers); nothing when the counts have no split."""
    if not isinstance(counts, LiveCounts) or not (counts.running or counts.queued or counts.retrying):
        return ""
    # 'processing' is the committed count (the store's, at most one group commit behind) and the
    # split is the workers' of the moment: an item handed out since the last commit showed as
    # "In flight: 15 (0 running, 16 queued)". The split is told within the committed count.
    left = counts.processing
    running = min(counts.running, left)
    queued = min(counts.queued, left - running)
    waiting = min(counts.retrying, left - running - queued)
    retrying = f", {waiting} waiting to retry" if waiting else ""
    return f" ({running} running, {queued} queued{retrying})"


def _cpu_text(report: dict[str, Any] | None) -> str:
    """report.json's CPU of the last run, ``engine process 1.8s, child processes 4.9s (last run)``;
    empty for the report of an older engine (it has none) or a damaged one."""
    engine = _seconds(report.get("engine_cpu_s")) if report else None
    children = _seconds(report.get("children_cpu_s")) if report else None
    if engine is None or children is None or not (engine or children):
        return ""
    mine, theirs = fmt_duration(engine, fine=True), fmt_duration(children, fine=True)
    return f"engine process {mine}, child processes {theirs} (last run)"


def _seconds(value: object) -> float | None:
    """A count of seconds read from a file: a number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)  # an integer past a float's range (JSON allows one) raises
    except OverflowError:
        return None
    return seconds if 0 <= seconds < math.inf else None


def print_summary(
    batch: BatchDir,
    manifest: Manifest,
    counts: Counts,
    live: LiveProgress | None,
    report: dict[str, Any] | None = None,
    *,
    summary: BatchSummary,
    state: str | None = None,
) -> None:
    """The end-of-run summary (and `show`'s); ``state``: the state as shown, when it is not the
    manifest's (an interrupted batch, a live engine's). Its time and rate are ``summary``'s,
    the batch's over all its runs, as ``ls``, report.json and the dashboard show them."""
    done = counts.complete + counts.failed
    # Nothing finished yet (an empty source, a batch that has not started) is no rate at all:
    # "100.0%" there would claim successes that never happened.
    success = fmt_percent(100.0 * counts.complete / done, 1) if done else "— (nothing finished)"
    bar = "=" * 64
    lines = [
        bar,
        f"BATCH SUMMARY  {plain(batch.batch_id)}  ({state or manifest.state.value})",
        bar,
        f"  Name:      {plain(manifest.name)}",
        f"  Total:     {counts.total}",
        f"  Complete:  {counts.complete}",
        f"  Failed:    {counts.failed}",
        f"  Skipped:   {counts.skipped}",
    ]
    running = counts.processing if summary.engine is not None and not summary.stale else 0
    if counts.pending or counts.processing:  # with no engine, those it was running run again
        lines.append(f"  Pending:   {counts.pending + counts.processing - running}")
    if running:  # handed to the workers (running or queued there): the dashboard's in-flight tab
        lines.append(f"  In flight: {running}{_in_flight_split(counts)}")
    lines.append(f"  Success:   {success}")
    if manifest.duplicates_dropped:
        lines.append(f"  Duplicates dropped: {manifest.duplicates_dropped}")
    if manifest.unreadable.count:
        lines.append(f"  Unreadable: {plain(manifest.unreadable.summary())}")
    if manifest.unreadable.left_out:
        lines.append(f"  Left out:  {plain(manifest.unreadable.left_out_summary())}")
    if summary.runs:
        lines.append(f"  Duration:  {duration_text(summary)}   {summary.items_per_s:.1f} items/s")
    if report and report.get("cost_spent"):
        lines.append(f"  Cost:      {report['cost_spent']:.4f}")
    cpu = _cpu_text(report) if summary.engine is None else ""  # a running engine's is not written yet
    if cpu:
        lines.append(f"  CPU:       {cpu}")
    if manifest.halt_reason:
        lines.append(f"  Halted:    {plain(manifest.halt_reason)}")
    groups = (live.error_groups if live else []) or []
    if groups:
        lines.append("  Errors:")
        for g in groups[:8]:
            lines.append(f"    {g.count:>6}  {plain(g.error_type)} [{g.category}]  {plain(g.example_message)[:70]}")
    retriable = _retriable_failed(batch, counts)
    missing = "" if counts.complete == 0 or batch.results.exists() else " (missing: `batchtui resume` rebuilds it)"
    lines.append(f"  Results:   {clean(batch.results)}{missing}")
    lines.append(f"  Manifest:  {clean(batch.manifest)}")
    if summary.engine is not None:  # an engine holds it: a resume would be refused
        where = ("--output-dir", batch.path.parent)
        lines.append(f"  Watch:     {shell_line('batchtui', 'watch', batch.batch_id, *where)}")
        if manifest.state is BatchState.PAUSED:
            lines.append(f"  Unpause:   {shell_line('batchtui', 'unpause', batch.batch_id, *where)}")
        if retriable > 0:
            lines.append(f"  Retry:     {shell_line('batchtui', 'retry', batch.batch_id, *where)}")
    else:
        if manifest.state != BatchState.FINISHED or counts.pending:
            lines.append(f"  Resume:    {resume_command(batch)}")
        if retriable > 0:
            lines.append(f"  Retry:     {resume_command(batch, retry_failed=True)}")
    lines.append(bar)
    click.echo("\n".join(lines))


def _retriable_failed(batch: BatchDir, counts: Counts) -> int:
    """The failed items a retry would put back: not the invalid source records, which it
    leaves failed (store.selection.RETRIABLE); no Retry line is offered for those alone."""
    if not counts.failed:
        return 0
    from batchtui.engine.store.queries import ItemFilter, ItemQueries, Selection, StoreError

    try:
        with ItemQueries(batch.items_db) as view:
            return counts.failed - view.unretriable(Selection.of(ItemFilter(status="failed")))
    except StoreError:  # no store to ask (deleted, damaged): the line as before
        return counts.failed


def duration_text(summary: BatchSummary) -> str:
    """The batch's active time, and the current (or last) run's apart when it had several:
    ``3m12s over 3 runs (this run 40s)``."""
    text = fmt_duration(summary.duration_s)
    if summary.runs > 1:
        which = "this" if summary.run_running else "last"
        text += f" over {summary.runs} runs ({which} run {fmt_duration(summary.run_s)})"
    return text


def say_ended(result: RunResult) -> None:
    """One line on stderr: how the run ended and why (all there is to say once its folder is gone)."""
    click.echo(f"batch {result.batch.batch_id} {result.state.value}: {plain(result.halt_reason or '')}", err=True)


def finish_output(result: RunResult, as_json: bool) -> None:
    """The summary of a run that ended (``--json``: the machine form, on stdout)."""
    batch = result.batch
    head = {
        "batch_id": batch.batch_id,
        "batch_dir": str(batch.path),
        "state": result.state.value,
        "halt_reason": result.halt_reason,
        "exit_code": result.exit_code,
        "totals": result.counts.model_dump(),
    }
    if not batch.path.is_dir():
        # The folder went while the engine ran (moved or deleted): there is nothing to read back.
        if as_json:
            echo_json(head)
        else:
            say_ended(result)
        return
    # The engine's own word on how it ended (the manifest on disk may be stale when the disk
    # filled up at the end).
    manifest = batch.read_manifest().model_copy(update={"state": result.state, "halt_reason": result.halt_reason})
    live = batch.read_live()
    report = read_json(batch.report)
    summary = summarize(batch)
    if as_json:
        echo_json(
            {
                **head,
                "duplicates_dropped": manifest.duplicates_dropped,
                "unreadable": manifest.unreadable.model_dump(),
                "report": report,
                "summary": summary.model_dump(mode="json"),
                "resume_command": None if result.state == BatchState.FINISHED else resume_command(batch),
            }
        )
    else:
        print_summary(batch, manifest, result.counts, live, report, summary=summary)


def run_headless(runner: BatchRunner, as_json: bool) -> RunResult:
    """Run the engine here with progress lines on stderr, then its summary."""
    printer = ProgressPrinter(
        runner.config.progress_interval,
        on_gone=lambda: runner.request_stop("the reader of the progress lines went away (a closed pipe or terminal)"),
    )
    runner.on_progress = printer
    try:
        result = runner.run()
    finally:
        printer.close()
    finish_output(result, as_json)
    return result


#: How long ``--detach`` waits for its engine to take the batch (about half a second on a quiet
#: machine): its return promises an engine that a stop right after it reaches.
DETACH_WAIT_S: Final = 60.0


def start_detached(
    batch: BatchDir,
    *,
    action: str,
    as_json: bool,
    overrides: dict[str, Any] | None = None,
    lock: BatchLock | None = None,
) -> None:
    """``--detach``: start the background engine (handing it ``lock``, the batch's lock this
    process holds), wait until it holds ``batch`` (saying so on stderr when that takes a
    while), then say how to follow it."""
    from ..launch import detach_engine

    def slow(pid: int) -> None:
        click.echo(f"waiting for the background engine (pid {pid}) to take batch {plain(batch.batch_id)}...", err=True)

    wait = DETACH_WAIT_S
    pid = detach_engine(
        batch,
        action=action,
        overrides=overrides,
        wait=wait,
        must_hold=True,
        on_slow=slow,
        slow_after=min(3.0, wait / 4),
        lock=lock,
    )
    announce_detached(batch, pid, as_json)


def announce_detached(batch: BatchDir, pid: int, as_json: bool) -> None:
    """Which background engine runs ``batch`` now, and the commands to follow it."""
    where = shell_line("--output-dir", batch.path.parent)
    if as_json:
        info = {"batch_id": batch.batch_id, "batch_dir": str(batch.path), "pid": pid, "detached": True}
        echo_json({**info, "engine_log": str(batch.engine_log)}, indent=None)
        return
    click.echo(f"batch {plain(batch.batch_id)}: engine running in the background (pid {pid})")
    click.echo(f"  watch:  {shell_line('batchtui', 'watch', batch.batch_id)} {where}")
    click.echo(f"  status: {shell_line('batchtui', 'show', batch.batch_id)} {where}")
    click.echo(f"  stop:   {shell_line('batchtui', 'stop', batch.batch_id)} {where}")
    click.echo(f"  log:    {clean(batch.engine_log)}")


__all__ = [
    "DETACH_WAIT_S",
    "announce_detached",
    "duration_text",
    "finish_output",
    "print_summary",
    "run_headless",
    "start_detached",
]
