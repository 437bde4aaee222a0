"""Keeping the output dir in order: `recover` (rebuild a damaged items.db) and `cleanup`."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

import click

from batchtui.engine.batchdir import BATCH_ID_RE, BatchDir, BatchLock, BatchLocked, has_manifest, parse_iso
from batchtui.engine.batches import iter_batches, resolve_batch
from batchtui.engine.errors import UserError
from batchtui.engine.files import DamagedFile, fsync_dir
from batchtui.engine.models import BatchState, NewerFormat
from batchtui.engine.registry import forget, gone_batches

from .completion import complete_batch
from .group import CONTEXT
from .options import DIR_OPTION, Number, scope_of
from .output import echo_json, plain


@click.command("recover", context_settings=CONTEXT)
@click.argument("batch", shell_complete=complete_batch)
@click.option("--force", is_flag=True, help="Rebuild even when items.db looks healthy.")
@click.option("--no-salvage", is_flag=True, help="Take nothing from the damaged items.db (only the source + results).")
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="What was rebuilt, as JSON on stdout.")
@click.pass_context
def recover_cmd(
    ctx: click.Context, batch: str, force: bool, no_salvage: bool, output_dir: str | None, as_json: bool
) -> None:
    """Rebuild the items.db of BATCH when it is damaged or missing: items from the source, results
    from results.jsonl; the damaged file is kept as items.db.corrupt-<time>. Then `batchtui resume`."""
    from batchtui.engine.recover import recover_batch  # not for `cleanup`: it loads the sources

    bdir = resolve_batch(batch, scope_of(ctx, output_dir))
    result = recover_batch(bdir, force=force, salvage=not no_salvage)
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(result.describe())


@click.command("cleanup", context_settings=CONTEXT)
@click.option(
    "--max-age-days",
    type=Number("max_age_days"),
    default=30,
    show_default=True,
    help="Remove batches whose last activity is older than this.",
)
@click.option("--include-unfinished", is_flag=True, help="Also remove resumable (unfinished) batches.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@DIR_OPTION
@click.pass_context
def cleanup_cmd(
    ctx: click.Context, max_age_days: float, include_unfinished: bool, dry_run: bool, output_dir: str | None
) -> None:
    """Remove old finished batches (never one with a live engine): those `ls` lists, so the
    output dir's and every registered one; with --output-dir, that folder's only. Registered
    batches whose folder was moved or deleted (`gone` in `ls`) are forgotten by the registry."""
    scope = scope_of(ctx, output_dir)
    cutoff = time.time() - max_age_days * 86400
    removed = kept = failed = 0
    gone = gone_batches(scope)
    for entry in gone:
        click.echo(f"{'would forget' if dry_run else 'forgetting'} {entry.batch_id}: {plain(entry.path)} is gone")
    gone_paths = [e.path for e in gone]
    batches = list(iter_batches(scope))
    if not dry_run:  # what a cleanup killed half-way left, out of every listing's sight
        for folder in sorted({scope.output_dir, *(b.path.parent for b in batches)}):
            for left in folder.glob(f"{_REMOVING}*"):
                click.echo(f"finishing the removal of {plain(left.name[len(_REMOVING) :])}")
                shutil.rmtree(left, ignore_errors=True)
    for folder in sorted({scope.output_dir, *(b.path.parent for b in batches)}):
        for path in _stillborn(folder):
            click.echo(
                f"{'would remove' if dry_run else 'removing'} {plain(path.name)}: its creation was killed"
                " before its manifest was written (nothing in it to resume)"
            )
            if not dry_run:
                with contextlib.suppress(BatchLocked, OSError):  # being made again, or gone
                    _remove(BatchDir(path))
    for bdir in batches:
        if bdir.path.is_symlink():
            # Its batch lives elsewhere: never removed through a link (nor the link taken for it).
            click.echo(f"kept {bdir.batch_id}: a symbolic link to {plain(os.readlink(bdir.path))}; not followed")
            kept += 1
            continue
        try:
            manifest = bdir.read_manifest()
            last = parse_iso(manifest.ended_at or manifest.started_at or manifest.created_at)
            finished = manifest.state == BatchState.FINISHED
        except NewerFormat:
            click.echo(f"kept {plain(bdir.batch_id)}: made by a newer batchtui")
            kept += 1
            continue
        except (FileNotFoundError, DamagedFile, ValueError):
            last = bdir.path.stat().st_mtime
            finished = False
        if last > cutoff or bdir.alive() is not None or (not finished and not include_unfinished):
            kept += 1
            continue
        age = (time.time() - last) / 86400
        click.echo(f"{'would remove' if dry_run else 'removing'} {plain(bdir.batch_id)} ({age:.0f} days old)")
        if not dry_run:
            resolved = str(bdir.path.resolve())  # as registered
            try:
                _remove(bdir)
            except BatchLocked as exc:  # an engine took it since it was looked at
                click.echo(f"kept {plain(bdir.batch_id)}: {plain(str(exc))}")
                kept += 1
                continue
            except OSError as exc:  # one batch that cannot go does not stop the others
                click.echo(f"error: cannot remove {bdir.batch_id}: {plain(str(exc))}", err=True)
                failed += 1
                continue
            gone_paths.append(resolved)
        removed += 1
    if not dry_run:
        try:
            forget(gone_paths)
        except (OSError, UserError) as exc:  # the batches are removed; only the index is stale
            click.echo(f"warning: cannot update the batch registry: {plain(str(exc))}", err=True)
    verb = "would remove" if dry_run else "removed"
    forgot = f", {'would forget' if dry_run else 'forgot'} {len(gone)} gone" if gone else ""
    click.echo(
        f"{verb} {removed} batch{'' if removed == 1 else 'es'}, kept {kept}{forgot}"
        + (f", {failed} could not be removed" if failed else ""),
        err=True,
    )
    if failed:
        raise SystemExit(1)


#: A batch being removed is first renamed to this prefix and its id (no listing reads such a
#: name), so a cleanup killed half-way leaves no half batch that reads as resumable.
_REMOVING = ".removing-"


#: What a batch folder holds when its creation was killed before the manifest was written.
_STILLBORN_FILES = re.compile(r"lock|\.manifest\.json\..+\.tmp")
#: How old such a folder must be: one younger may be a creation under way (made, not yet locked).
_STILLBORN_AGE_S = 60.0


def _stillborn(folder: Path) -> list[Path]:
    """The batch folders in ``folder`` whose creation was killed before the manifest was written
    (a kill -9 then): a lock file and a temporary manifest at most, no listing shows them, and
    nothing in them can be resumed. One an engine holds is left to it (:func:`_remove`)."""
    found = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return []
    for path in children:
        try:
            if path.is_symlink() or not path.is_dir() or not BATCH_ID_RE.match(path.name) or has_manifest(path):
                continue
            if time.time() - path.stat().st_mtime < _STILLBORN_AGE_S:
                continue
            if all(_STILLBORN_FILES.fullmatch(name) for name in os.listdir(path)):
                found.append(path)
        except OSError:
            continue
    return sorted(found)


def _remove(bdir: BatchDir) -> None:
    """Remove ``bdir`` all or nothing as the listings see it: under its lock (BatchLocked when an
    engine took it meanwhile), renamed out of sight, then deleted."""
    lock = BatchLock(bdir.lock, engine=False)
    lock.acquire(wait=0)
    hidden = bdir.path.with_name(_REMOVING + bdir.batch_id)
    try:
        if hidden.exists():  # an earlier cleanup's, killed half-way
            shutil.rmtree(hidden)
        os.rename(bdir.path, hidden)
        fsync_dir(bdir.path.parent)
    finally:
        lock.release()
    shutil.rmtree(hidden)


__all__ = ["cleanup_cmd", "recover_cmd"]
