"""`export`: the items of a batch, every column, as JSONL or CSV, or as GNU parallel's job log."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.batches import resolve_batch
from batchtui.engine.fmt import clean, count

from .completion import complete_batch
from .group import CONTEXT
from .inspecting import refuse_newer
from .options import DIR_OPTION, scope_of
from .output import fail, plain, whole_file


@click.command("export", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@click.option(
    "--status",
    type=click.Choice(["pending", "processing", "complete", "failed", "skipped"]),
    help="Only items with this status.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "joblog"]),
    default="jsonl",
    show_default=True,
    help="joblog: GNU parallel's --joblog columns, for scripts written for it.",
)
@click.option(
    "--out",
    "-O",
    "out_file",
    type=click.Path(dir_okay=False),
    help="Write here instead of stdout, whole or not at all (written beside it, then renamed into place); - is stdout.",
)
@click.option(
    "--spreadsheet",
    is_flag=True,
    help="CSV for a spreadsheet: a text cell that starts with = + - @ (or a tab, a carriage return) "
    "gets a leading ' so that it is never run as a formula.",
)
@DIR_OPTION
@click.pass_context
def export_cmd(
    ctx: click.Context,
    batch: str | None,
    status: str | None,
    fmt: str,
    out_file: str | None,
    spreadsheet: bool,
    output_dir: str | None,
) -> None:
    """Stream the items of BATCH (all columns) as JSONL or CSV, or as GNU parallel's job log.

    To a file or a pipe the bytes are exact; to a terminal, control characters in keys, data
    and errors are shown escaped (JSONL as \\uXXXX, still JSON), never sent to the terminal.

    \b
    --format joblog: parallel's --joblog file (Seq Host Starttime JobRuntime Send Receive
    Exitval Signal Command, tab separated, a header line), one line per item that ran to an
    end (complete or failed); Seq is the item's seq + 1, as parallel counts jobs.

    \b
    A CSV cell that starts with = + - @ is a formula to a spreadsheet (a key such as
    =HYPERLINK(...) from the source): the export says how many it wrote as they are;
    --spreadsheet writes them as text ('=...).
    """
    from batchtui.engine.store.queries import ItemFilter, ItemQueries  # not for `ls` (sqlite3)

    if spreadsheet and fmt != "csv":
        fail("--spreadsheet applies only with --format csv")
    if out_file == "-":
        out_file = None  # stdout, as for curl -o - and wget -O - (it wrote a file named "-")
    bdir = resolve_batch(batch, scope_of(ctx, output_dir))
    refuse_newer(bdir)
    if out_file:
        _refuse_a_batch_folder(Path(out_file))
    store = ItemQueries(bdir.items_db)
    formulas = _Formulas(neutralize=spreadsheet)
    try:
        rows: Iterator[Any] = store.rows(ItemFilter(status=status))
        if out_file:
            try:  # whole or not at all: an export cut short (a kill, a full disk) leaves no half file
                with whole_file(Path(out_file)) as stream:
                    n = _export_rows(stream, rows, fmt, bdir, terminal_out=False, formulas=formulas)
            except OSError as exc:
                fail(f"cannot write {plain(out_file)}: {exc.strerror or exc}")
        else:
            stream = sys.stdout
            terminal_out = stream.isatty()
            if not terminal_out and isinstance(stream, io.TextIOWrapper):
                # A pipe or a file gets UTF-8, the formats' own encoding, whatever the locale's or
                # PYTHONIOENCODING's is (an ASCII one failed on the first non-ASCII key).
                stream.reconfigure(encoding="utf-8", errors="strict")
            n = _export_rows(stream, rows, fmt, bdir, terminal_out=terminal_out, formulas=formulas)
    finally:
        store.close()
    if out_file:
        click.echo(f"exported {count(n, 'item', grouped=True)} to {plain(out_file)}", err=True)
    if formulas.seen and not spreadsheet:
        click.echo(
            f"note: {count(formulas.seen, 'cell')} start with = + - @ (a tab, a carriage return): a spreadsheet "
            "may run them as formulas; --spreadsheet writes them as text",
            err=True,
        )


class _Formulas:
    """The text cells of a CSV export that a spreadsheet would read as a formula (CSV injection):
    counted, and with ``neutralize`` written after a ``'`` (shown as text, the quote hidden)."""

    STARTS = ("=", "+", "-", "@", "\t", "\r")

    def __init__(self, *, neutralize: bool) -> None:
        self.neutralize = neutralize
        self.seen = 0

    def cell(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith(self.STARTS):
            self.seen += 1
            if self.neutralize:
                return "'" + value
        return value


def _refuse_a_batch_folder(out: Path) -> None:
    """Exit 2 when ``out`` (its links followed) is in a batch's folder: those files are the
    engine's (an export over items.db or results.jsonl destroyed the batch), and cleanup would
    take the export away with the batch."""
    target = Path(os.path.realpath(out))
    for folder in target.parents:
        if (folder / "manifest.json").exists() or (folder / "items.db").exists():
            shown = plain(str(out)) + ("" if target == out.absolute() else f" (a link to {plain(str(target))})")
            fail(
                f"{shown} is in the folder of batch {plain(folder.name)}, whose files are batchtui's: export elsewhere"
            )


def _export_rows(
    stream: TextIO, rows: Iterator[Any], fmt: str, bdir: BatchDir, *, terminal_out: bool, formulas: _Formulas
) -> int:
    """Write ``rows`` to ``stream`` as ``fmt``; how many items were written. ``terminal_out``:
    control characters shown escaped (JSONL as ``\\uXXXX``, still JSON); ``formulas``: the CSV
    cells a spreadsheet would run (counted, or written as text)."""
    import csv

    from batchtui.engine.store.queries import ITEM_COLUMNS

    n = 0
    if fmt == "joblog":
        from batchtui.engine.joblog import Joblog
        from batchtui.engine.processors import ProcessorSpec

        joblog = Joblog(ProcessorSpec.model_validate(bdir.read_manifest().processor), bdir.path)
        for line in joblog.lines(rows):
            if terminal_out:  # each column cleaned: the tabs between them stay
                line = "\t".join(clean(cell) for cell in line.split("\t"))
            stream.write(line + "\n")
            n += 1
        return n - 1  # the header
    if fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps(row.as_dict(), ensure_ascii=terminal_out) + "\n")
            n += 1
        return n
    writer = csv.writer(stream)
    writer.writerow(ITEM_COLUMNS)
    for row in rows:
        d = row.as_dict()
        cells = [
            json.dumps(d[c], ensure_ascii=False)
            if c in ("data", "result") and d[c] is not None
            else ("" if d[c] is None else formulas.cell(d[c]))
            for c in ITEM_COLUMNS
        ]
        writer.writerow([clean(cell) for cell in cells] if terminal_out else cells)
        n += 1
    return n


__all__ = ["export_cmd"]
