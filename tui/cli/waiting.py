"""`batchtui wait BATCH [--timeout S]`: block until a batch ends, exit with its exit code
(engine/waiting.py), for scripts that start a batch with --detach and wait for it later."""

from __future__ import annotations

import click

from batchtui.engine.batches import resolve_batch
from batchtui.engine.waiting import EXIT_TIMEOUT, wait_for_end

from .completion import complete_batch
from .group import CONTEXT
from .options import DIR_OPTION, JSON_OPTION, Number, scope_of
from .output import echo_json, plain


@click.command("wait", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@click.option(
    "--timeout",
    type=Number("wait"),
    help="Give up after this many seconds (exit 124; the batch goes on) [wait until it ends].",
)
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def wait_cmd(
    ctx: click.Context, batch: str | None, timeout: float | None, output_dir: str | None, as_json: bool
) -> None:
    """Wait until BATCH [default: the latest] ends and exit with its exit code.

    \b
    The code is the one its engine returned: 0 all complete, 1 some failed or skipped,
    3 halted by a policy, 130 stopped or interrupted (resumable). A batch that has ended
    returns at once; one whose engine died (or that never ran) says so and exits 130.
    --timeout S: after S seconds without an end, exit 124 and leave the batch as it is.
    """
    bdir = resolve_batch(batch, scope_of(ctx, output_dir))

    def problem(text: str) -> None:
        click.echo(f"{bdir.batch_id}: {plain(text)} (still waiting: it holds the batch)", err=True)

    end = wait_for_end(bdir, timeout, on_problem=problem)
    if end is None:
        if as_json:
            echo_json({"batch_id": bdir.batch_id, "state": None, "exit_code": EXIT_TIMEOUT, "timed_out": True})
        click.echo(f"{plain(bdir.batch_id)}: still running after {timeout:g} s (--timeout); left as it is", err=True)
        raise SystemExit(EXIT_TIMEOUT)
    if as_json:
        echo_json({"batch_id": bdir.batch_id, "state": end.state, "exit_code": end.exit_code, "timed_out": False})
    click.echo(plain(end.note), err=True)
    raise SystemExit(end.exit_code)


__all__ = ["wait_cmd"]
