"""Steering a batch: `pause`, `unpause`, `stop`, `skip`, `retry`, `workers`.

Each verb is one call of the control client (engine/client.py ``send``), the same one the TUI's
keys use: acknowledged by a live engine, applied offline under the lock when none runs, or
queued without an acknowledgement (exit 1: valid, but not taken effect yet).
"""

from __future__ import annotations

from typing import Any

import click

from batchtui.engine.batchdir import resolve_batch
from batchtui.engine.client import Applied, NotAcknowledged, send
from batchtui.engine.models import ControlOp

from .group import CONTEXT
from .options import DIR_OPTION, JSON_OPTION, SEQ, WAIT_OPTION, output_dir_of
from .output import echo_json, fail


def _control(
    ctx: click.Context,
    batch: str | None,
    output_dir: str | None,
    op: ControlOp,
    wait: float,
    as_json: bool = False,
    **fields: Any,
) -> None:
    """Send one command to BATCH through the control client (engine/client.py) and print what
    came of it: acknowledged, applied offline, or queued without an acknowledgement (exit 1)."""
    bdir = resolve_batch(batch, output_dir_of(ctx, output_dir))
    result = send(bdir, op, wait=wait, **fields)
    if isinstance(result, NotAcknowledged):
        # Exit 1 (not 2: the command was valid): it did not take effect, yet; it stays queued.
        if as_json:
            echo_json(result.as_json(), indent=None)
        fail(result.describe(), 1)
    assert isinstance(result, Applied)
    if as_json:
        echo_json(result.as_json(), indent=None)
    elif result.engine:
        click.echo(f"{bdir.batch_id}: {op}: {result.message}")
    else:
        click.echo(f"{bdir.batch_id}: {op} (no engine running, store changed): {result.message}")


@click.command("pause", context_settings=CONTEXT)
@click.argument("batch", required=False)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def pause_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Pause BATCH: no new items start; in-flight items finish."""
    _control(ctx, batch, output_dir, "pause", wait, as_json)


@click.command("unpause", context_settings=CONTEXT)
@click.argument("batch", required=False)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def unpause_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Let a paused BATCH go on."""
    _control(ctx, batch, output_dir, "resume", wait, as_json)


@click.command("stop", context_settings=CONTEXT)
@click.argument("batch", required=False)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def stop_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Stop BATCH gracefully (like SIGTERM): resumable later."""
    _control(ctx, batch, output_dir, "stop", wait, as_json)


@click.command("skip", context_settings=CONTEXT)
@click.argument("batch")
@click.argument("seqs", nargs=-1, type=SEQ, required=True)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def skip_cmd(
    ctx: click.Context, batch: str, seqs: tuple[int, ...], wait: float, output_dir: str | None, as_json: bool
) -> None:
    """Skip items SEQS of BATCH (an in-flight one is killed)."""
    _control(ctx, batch, output_dir, "skip", wait, as_json, seqs=list(seqs))


@click.command("retry", context_settings=CONTEXT)
@click.argument("batch", required=False)
@click.option("--type", "error_type", help="Only failed items with this error type (e.g. 'exit 4', TimeoutError).")
@click.option("--seq", "seqs", type=SEQ, multiple=True, help="Only these items (repeatable).")
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def retry_cmd(
    ctx: click.Context,
    batch: str | None,
    error_type: str | None,
    seqs: tuple[int, ...],
    wait: float,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Put failed items of BATCH back to pending (their attempt history is kept)."""
    seq_list = list(seqs) if seqs else None
    error_filter = {"error_type": error_type} if error_type else None
    _control(ctx, batch, output_dir, "retry", wait, as_json, seqs=seq_list, filter=error_filter)


@click.command("workers", context_settings=CONTEXT)
@click.argument("batch")
@click.argument("n", type=click.IntRange(1, 4096))
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def workers_cmd(ctx: click.Context, batch: str, n: int, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Grow or shrink the worker pool of a running BATCH to N."""
    _control(ctx, batch, output_dir, "set_workers", wait, as_json, value=n)


__all__ = ["pause_cmd", "retry_cmd", "skip_cmd", "stop_cmd", "unpause_cmd", "workers_cmd"]
