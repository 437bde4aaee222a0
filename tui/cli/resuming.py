"""`resume`: the plan (engine/resume.py decides which batch, its lock, the config, what changes),
then what the CLI does with it: the summary of a batch with nothing to do, retry-failed, the
preflight, and the engine (in the TUI, headless, or detached).

The TUI's hand-off engine is a ``batchtui resume --headless`` too (hidden options
``--engine-action``, ``--overrides-json``, ``--lock-wait``; see tui/launch.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from typing import Any

import click

from batchtui.engine.client import invalid_note
from batchtui.engine.fmt import count
from batchtui.engine.resume import plan_resume
from batchtui.engine.runner import RunResult, exit_code_for

from .completion import complete_batch
from .group import CONTEXT, dashboard_here
from .options import (
    COMMON_OPTIONS,
    OPERATIONAL_OPTIONS,
    Number,
    apply,
    collect_flags,
    note_config_file,
    note_unused_theme,
    scope_of,
)
from .output import gate, say
from .summary import finish_output, run_headless, start_detached
from .watching import launch_tui


@click.command("resume", context_settings=CONTEXT)
@click.argument("batch", required=False, shell_complete=complete_batch)
@click.option("--retry-failed", is_flag=True, help="Put failed items back to pending first.")
@click.option(
    "--rescan", is_flag=True, help="Read the batch's sources again first: new keys run, missing ones are reported."
)
@click.option("--drop-missing", is_flag=True, help="With --rescan: skip the items no longer in the source.")
@click.option("--engine-action", type=click.Choice(["run", "resume"]), default="resume", hidden=True)
@click.option("--overrides-json", hidden=True)
@click.option("--lock-wait", type=Number("lock_wait"), hidden=True)
@click.option("--held-lock", hidden=True)  # FD[,DIRFD]: the lock a --detach hands to this engine
@click.option("--ready-fd", type=int, hidden=True)  # written to once this engine holds the batch
@click.option("--start-paused", is_flag=True, hidden=True)  # a TUI's hand-off of a paused batch
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def resume_cmd(
    ctx: click.Context,
    /,
    batch: str | None,
    retry_failed: bool,
    rescan: bool,
    drop_missing: bool,
    config_file: str | None,
    headless: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Resume BATCH (a path, an id, a name, or a unique part of an id) [default: the newest
    unfinished batch that no engine runs now in the output dir, or when it has none among the
    registered batches (made in any folder); it says which, where and why].

    The stored config is used; operational options given here (workers, rate, timeout,
    thresholds...) override it and are recorded in the manifest's history.

    --rescan reads the sources again (the one the batch was made from and those `add` gave):
    keys not in the batch yet run after its pending items, in source order; the keys that
    disappeared are reported, and skipped with --drop-missing. Stdin cannot be read again.
    """
    detach = bool(kwargs.pop("detach", False))
    note_unused_theme(ctx, headless=headless, as_json=as_json, detach=detach)
    engine_action = str(kwargs.pop("engine_action", "resume"))
    overrides_json = kwargs.pop("overrides_json", None)
    lock_wait = kwargs.pop("lock_wait", None)
    held_lock = _descriptors(kwargs.pop("held_lock", None))
    ready_fd = kwargs.pop("ready_fd", None)
    start_paused = bool(kwargs.pop("start_paused", False))
    out = scope_of(ctx, kwargs.get("output_dir"))
    flags = {k: v for k, v in collect_flags(kwargs, ctx).items() if k != "output_dir"}
    if overrides_json:
        flags.update(json.loads(overrides_json))
    # The engine's lock is taken before the batch is read and held until the engine ends (the
    # runner gets it), so a batch another engine runs fails here, before anything else, with
    # who runs it; not later as a toast in a TUI that shows it running. With --detach the
    # engine is another process: it inherits the lock (tui/launch.py), never free between.
    plan = plan_resume(
        out,
        batch,
        flags=flags,
        config_file=config_file,
        retry_failed=retry_failed,
        rescan=rescan,
        drop_missing=drop_missing,
        lock_wait=lock_wait,
        inherited_lock=held_lock,
        on_file=note_config_file,
        say=say,
        detach=detach,
    )
    if ready_fd is not None:
        _ready(ready_fd)
    if not plan.nothing_to_do:  # (a rescan still to read is something to do)
        try:
            # The checks first: a resume they refuse (the module no longer imports, say) changes
            # nothing. Before them, a rescan added the new keys and a retry requeued the failed
            # items (their errors gone from the errors view) for a command that did not run.
            gate(plan.preflight())
            plan = plan.rescanned(say)
        except BaseException:
            plan.release()
            raise
    bdir, counts, manifest = plan.batch, plan.counts, plan.manifest
    if plan.nothing_to_do:
        try:
            if plan.lock is not None:
                for note in plan.repair_results():
                    say(note)
        finally:
            plan.release()  # this process may go on (the CLI called in another program, the tests)
        say(f"batch {bdir.batch_id} is finished; nothing to resume.")
        code = exit_code_for(manifest.state, counts)
        finish_output(RunResult(bdir, manifest.state, counts, manifest.halt_reason, code), as_json)
        raise SystemExit(code)
    requeued = 0
    try:
        if retry_failed:
            requeued = plan.requeue_failed()
            say(f"requeued {count(requeued, 'failed item')}{invalid_note(plan.left_failed())}")
    except BaseException:
        plan.release()
        raise
    if detach:
        start_detached(bdir, action="resume", as_json=as_json, overrides=plan.overrides, lock=plan.lock)
        raise SystemExit(0)
    # The plan's counts are from before the requeue: those items are to do again.
    say(f"resuming batch {bdir.batch_id}: {counts.finished - requeued}/{counts.total} done")
    if not headless and not as_json and dashboard_here(bdir.batch_id):
        launch_tui(
            ctx,
            output_dir=bdir.path.parent,
            runner=plan.runner(engine_action, paused=start_paused),
            theme=kwargs.get("theme"),
            config=plan.config,
        )
    result = run_headless(plan.runner(engine_action, handle_signals=True, paused=start_paused), as_json)
    raise SystemExit(result.exit_code)


def _ready(fd: int) -> None:
    """Tell the ``--detach`` that started this engine that it holds the batch (tui/launch.py);
    a descriptor that is no pipe of ours (below 3, or not a pipe) is left alone."""
    try:
        if fd < 3 or not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
    except OSError:
        return
    with contextlib.suppress(OSError):  # the --detach is gone (EPIPE): nobody waits
        os.write(fd, b".")
    with contextlib.suppress(OSError):
        os.close(fd)


def _descriptors(value: str | None) -> tuple[int, int | None] | None:
    """``--held-lock FD[,DIRFD]``; None when not given or not numbers (then the lock is taken)."""
    if not value:
        return None
    try:
        fds = [int(part) for part in value.split(",")]
    except ValueError:
        return None
    if len(fds) not in (1, 2):
        return None
    return fds[0], (fds[1] if len(fds) == 2 else None)


__all__ = ["resume_cmd"]
