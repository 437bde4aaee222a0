"""`serve`: the dashboard in a browser (tui/serve.py), read-only unless --allow-control."""

from __future__ import annotations

import errno
import shlex
import sys

import click

from batchtui.engine.batches import resolve_batch
from batchtui.engine.errors import EXIT_USAGE

from .completion import complete_batch
from .group import CONTEXT
from .inspecting import refuse_newer
from .options import DIR_OPTION, Int, scope_of, theme_of
from .output import fail

DEFAULT_PORT = 8787


@click.command("serve", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@DIR_OPTION
@click.option(
    "--port",
    type=Int(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port to listen on.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback needs --expose.",
)
@click.option(
    "--expose",
    is_flag=True,
    help="Allow --host to be reachable from other machines (anyone who has the URL with its token sees the batch).",
)
@click.option("--allow-control", is_flag=True, help="Let the page's keys pause, stop, retry, skip and resume.")
@click.option("--theme", help="TUI theme.")
@click.pass_context
def serve_cmd(
    ctx: click.Context,
    batch: str | None,
    output_dir: str | None,
    port: int,
    host: str,
    expose: bool,
    allow_control: bool,
    theme: str | None,
) -> None:
    """Serve the dashboard of BATCH (or the browser of every batch when none is given) over
    HTTP, for a browser: the same app as the terminal's, read-only unless --allow-control. Every
    request needs the token in the URL printed at start; /status.json?token=... gives the
    batch's summary as JSON. Needs the extra: pip install 'batchtui[serve]'."""
    try:
        from ..serve import DashboardServer, app_command, is_loopback, new_token
    except ImportError as exc:
        fail(f"serve needs the extra 'serve' ({exc.name or exc} is missing): pip install 'batchtui[serve]'")
    if not is_loopback(host) and not expose:
        fail(
            f"--host {shlex.quote(host)} would serve the dashboard beyond this machine; say so with --expose "
            "(or reach it through an SSH tunnel: ssh -L 8787:127.0.0.1:8787 HOST)",
            EXIT_USAGE,
        )
    scope = scope_of(ctx, output_dir)
    bdir = None
    if batch is not None:
        bdir = resolve_batch(batch, scope)
        refuse_newer(bdir)
    path = bdir.path if bdir is not None else None
    token = new_token()
    shown_host = f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{port}"
    what = f"batch {bdir.batch_id}" if bdir is not None else "every batch"
    mode = "with control (--allow-control)" if allow_control else "read-only"

    def announce() -> None:
        click.echo(f"serving {what}, {mode}:")
        click.echo(f"  {base}/?token={token}")
        click.echo(f"  status: {base}/status.json?token={token}")
        click.echo("Ctrl+C stops serving (the batch's engine is not touched).")
        sys.stdout.flush()

    server = DashboardServer(
        app_command(scope=scope, batch=path, allow_control=allow_control, theme=theme_of(ctx, theme)),
        host=host,
        port=port,
        token=token,
        scope=scope,
        batch=path,
        title=f"batchtui: {bdir.batch_id}" if bdir else "batchtui",
        announce=announce,
    )
    try:
        server.serve()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is in use: choose another with --port")
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")
