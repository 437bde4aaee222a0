"""Steering a batch: `pause`, `unpause`, `stop`, `skip`, `retry`, `prioritize`, `workers`.

Each verb is one call of the control client (engine/client.py ``send``), the same one the TUI's
keys use: acknowledged by a live engine, applied offline under the lock when none runs, or
queued without an acknowledgement (exit 1: valid, but not taken effect yet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypedDict

import click

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.batches import resolve_batch
from batchtui.engine.client import Applied, NotAcknowledged, Sent, invalid_note, send
from batchtui.engine.control import CONTROL_FILE
from batchtui.engine.fmt import count, shell_line
from batchtui.engine.models import ControlOp
from batchtui.engine.numbers import to_int

from .completion import complete_batch
from .group import CONTEXT
from .options import DIR_OPTION, JSON_OPTION, MAX_SEQ, WAIT_OPTION, Decorator, Int, scope_of
from .output import echo_json, fail, plain

if TYPE_CHECKING:
    from batchtui.engine.store.queries import ItemFilter, ItemQueries, Selection

    # See options.py: click's ParamType parameters exist for mypy only.
    SeqRangesParamType = click.ParamType[list[tuple[int, int]], Any]
else:
    SeqRangesParamType = click.ParamType

#: The item statuses (engine/store/schema.py's STATUSES; not imported: it would load the store).
STATUSES: Final = ("pending", "processing", "complete", "failed", "skipped")


def _control(
    ctx: click.Context,
    batch: str | BatchDir | None,
    output_dir: str | None,
    op: ControlOp,
    wait: float,
    as_json: bool = False,
    extra: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Send one command to BATCH through the control client (engine/client.py) and print what
    came of it: acknowledged, applied offline, or queued without an acknowledgement (exit 1)."""
    bdir = batch if isinstance(batch, BatchDir) else resolve_batch(batch, scope_of(ctx, output_dir))
    # --wait 0: queue it for the engine and go (it said "not acknowledged within 0s" and exit 1).
    result = send(bdir, op, wait=wait or None, **fields)
    if isinstance(result, Sent):
        if as_json:
            echo_json({**result.as_json(), **(extra or {})}, indent=None)
        else:
            holder = result.status.holder
            who = f" (pid {holder.pid} on {plain(holder.host)})" if holder else ""
            click.echo(
                f"{plain(bdir.batch_id)}: {op}: queued for the engine{who}, which applies it when it reads"
                f" {CONTROL_FILE} (not waited for: --wait 0)"
            )
        return
    if isinstance(result, NotAcknowledged):
        # Exit 1 (not 2: the command was valid): it did not take effect, yet; it stays queued.
        if as_json:
            echo_json(result.as_json(), indent=None)
        fail(result.describe(), 1)
    assert isinstance(result, Applied)
    if not result.took_effect:  # answered, but meant for an engine that is gone: exit 1 too
        if as_json:
            echo_json(result.as_json(), indent=None)
        fail(f"{bdir.batch_id}: {op}: {result.message}", 1)
    if as_json:
        echo_json({**result.as_json(), **(extra or {})}, indent=None)
    elif result.engine:
        click.echo(f"{plain(bdir.batch_id)}: {op}: {result.message}")
    else:
        click.echo(f"{plain(bdir.batch_id)}: {op} (no engine running, store changed): {result.message}")


