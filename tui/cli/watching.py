"""`watch`, and the TUI's launch for every verb that opens it (`run`, `demo`, `resume`, bare
``batchtui``): the app runs, and once the terminal is back, who runs the batch now or its summary.

textual is imported only when the app starts (:func:`launch_tui`), never by a headless path.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from batchtui.engine.batchdir import BatchDir, parse_iso
from batchtui.engine.batches import BatchScope, resolve_batch
from batchtui.engine.capture import terminal_held
from batchtui.engine.errors import EXIT_USAGE, UserError
from batchtui.engine.fmt import clean, shell_line
from batchtui.engine.runner import RunResult, exit_code_for
from batchtui.engine.store.queries import ItemQueries

from .completion import complete_batch
from .group import CONTEXT, in_background, terminal
from .inspecting import refuse_newer
from .options import DIR_OPTION, scope_of, theme_of
from .output import fail, plain
from .summary import finish_output, say_ended


@click.command("watch", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@DIR_OPTION
@click.option("--theme", help="TUI theme.")
@click.pass_context
def watch_cmd(ctx: click.Context, batch: str | None, output_dir: str | None, theme: str | None) -> None:
    """Attach the dashboard to BATCH (a path, an id, a name, or a unique part of an id) [default:
    the latest batch of the output dir, or when it has none the latest registered one]: a running
    engine (here or in another process) or a finished batch. Its keys steer the engine through
    control.jsonl."""
    scope = scope_of(ctx, output_dir)
    bdir = resolve_batch(batch, scope)
    refuse_newer(bdir)
    if in_background():
        fail("watch draws on the terminal: run it in the foreground, not with & (or bring it back with fg)")
    if not terminal():
        fail(f"watch needs a terminal; for a text summary use `{shell_line('batchtui', 'show', bdir.batch_id)}`")
    launch_tui(ctx, output_dir=scope, batch=bdir.path, theme=theme)


def launch_tui(
    ctx: click.Context,
    *,
    output_dir: Path | BatchScope,
    batch: Path | None = None,
    runner: Any = None,
    theme: str | None = None,
    config: Any = None,
) -> NoReturn:
    """Run the Textual app and exit with its return code (``theme``: the verb's --theme flag;
    ``config``: the settings the verb read, whose theme comes after the flags')."""
    obj = ctx.find_root().obj or {}
    theme = theme_of(ctx, theme, config)
    from ..themes import color_system  # imports no textual

    # Textual reads the colour system when imported and when the app is made; the environment
    # is given back then, for the items' processes the engine starts later.
    with color_system(obj.get("color_system")):
        from ..app import BatchtuiApp  # textual: only when the app runs

        app = BatchtuiApp(output_dir=output_dir, batch=batch, runner=runner, theme=theme)
    interrupted = False
    try:
        with terminal_held():  # a --call module's logging handler never writes under the screen
            code = app.run()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        app.stop_engine_after_exit(interrupted=interrupted)
    code = _after_tui(app, code)
    if app.engine_running:
        # The engine's thread is stuck in an item that cannot be stopped (a --call function on
        # the thread executor): its batch went to a background engine, which waits for this
        # process to let go of the lock. The interpreter would wait for that thread: leave.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    # The app leaves a large graph of objects (widgets, styles, caches): the interpreter's last
    # garbage collection of it stands between the terminal coming back and the shell prompt.
    # Nothing of ours in it needs finalizing: the engine has stopped and closed its files, and
    # logging flushes its handlers at exit. So it is frozen out of that collection, unless a
    # user's callable ran in this process: its objects may need that collection to finalize
    # (a buffered file in a cycle, say).
    if runner is None or not _user_code_ran_here(runner):
        gc.freeze()
    raise SystemExit(code or 0)


def _after_tui(app: Any, code: int | None) -> int:
    """Once the TUI is gone, by whatever path: who runs its batch now (pid and the watch
    command), or the batch's summary; and the exit code. With the terminal gone this goes
    to /dev/null (hangup.py): the hand-off's lines are in engine.log."""
    handoff = app.handoff
    if app.engine_error is not None:
        click.echo(f"error: the engine stopped with an error: {clean(str(app.engine_error))}", err=True)
        code = code or (EXIT_USAGE if isinstance(app.engine_error, UserError) else 1)
    elif handoff is not None and handoff.pid is not None:
        code = 0  # the batch goes on: not interrupted
    elif handoff is not None and handoff.error:
        code = EXIT_USAGE
    elif app.runner is not None and app.engine_result is not None and not code:
        code = app.engine_result.exit_code
    path = app.runner.batch.path if app.runner is not None else app.initial_batch
    if path is None:
        return code or 0
    bdir = BatchDir(path)
    if app.engine_result is not None and not bdir.path.is_dir():
        say_ended(app.engine_result)  # its folder went while the engine ran: nothing to read back
        return code or 0
    if handoff is not None and handoff.error:
        click.echo(f"error: batch {bdir.batch_id} was not handed over: {clean(handoff.error)}", err=True)
    if not bdir.path.is_dir():  # deleted or moved while watched (the dashboard said GONE)
        click.echo(f"batch {plain(bdir.batch_id)}: its folder {clean(bdir.path)} is gone (moved or deleted)", err=True)
        return code or 0
    try:
        _tell_who_runs(bdir, handoff)
    except (OSError, ValueError) as exc:  # a damaged batch: the exit must not fail on it
        click.echo(f"batch {bdir.batch_id}: {clean(str(exc))}", err=True)
    return code or 0


def _written_since(log: Path, started_at: str) -> bool:
    """``log`` was written by the engine that holds the batch (since it took it): a background
    engine's. An engine in a dashboard writes none, and an older one is another engine's."""
    try:
        return log.stat().st_mtime >= parse_iso(started_at) - 1.0
    except (OSError, ValueError):
        return False


def _tell_who_runs(bdir: BatchDir, handoff: Any) -> None:
    import psutil  # after the app only (`watch` starts without it)

    where = shell_line("--output-dir", bdir.path.parent)
    holder = bdir.alive()
    if holder is None and handoff is not None and handoff.pid is not None:
        try:  # the hand-off engine may still wait for the lock; then it is the one to watch
            waiting = psutil.Process(handoff.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            waiting = False
        if waiting:
            click.echo(f"batch {plain(bdir.batch_id)}: a background engine (pid {handoff.pid}) is taking it over")
            click.echo(f"  watch:  {shell_line('batchtui', 'watch', bdir.batch_id)} {where}")
            click.echo(f"  log:    {clean(bdir.engine_log)}")
            return
    if holder is not None:
        handed = handoff is not None and handoff.pid == holder.pid
        what = "handed to a background engine" if handed else "run by"
        click.echo(f"batch {plain(bdir.batch_id)}: {what} pid {holder.pid} on {plain(holder.host)}")
        click.echo(f"  watch:  {shell_line('batchtui', 'watch', bdir.batch_id)} {where}")
        click.echo(f"  stop:   {shell_line('batchtui', 'stop', bdir.batch_id)} {where}")
        if handed or _written_since(bdir.engine_log, holder.started_at):
            click.echo(f"  log:    {clean(bdir.engine_log)}")  # not for an engine in another terminal's app
        return
    manifest = bdir.read_manifest()
    with ItemQueries(bdir.items_db) as store:
        counts = store.counts()
    result = RunResult(bdir, manifest.state, counts, manifest.halt_reason, exit_code_for(manifest.state, counts))
    finish_output(result, as_json=False)


def _user_code_ran_here(runner: Any) -> bool:
    """Whether the engine ran a ``--call`` callable in this process (the thread executor)."""
    return bool(runner.spec.kind == "python" and runner.config.resolved_executor("python") == "thread")


__all__ = ["launch_tui", "watch_cmd"]
