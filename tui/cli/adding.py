"""`add`: more items for a batch, from another source, with the key rules and the duplicate
counting of its creation (engine/growing.py's :func:`add_source`).

A batch an engine runs is refused (the engine is the store's only writer while it runs, and
reading a large source inside its loop would stall it): stop it, add, resume.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from batchtui.engine.batches import resolve_batch
from batchtui.engine.config import stored_config
from batchtui.engine.fmt import count, shell_line
from batchtui.engine.growing import add_source
from batchtui.engine.preflight import Preflight, check_template_fields, fields_wanted
from batchtui.engine.processors import ProcessorSpec
from batchtui.engine.shell.template import CommandTemplate
from batchtui.engine.sources import build_spec, expect_fields

from .completion import complete_batch
from .group import CONTEXT
from .options import DIR_OPTION, JSON_OPTION, SOURCE_OPTIONS, apply, scope_of
from .output import echo_json, fail, note_one_item_list, plain, say


@click.command("add", context_settings=CONTEXT)
@click.argument("batch", shell_complete=complete_batch)
@apply(SOURCE_OPTIONS[:1] + SOURCE_OPTIONS[3:])
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def add_cmd(ctx: click.Context, /, batch: str, sources: tuple[str, ...], as_json: bool, **kwargs: Any) -> None:
    """Add the items of SOURCES to BATCH (no engine may run it): the same key rules and
    duplicate counting as at its creation; a later `resume --rescan` reads these sources too.

    SOURCES are given as for `run` (directories, files, line files, CSV, JSONL, or - for stdin).
    The new items run after the batch's pending ones on its next `batchtui resume`.
    """
    bdir = resolve_batch(batch, scope_of(ctx, kwargs.pop("output_dir", None)))
    spec = build_spec(list(sources), **kwargs)
    note_one_item_list(spec, kwargs["as_kind"])
    # Never walk the batches' own folder (as `run` does).
    spec = spec.model_copy(update={"exclude": (str(bdir.path.parent),)})
    manifest = bdir.read_manifest()
    processor = ProcessorSpec.model_validate(manifest.processor)
    if processor.kind == "shell" and processor.command:
        pf = Preflight()
        check_template_fields(pf, CommandTemplate(processor.command), spec)
        for check in pf.checks:
            if check.level == "fail":
                fail(f"cannot add these sources: {check.message}")
    # A piped CSV/JSONL: the template's fields are checked in it as it arrives.
    spec = expect_fields(spec, fields_wanted(processor, None, spec))
    durable = stored_config(manifest.config, bdir.manifest).fsync
    outcome = add_source(bdir, spec, stdin=sys.stdin, durable=durable)
    if outcome.finished_earlier:
        say(f"batch {bdir.batch_id}: an earlier add that was cut short was finished first")
    if outcome.unreadable.count:
        say(f"warning: {outcome.unreadable.summary()}")
    if outcome.unreadable.left_out:
        say(f"note: {outcome.unreadable.left_out_summary()}")
    if as_json:
        echo_json(
            {
                "batch_id": bdir.batch_id,
                "read": outcome.read,
                "added": outcome.added,
                "duplicates_dropped": outcome.duplicates,
                "unreadable": outcome.unreadable.count,
            }
        )
        return
    n, d = outcome.added, outcome.duplicates
    dup = f", {count(d, 'duplicate', grouped=True)} dropped" if d else ""
    then = f"; `{shell_line('batchtui', 'resume', bdir.batch_id)}` runs {'it' if n == 1 else 'them'}" if n else ""
    click.echo(f"batch {plain(bdir.batch_id)}: {count(n, 'item', grouped=True)} added{dup}{then}")


__all__ = ["add_cmd"]