@click.command("pause", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def pause_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Pause BATCH: no new items start; in-flight items finish."""
    _control(ctx, batch, output_dir, "pause", wait, as_json)


@click.command("unpause", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def unpause_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Let a paused BATCH go on."""
    _control(ctx, batch, output_dir, "resume", wait, as_json)


@click.command("stop", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def stop_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Stop BATCH gracefully (like SIGTERM): resumable later."""
    _control(ctx, batch, output_dir, "stop", wait, as_json)


# -- retry, skip, prioritize: one selection syntax ------------------------------------------------

#: What each selection verb changes, of the items selected (ItemStore's retry_selected,
#: skip_selected and prioritize): the count and the sample show those only.
APPLIES_TO: Final[dict[str, tuple[str, ...]]] = {
    "retry": ("failed", "skipped"),
    "skip": ("pending", "processing", "failed"),
    "prioritize": ("pending", "failed"),
}
SAMPLE: Final = 5


def parse_seq_ranges(text: str) -> list[tuple[int, int]]:
    """``3,7-20`` as inclusive ranges [(3, 3), (7, 20)]; ValueError saying what is wrong."""
    out = []
    for part in text.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        try:
            a = to_int(first)
            b = to_int(last) if dash else a
        except ValueError:
            raise ValueError(f"{part!r} is not an item number (digits 0-9) or a range like 7-20") from None
        if not 0 <= a <= MAX_SEQ or not 0 <= b <= MAX_SEQ:
            raise ValueError(f"{part!r}: item numbers are 0..{MAX_SEQ}")
        if a > b:
            raise ValueError(f"{part!r}: the range's first number is above its last")
        out.append((a, b))
    return out


class SeqRanges(SeqRangesParamType):
    """``--seq 3,7-20``: item numbers and inclusive ranges, comma-separated."""

    name = "SEQS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[tuple[int, int]]:
        if isinstance(value, list):
            return value
        try:
            return parse_seq_ranges(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The selection flags of retry, skip and prioritize (and --dry-run, --wait, --json...)."""
    decorators: list[Decorator] = [
        click.argument("seqs", nargs=-1, type=SeqRanges()),  # 3 7-20 40,41: as --seq
        click.option(
            "--seq",
            "seq_ranges",
            type=SeqRanges(),
            multiple=True,
            help="Items by number and range: 3,7-20 (repeatable; with SEQ... one list).",
        ),
        click.option(
            "--group",
            "group",
            metavar="ID",
            help="Items of this error group (an id from `errors`, or a unique start of one).",
        ),
        click.option(
            "--type",
            "error_type",
            metavar="T",
            help="Items with this error type (e.g. 'exit 4', timeout, TimeoutError).",
        ),
        click.option("--match", metavar="TEXT", help="Items whose error message holds TEXT (any case)."),
        click.option("--status", type=click.Choice(STATUSES), help="Items with this status."),
        click.option(
            "--key", "key_glob", metavar="GLOB", help="Items whose key matches GLOB (*, ?, [...]; case matters)."
        ),
        click.option(
            "--dry-run", is_flag=True, help="Print how many items it would change and a few keys; change nothing."
        ),
        WAIT_OPTION,
        DIR_OPTION,
        JSON_OPTION,
        click.pass_context,
    ]
    for option in reversed(decorators):
        func = option(func)
    return func


class SelectionFlags(TypedDict):
    """The filter flags of retry, skip and prioritize (None or "": not given), as ItemFilter's
    fields."""

    error_type: str | None
    match: str | None
    status: str | None
    key_glob: str | None


def _selection(
    op: str,
    bdir: BatchDir,
    view: ItemQueries,
    seqs: tuple[list[tuple[int, int]], ...],
    seq_ranges: tuple[list[tuple[int, int]], ...],
    group: str | None,
    flags: SelectionFlags,
) -> tuple[Selection, ItemFilter]:
    """The selection the flags name, as (Selection, ItemFilter); exit 2 for a bad one."""
    from batchtui.engine.store.queries import ItemFilter, Selection

    ranges = [r for given in (*seqs, *seq_ranges) for r in given]
    gid = _group_id(bdir, view, group) if group else None
    if not ranges and not gid and not any(flags.values()):
        if op != "retry":
            raise click.UsageError(
                f"say which items to {op}: SEQ..., --seq, --group, --type, --match, --status or --key"
            )
        # retry with no selection: every failed item, as always
        flags = SelectionFlags(error_type=None, match=None, status="failed", key_glob=None)
    f = ItemFilter(error_group=gid, seq_ranges=tuple(ranges) if ranges else None, **flags)
    return Selection.of(f), f


def _group_id(bdir: BatchDir, view: ItemQueries, prefix: str) -> str:
    """The id of the error group ``prefix`` starts (exit 2 when it is no id, 1 when no group
    or several have it)."""
    prefix = prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix) or len(prefix) > 8:
        raise click.BadParameter(
            f"{prefix!r} is not an error group id (up to 8 hex digits; see `batchtui errors`)", param_hint="--group"
        )
    groups = view.error_groups(None)
    ids = sorted({g.id for g in groups if g.id.startswith(prefix)})
    if len(ids) == 1:
        return ids[0]
    if not ids and len(prefix) == 8:
        return prefix  # a group of items no longer failed (pending again, skipped) still has its id
    if ids:
        fail(f"--group {prefix} is ambiguous: it starts {', '.join(ids)}; give more of the id", 2)
    fail(f"{bdir.batch_id}: no error group id starts with {prefix}" + _what_exists(view), 1)


def _what_exists(view: ItemQueries, f: ItemFilter | None = None) -> str:
    """The error types and groups the batch has, for a selection that found nothing; the batch's
    item numbers for one that named only numbers (none of them is in it)."""
    if f is not None and f.seq_ranges and not any(getattr(f, name) for name, _ in _NOT_SEQ):
        total = view.counts().total
        return f"\n  the batch's items are #0 to #{total - 1}" if total else "\n  the batch has no items"
    groups = view.error_groups(None)
    if not groups:
        return "\n  the batch has no failed items"
    types = view.errors_by("error_type")
    lines = ["\n  error types: " + ", ".join(f"{plain(t)} ({n})" for t, n in types.items())]
    lines.append("  error groups (id, count, type: message):")
    shown = groups[:10]
    lines += [f"    {g.id}  {g.count:>6}  {plain(g.error_type)}: {plain(g.message)[:60]}" for g in shown]
    if len(groups) > len(shown):
        lines.append(
            f"    ... {len(groups) - len(shown)} more: `{shell_line('batchtui', 'errors', view.path.parent.name)}`"
        )
    return "\n".join(lines)


#: The fields of a filter other than its item numbers, and the flag of each.
_NOT_SEQ: Final = (
    ("error_group", "--group"),
    ("error_type", "--type"),
    ("match", "--match"),
    ("status", "--status"),
    ("key_glob", "--key"),
)


def _match(n: int) -> str:
    """ "1 item matches", "3 items match"."""
    return f"{count(n, 'item', grouped=True)} {'matches' if n == 1 else 'match'}"


def _describe(f: ItemFilter) -> str:
    """The flags of a filter, as the user gave them (for a message)."""
    parts = []
    if f.seq_ranges:
        parts.append("--seq " + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in f.seq_ranges[:6]))
    for name, flag in _NOT_SEQ:
        value = getattr(f, name)
        if value:
            parts.append(f"{flag} {plain(value)!r}" if " " in value else f"{flag} {plain(value)}")
    return " ".join(parts)


