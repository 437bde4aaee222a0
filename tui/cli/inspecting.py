"""Looking at batches: `ls`, `show`, `errors`, `export`.

Every listing takes a batch's state, counts and engine from engine/summary.py's
:func:`summarize` (the one answer to "running, or interrupted?", shared with the browser).
`ls` is the verb scripts call in a loop: this module's own imports stay light (no store, no
runner), and `show` and `export` import the store when they run.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from typing import Any

import click

from batchtui.engine.adaptive import AdaptiveLimit, rule_text, timeout_text
from batchtui.engine.batchdir import BatchDir, parse_iso
from batchtui.engine.batches import resolve_batch
from batchtui.engine.files import DamagedFile
from batchtui.engine.fmt import count, shell_line
from batchtui.engine.grouping import families
from batchtui.engine.listing import GONE, list_batches
from batchtui.engine.models import LiveProgress, NewerFormat
from batchtui.engine.summary import (
    DAMAGED,
    INTERRUPTED,
    BatchSummary,
    reading_note,
    reading_text,
    reads_stdin,
    summarize,
)

from .completion import complete_batch
from .group import CONTEXT
from .options import DIR_OPTION, scope_of
from .output import echo_json, fail, plain, read_json
from .progress import progress_line
from .summary import print_summary


@click.command("ls", context_settings=CONTEXT)
@DIR_OPTION
@click.option("--all", "show_all", is_flag=True, help="List the gone batches too (their folder moved or deleted).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list on stdout: every batch, the gone ones too.")
@click.pass_context
def ls_cmd(ctx: click.Context, output_dir: str | None, show_all: bool, as_json: bool) -> None:
    """List every batch, newest first: those in the output dir and every batch made elsewhere
    (they are registered under $XDG_STATE_HOME/batchtui); with --output-dir, that folder only.
    A registered batch whose folder was moved or deleted is `gone`: counted in a last line, listed
    with --all (`cleanup` forgets them)."""
    scope = scope_of(ctx, output_dir)
    rows = list_batches(scope)
    if as_json:
        echo_json([r.model_dump(mode="json") for r in rows])
        return
    gone = 0 if show_all else sum(r.state == GONE for r in rows)
    rows = [r for r in rows if show_all or r.state != GONE]
    if not rows:
        click.echo(f"no batches in {scope.describe()}  (start one: batchtui run SOURCE --cmd '...', or batchtui demo)")
        if gone:
            click.echo(gone_line(gone))
        return
    click.echo(f"{'BATCH':<25} {'STATE':<12} {'ENGINE':<10} {'DONE':>15} {'FAILED':>7} {'CREATED':<17} NAME")
    problems: list[str] = []
    cut: list[str] = []
    reading: list[str] = []
    for r in rows:
        if r.state == DAMAGED:
            click.echo(f"{r.batch_id:<25} {DAMAGED:<12} {'':<10} {'':>15} {'':>7} {'':<17} {plain(r.error)}")
            continue
        if r.state == GONE:
            created = local_time(r.created_at)
            click.echo(f"{r.batch_id:<25} {GONE:<12} {'':<10} {'':>15} {'':>7} {created:<17} {plain(r.path)}")
            continue
        t = r.totals
        engine = f"pid {r.engine.pid}" if r.engine else "-"
        state = r.state
        if r.engine and r.engine.problem:
            if r.state != INTERRUPTED:  # its engine is dead: what it left holds the lock a moment
                state = "unresponsive"  # a frozen or hung engine: said in full below the table
            problems.append(f"{plain(r.batch_id)}: {r.engine.problem}")
        elif r.engine and r.reading_source:
            # Still `created` (the manifest's state): its engine reads the source, nothing runs yet.
            waiting = r.engine.waiting_for_source_s is not None
            state = "waiting" if waiting else "reading"
            tag = "WAITING FOR SOURCE" if waiting else "READING SOURCE"
            reading.append(f"{tag} {plain(r.batch_id)}: {reading_sentence(r)}")
        said = cut_short_text(r)
        if said is not None:
            cut.append(f"{said[0]} {plain(r.batch_id)}: {said[1]}")
        created = local_time(r.created_at)
        progress = f"{t.finished}/{t.total}"
        click.echo(
            f"{r.batch_id:<25} {state:<12} {engine:<10} {progress:>15} {t.failed:>7} {created:<17} {plain(r.name)[:40]}"
        )
    for line in reading:
        click.echo(line)
    for problem in problems:
        click.echo(f"NOT RESPONDING {problem}")
    for line in cut:
        click.echo(line)
    if gone:
        click.echo(gone_line(gone))


def gone_line(gone: int) -> str:
    """The line ``ls`` ends with for the registered batches it does not list: their folder was
    moved or deleted (an `rm -rf batch_output` leaves one a batch), and they would bury the others."""
    them = f"{gone:,} more batches are" if gone != 1 else "1 more batch is"
    return (
        f"{them} registered but gone (folder moved or deleted): `batchtui ls --all` lists"
        f" {'them' if gone != 1 else 'it'}, `batchtui cleanup` forgets {'them' if gone != 1 else 'it'}"
    )


def cut_short_text(summary: BatchSummary) -> tuple[str, str] | None:
    """What ``ls`` and ``show`` say of a batch whose ``add``, or whose own enqueue (its ``run``),
    was killed half-way: (the ``ls`` tag, the sentence), or None."""
    if summary.enqueue_cut_short and reads_stdin(summary.source):
        # `resume` refuses it (engine/enqueue.py): what was read of stdin is gone with the engine.
        return "ENQUEUE CUT SHORT", (
            f"the batch's enqueue was cut short while it read stdin, which cannot be read again: its"
            f" {count(summary.totals.total, 'item', grouped=True)} are not the whole input and no resume"
            " can read the rest; start a new batch"
        )
    if summary.enqueue_cut_short:
        tag, what = "ENQUEUE CUT SHORT", "the batch's enqueue was cut short"
    elif summary.add_cut_short:
        tag, what = "ADD CUT SHORT", "an add was cut short"
    else:
        return None
    return tag, (
        f"{what}, part of its source is not in the batch yet;"
        f" `{shell_line('batchtui', 'resume', summary.batch_id)}` reads the rest first"
    )


def reading_sentence(summary: BatchSummary) -> str:
    """What ``ls`` and ``show`` say of a batch whose engine reads its source (state ``created``)."""
    who = f"its engine (pid {summary.engine.pid})" if summary.engine else "its engine"
    return f"created, and {who} is {reading_text(summary)}; {reading_note(summary)}"


def local_time(iso: str | None) -> str:
    """An ISO time of a batch file as the local ``YYYY-MM-DD HH:MM`` ('' for none)."""
    if not iso:
        return ""
    try:
        return datetime.fromtimestamp(parse_iso(iso)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


@click.command("show", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Everything as JSON on stdout.")
@click.pass_context
def show_cmd(ctx: click.Context, batch: str | None, output_dir: str | None, as_json: bool) -> None:
    """Summary, error breakdown and settings of BATCH [default: the latest]."""
    from batchtui.engine.recover import store_is_healthy  # not for `ls` (it loads the store)
    from batchtui.engine.store.queries import ItemQueries, StoreBusy, StoreError, StoreLinked, StoreUnreachable

    bdir = resolve_batch(batch, scope_of(ctx, output_dir))
    manifest = bdir.read_manifest()
    live = bdir.read_live()
    report = read_json(bdir.report)
    groups: list[dict[str, Any]] = []
    counts = manifest.totals
    damaged = f"{bdir.items_db} is damaged or unreadable (the manifest says {manifest.state.value}, "
    damaged += (
        f"{counts.finished}/{counts.total} done); rebuild it with `{shell_line('batchtui', 'recover', bdir.batch_id)}`"
    )
    # A live engine would have failed on a damaged store; otherwise check it (SQLite quick_check,
    # for at most a second: `batchtui check` and `recover` check the whole file).
    try:
        if bdir.alive() is None and not store_is_healthy(bdir.items_db, budget_s=1.0):
            fail(damaged)
        with ItemQueries(bdir.items_db) as store:
            groups = [g.model_dump() for g in store.error_groups(20)]
            by_category = store.errors_by("error_category")
    except (StoreUnreachable, StoreBusy, StoreLinked) as exc:
        fail(exc.describe())  # not known damaged: the error says the way out
    except StoreError:
        fail(damaged)
    # The state, counts, engine, duration and rate ls, the browser and report.json show too.
    summary = summarize(bdir)
    counts = summary.totals
    engine_info = summary.engine
    if as_json:
        echo_json(
            {
                "batch_id": bdir.batch_id,
                "path": str(bdir.path),
                "state": summary.state,
                "summary": summary.model_dump(mode="json"),
                "manifest": manifest.model_dump(mode="json"),
                "counts": counts.model_dump(),
                "live": live.model_dump(mode="json") if live else None,
                "engine": engine_info.model_dump(mode="json") if engine_info else None,
                "error_groups": groups,
                "errors_by_category": by_category,
                "report": report,
            }
        )
        return
    state = summary.state
    if summary.reading_source and summary.engine is not None and not summary.stale:
        waiting = summary.engine.waiting_for_source_s is not None
        state += ": waiting for its source" if waiting else ": reading its source"
    print_summary(bdir, manifest, counts, None, report, summary=summary, state=state)
    click.echo(f"  Processor: {plain(summary.command)}")
    engine = f"running, pid {engine_info.pid} on {engine_info.host}" if engine_info else "none"
    if engine_info and engine_info.badge:
        engine = f"{engine_info.badge}, pid {engine_info.pid} on {engine_info.host}"
    click.echo(f"  Created:   {local_time(manifest.created_at)}   Engine: {engine}")
    if engine_info and engine_info.problem:
        click.echo(f"  Warning:   {engine_info.problem}")
    said = cut_short_text(summary)
    if said is not None:
        click.echo(f"  Warning:   {said[1]}")
    from batchtui.engine.control_file import control_problem  # show only: ls stays light

    damaged_control = control_problem(bdir)
    if damaged_control is not None:
        click.echo(f"  Warning:   {plain(damaged_control)}")
    if summary.manifest_from_backup:
        click.echo(f"  Warning:   {bdir.manifest.name} is missing or damaged; this is its backup, manifest.json.bak")
    if summary.reading_source and not summary.stale:
        click.echo(f"  Now:       {reading_text(summary)}; {reading_note(summary)}")
    if live is not None and summary.counts_from == "live":
        # A frozen engine's figures are as old as its last write: not "now".
        click.echo(("  Last seen: " if summary.stale else "  Now:       ") + progress_line(live))
        if live.memory_hold:
            click.echo(f"  Memory:    {plain(live.memory_hold)}")
        if live.start_hold:
            click.echo(f"  Starts:    {plain(live.start_hold)}")
        # What the run said lately (an earlier run's calls it waits for, a shortfall of workers):
        # the headless lines and the dashboard said it, show did not.
        for i, said_line in enumerate(live.warnings[-3:]):
            click.echo(("  Warnings:  " if i == 0 else "             ") + plain(said_line))
    for line in timeout_lines(manifest.config, live):
        click.echo(line)
    for line in hook_lines(manifest.config):
        click.echo(line)
    from batchtui.engine.limits import limit_lines  # loads the template's code: show only, not ls

    for i, line in enumerate(limit_lines(manifest.config.get("limit_by"), live.limits if live is not None else [])):
        click.echo(("  Limits:    " if i == 0 else "             ") + plain(line))
    if groups:
        click.echo("  Error groups (count, id, type, category, example; `batchtui errors` for all):")
        for g in groups:
            click.echo(
                f"    {g['count']:>6}  {g['id']}  {plain(g['error_type'])}  [{g['category']}]  "
                f"#{g['example_seq']}: {plain(g['example_message'])[:80]}"
            )
    if by_category:
        click.echo("  By category: " + ", ".join(f"{k} {v}" for k, v in by_category.items()))


def timeout_lines(config: dict[str, Any], live: LiveProgress | None) -> list[str]:
    """``show``'s lines on the --timeout: the setting, and the limit the engine last had in
    force (with ``--timeout P%`` it follows the median success, engine/adaptive.py)."""
    try:
        rule = AdaptiveLimit.model_validate(config["adaptive_timeout"]) if config.get("adaptive_timeout") else None
        setting = rule_text(float(config["timeout"]) if config.get("timeout") else None, rule)
    except (ValueError, TypeError):
        return [f"  Timeout:   {plain(str(config.get('adaptive_timeout') or config.get('timeout')))} (unreadable)"]
    if setting is None:
        return []
    lines = [f"  Timeout:   {setting}"]
    if rule is not None and live is not None and live.timeout is not None:
        lines.append(f"             in force: {timeout_text(live.timeout).removeprefix('timeout ')}")
    return lines


def hook_lines(config: dict[str, Any]) -> list[str]:
    """``show``'s lines on the hooks: each ``--on-event`` (its events and command) and
    ``--on-finish``, and the ``--hook-timeout`` when there is any (engine/events.py)."""
    hooks = [
        (",".join(str(kind) for kind in hook.get("events", [])), str(hook.get("command", "")))
        for hook in config.get("on_event") or []
        if isinstance(hook, dict)
    ]
    if config.get("on_finish"):
        hooks.append(("finish (--on-finish)", str(config["on_finish"])))
    lines = [
        ("  Hooks:     " if i == 0 else "             ") + f"{plain(events)}: {plain(command)}"
        for i, (events, command) in enumerate(hooks)
    ]
    if lines:
        lines.append(f"             each killed after {config.get('hook_timeout', 60):g} s (--hook-timeout)")
    return lines


@click.command("errors", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="A JSON list on stdout: one object per group.")
@click.pass_context
def errors_cmd(ctx: click.Context, batch: str | None, output_dir: str | None, as_json: bool) -> None:
    """The error groups of BATCH [default: the latest], biggest first.

    \b
    A group is the failed items of one error type whose messages differ only in variable parts:
    the item's own name, URLs, e-mails, ids, random tokens, paths and numbers. ID is its stable
    id: `retry|skip|prioritize BATCH --group ID` act on its items (a unique start of the id will
    do). FIRST and LAST are when its items failed (local time). Below the table, groups of one
    type whose messages differ in one word only are named, with a selection that takes them
    together. --json prints a list, one object per group: id, error_type, category, count,
    first_seen, last_seen (ISO times), example_seq, message (normalized), example_message.
    """
    from batchtui.engine.store.queries import ItemQueries  # not for `ls` (sqlite3)

    bdir = resolve_batch(batch, scope_of(ctx, output_dir))
    refuse_newer(bdir)
    with ItemQueries(bdir.items_db) as store:
        groups = store.error_groups(None)
    if as_json:
        echo_json([g.model_dump(mode="json") for g in groups])
        return
    if not groups:
        click.echo(f"{plain(bdir.batch_id)}: no failed items")
        return
    click.echo(error_table(groups, shutil.get_terminal_size((80, 24)).columns))
    for line in family_lines(bdir, groups):
        click.echo(line)


def family_lines(bdir: BatchDir, groups: list[Any], most: int = 3) -> list[str]:
    """Lines naming the biggest families of groups that differ in one word only (grouping's
    :func:`~batchtui.engine.grouping.families`), each with a `retry --dry-run` that selects
    them together (by type, and the words around the one that differs)."""
    lines = []
    for family in families([(g.error_type, g.message, g.count) for g in groups])[:most]:
        items = sum(groups[i].count for i in family.members)
        lines.append(
            f"{len(family.members)} groups of {plain(family.error_type)} ({count(items, 'item')}) differ in one word"
            f" only: {plain(family.pattern)}"
        )
        match = ("--match", family.match) if family.match else ()
        where = ("--output-dir", bdir.path.parent)
        command = shell_line(
            "batchtui", "retry", bdir.batch_id, *where, "--type", family.error_type, *match, "--dry-run"
        )
        lines.append(f"  together: {command}")
    return lines


def error_table(groups: list[Any], width: int = 80) -> str:
    """The error groups as a table ``width`` columns wide: the message is cut to fit (at least
    20 columns of it). Times are local: HH:MM when every one is on the same day, else MM-DD HH:MM."""
    stamps = [parse_time(t) for g in groups for t in (g.first_seen, g.last_seen)]
    days = {t.date() for t in stamps if t is not None}
    fmt = "%H:%M" if len(days) <= 1 else "%m-%d %H:%M"
    tw = max(4, min(14, max(len(plain(g.error_type)) for g in groups)))
    cw = max(8, *(len(g.category) for g in groups))
    nw = max(5, *(len(str(g.count)) for g in groups))
    ew = max(7, *(len(f"#{g.example_seq}") for g in groups))
    stw = len(datetime(2000, 1, 1).strftime(fmt))

    def when(iso: str | None) -> str:
        t = parse_time(iso)
        return t.strftime(fmt) if t is not None else "-"

    fixed = 8 + 1 + nw + 1 + tw + 1 + cw + 1 + stw + 1 + stw + 1 + ew + 1
    mw = max(20, width - fixed)
    lines = [
        f"{'ID':<8} {'COUNT':>{nw}} {'TYPE':<{tw}} {'CATEGORY':<{cw}} {'FIRST':<{stw}} {'LAST':<{stw}} "
        f"{'EXAMPLE':<{ew}} MESSAGE"
    ]
    for g in groups:
        etype = _cut(plain(g.error_type), tw)
        message = _cut(plain(g.message), mw)
        lines.append(
            f"{g.id:<8} {g.count:>{nw}} {etype:<{tw}} {g.category:<{cw}} {when(g.first_seen):<{stw}} "
            f"{when(g.last_seen):<{stw}} {'#' + str(g.example_seq):<{ew}} {message}"
        )
    if len(days) == 1:
        lines.append(f"(times on {next(iter(days)).isoformat()})")
    return "\n".join(line.rstrip() for line in lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_time(iso: str | None) -> datetime | None:
    """An ISO time of the store as a local datetime (None when there is none or it is bad)."""
    if not iso:
        return None
    try:
        return datetime.fromtimestamp(parse_iso(iso))
    except (ValueError, OverflowError, OSError):
        return None


def refuse_newer(bdir: BatchDir) -> None:
    """NewerFormat (exit 2) when a newer batchtui made ``bdir``, for a command that does not
    otherwise need its manifest (a lost or damaged one is no matter to it)."""
    try:
        bdir.read_manifest()
    except NewerFormat:
        raise
    except (FileNotFoundError, DamagedFile):
        pass


__all__ = ["error_table", "errors_cmd", "gone_line", "local_time", "ls_cmd", "refuse_newer", "show_cmd"]
