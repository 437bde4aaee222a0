"""Shell completion of BATCH arguments: batch ids and names, newest first.

click completes the verbs and options by itself (``_BATCHTUI_COMPLETE=bash_source batchtui``,
``zsh_source``, ``fish_source``: see the README); every ``BATCH`` argument names
:func:`complete_batch` as its ``shell_complete``. It lists what ``ls`` lists (the output dir,
then the per-user registry, or only the ``--output-dir`` given on the line), reads a manifest
only for a batch the registry has no name for, and never raises: a completion that fails
completes nothing, it never prints a traceback into the user's prompt.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Final

import click
from click.shell_completion import CompletionItem

#: At most this many batches are offered (newest first): a prompt is no place for thousands.
MAX_OFFERED: Final = 200


def _scope(ctx: click.Context) -> Any:
    from batchtui.engine.batches import BatchScope
    from batchtui.engine.config import load_config

    flag = ctx.params.get("output_dir") or ctx.find_root().params.get("output_dir")
    config = load_config({"output_dir": flag} if flag else {}, implicit_code="drop")
    return BatchScope(Path(config.output_dir), only=bool(flag))


def batch_choices(ctx: click.Context, incomplete: str) -> list[tuple[str, str]]:
    """(value, help) of each batch id and name starting with ``incomplete``, newest first."""
    from batchtui.engine.batches import iter_batches
    from batchtui.engine.fmt import clean
    from batchtui.engine.registry import registered

    scope = _scope(ctx)
    names = {} if scope.only else {e.path: e.name for e in registered()}
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for batch in iter_batches(scope):
        if len(out) >= MAX_OFFERED:
            break
        name = names.get(str(batch.path))
        if name is None:
            try:
                name = batch.read_manifest().name
            except Exception:  # a damaged or newer manifest: its id is still offered
                name = ""
        if batch.batch_id.startswith(incomplete) and batch.batch_id not in seen:
            seen.add(batch.batch_id)
            out.append((batch.batch_id, clean(name)))
        if name and name.startswith(incomplete) and name not in seen and "\n" not in name:
            seen.add(name)
            out.append((name, f"batch {batch.batch_id}"))
    return out


def complete_batch(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """click's ``shell_complete`` for a BATCH argument (never raises; warnings are not shown)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return [CompletionItem(value, help=text or None) for value, text in batch_choices(ctx, incomplete)]
    except Exception:
        return []


__all__ = ["MAX_OFFERED", "batch_choices", "complete_batch"]