def _select_and_send(
    ctx: click.Context,
    op: ControlOp,
    batch: str | None,
    seqs: tuple[list[tuple[int, int]], ...],
    seq_ranges: tuple[list[tuple[int, int]], ...],
    group: str | None,
    flags: SelectionFlags,
    dry_run: bool,
    wait: float,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Resolve the selection, refuse an empty one (exit 1, its types and groups listed, nothing
    sent), print a dry run, or send it through the control client."""
    from batchtui.engine.store.queries import ItemQueries

    bdir = resolve_batch(batch, scope_of(ctx, output_dir))
    bdir.read_manifest()  # a batch of a newer batchtui is refused before its store is read
    statuses = APPLIES_TO[op]
    with ItemQueries(bdir.items_db) as view:
        sel, f = _selection(op, bdir, view, seqs, seq_ranges, group, flags)
        by_status = view.selected_counts(sel)
        left = view.unretriable_types(sel) if op != "skip" else {}  # left failed (store.selection.RETRIABLE)
        invalid = sum(left.values())
        n = sum(getattr(by_status, status) for status in statuses) - invalid
        sample = view.sample_selected(sel, SAMPLE, statuses, retriable=op != "skip") if n else []
        if not n:
            matched = by_status.total
            what = _describe(f)
            if invalid:
                why = f"{_match(matched)} {what}{invalid_note(left)}"
            elif matched:
                why = f"{_match(matched)} {what}, but none is {' or '.join(statuses)} ({op} changes only those)"
            else:
                why = f"no item matches {what}" + _what_exists(view, f)
            if as_json:
                echo_json({"batch_id": bdir.batch_id, "op": op, "selected": 0, "matched": matched}, indent=None)
            fail(f"{bdir.batch_id}: {op}: nothing to {op}: {why}", 1)
    keys = [{"seq": seq, "key": key} for seq, key in sample]
    if dry_run:
        if as_json:
            echo_json(
                {"batch_id": bdir.batch_id, "op": op, "dry_run": True, "selected": n, "sample": keys}, indent=None
            )
            return
        click.echo(
            f"{plain(bdir.batch_id)}: {op} would change {count(n, 'item', grouped=True)} ({' or '.join(statuses)} now); nothing changed"
        )
        for seq, key in sample:
            click.echo(f"  #{seq}  {plain(key)}")
        if n > len(sample):
            click.echo(f"  ... and {n - len(sample)} more")
        return
    _control(ctx, bdir, output_dir, op, wait, as_json, extra={"selected": n}, select=sel)


@click.command("retry", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@selection_options
def retry_cmd(
    ctx: click.Context,
    batch: str | None,
    seqs: tuple[list[tuple[int, int]], ...],
    seq_ranges: tuple[list[tuple[int, int]], ...],
    group: str | None,
    error_type: str | None,
    match: str | None,
    status: str | None,
    key_glob: str | None,
    dry_run: bool,
    wait: float,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Put failed items of BATCH back to pending (their attempt history is kept).

    \b
    Which: every failed item, or those the selection names (skipped ones too):
      SEQ... / --seq 3,7-20   by number        --group ID     an error group (`batchtui errors`)
      --type T  --match TEXT  by error         --status S     --key GLOB
    Flags combine with AND. Nothing matching is exit 1, with the batch's error types and groups.
    --json: one object, "result" says what changed ("selected": how many were selected).
    """
    flags = SelectionFlags(error_type=error_type, match=match, status=status, key_glob=key_glob)
    _select_and_send(ctx, "retry", batch, seqs, seq_ranges, group, flags, dry_run, wait, output_dir, as_json)


@click.command("skip", context_settings=CONTEXT)
@click.argument("batch", shell_complete=complete_batch)
@selection_options
def skip_cmd(
    ctx: click.Context,
    batch: str,
    seqs: tuple[list[tuple[int, int]], ...],
    seq_ranges: tuple[list[tuple[int, int]], ...],
    group: str | None,
    error_type: str | None,
    match: str | None,
    status: str | None,
    key_glob: str | None,
    dry_run: bool,
    wait: float,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Skip items of BATCH: SEQ... or a selection (an in-flight one is killed).

    \b
    The same selection as `retry` (SEQ..., --seq, --group, --type, --match, --status, --key,
    combined with AND); one is required. Pending, running and failed items are skipped.
    """
    flags = SelectionFlags(error_type=error_type, match=match, status=status, key_glob=key_glob)
    _select_and_send(ctx, "skip", batch, seqs, seq_ranges, group, flags, dry_run, wait, output_dir, as_json)


@click.command("prioritize", context_settings=CONTEXT)
@click.argument("batch", shell_complete=complete_batch)
@selection_options
def prioritize_cmd(
    ctx: click.Context,
    batch: str,
    seqs: tuple[list[tuple[int, int]], ...],
    seq_ranges: tuple[list[tuple[int, int]], ...],
    group: str | None,
    error_type: str | None,
    match: str | None,
    status: str | None,
    key_glob: str | None,
    dry_run: bool,
    wait: float,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Run items of BATCH first: they go to the front of the queue (failed ones retried).

    \b
    The same selection as `retry`; one is required. The pending items selected start before
    every other pending item (in item order, in front of any prioritized before), now if an
    engine runs, else at the next `batchtui resume`.
    """
    flags = SelectionFlags(error_type=error_type, match=match, status=status, key_glob=key_glob)
    _select_and_send(ctx, "prioritize", batch, seqs, seq_ranges, group, flags, dry_run, wait, output_dir, as_json)


@click.command("workers", context_settings=CONTEXT)
@click.argument("batch", shell_complete=complete_batch)
@click.argument("n", type=Int(1, 4096))
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def workers_cmd(ctx: click.Context, batch: str, n: int, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Grow or shrink the worker pool of a running BATCH to N."""
    _control(ctx, batch, output_dir, "set_workers", wait, as_json, value=n)


__all__ = [
    "parse_seq_ranges",
    "pause_cmd",
    "prioritize_cmd",
    "retry_cmd",
    "skip_cmd",
    "stop_cmd",
    "unpause_cmd",
    "workers_cmd",
]
