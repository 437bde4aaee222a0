"""The batch a bare ``batchtui resume`` takes: the newest one with work left that no engine
runs, in the output dir first, then among the registered batches; and why it was chosen."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .batchdir import BatchDir, parse_iso
from .batches import BatchScope, _in_folder, as_scope, iter_batches
from .errors import UserError
from .files import DamagedFile
from .fmt import shell_line
from .models import ACTIVE_STATES, BatchState, LockInfo, Manifest


@dataclass(frozen=True)
class ResumeChoice:
    """The batch a bare ``batchtui resume`` takes, and why (said on stderr before it runs).

    ``running``: the newer unfinished batches passed over because an engine runs them.
    ``registered``: taken from the registry, the output dir having no resumable batch.
    """

    batch: BatchDir
    manifest: Manifest
    running: tuple[tuple[BatchDir, LockInfo], ...] = ()
    registered: bool = False

    def reason(self, now: float | None = None) -> str:
        """E.g. ``stopped 3 min ago; the newest resumable batch not running``."""
        from .summary import INTERRUPTED, summarize  # summary reads batch dirs: imported here

        m = self.manifest
        if m.state == BatchState.FINISHED:
            what = "finished with items pending again"
        elif summarize(self.batch, now=now).state == INTERRUPTED:  # the one answer to "interrupted?"
            what = f"{m.state.value} when its engine died"
        elif m.state == BatchState.HALTED and m.halt_reason:
            what = f"halted: {m.halt_reason}"
        else:
            what = m.state.value
        stamp = m.ended_at or m.started_at or m.created_at
        if stamp:
            try:
                what += f" {_ago((now or time.time()) - parse_iso(stamp))}"
            except ValueError:
                pass
        why = f"{what}; the newest resumable batch not running"
        if self.registered:
            why += f", in {self.batch.path.parent} (none in the output dir)"
        for batch, info in self.running:
            why += f"; {batch.batch_id} is run by {_who(info)}"
        return why


class NothingToResume(UserError):
    """No batch in the output dir is resumable and free; says who runs the unfinished ones."""


def choose_resumable(where: Path | BatchScope, *, exclude: frozenset[Path] = frozenset()) -> ResumeChoice:
    """The newest batch that has work left (not finished, or finished with items pending again)
    and that no live engine holds; NothingToResume (listing who runs what) when there is none.

    The output dir's batches come first; only when none of them can be resumed (and the scope
    is not ``only`` that folder) are the registered batches elsewhere looked at.

    A batch an engine runs now is passed over, never picked: resuming it could only fail on the
    lock. ``exclude``: batches already tried (one was taken by an engine after it was chosen).
    """
    scope = as_scope(where)
    try:
        return _choose_resumable(_in_folder(scope.output_dir), str(scope.output_dir), exclude)
    except NothingToResume:
        if scope.only:
            raise
    choice = _choose_resumable(iter_batches(scope), scope.describe(), exclude)
    return dataclasses.replace(choice, registered=True)


def _choose_resumable(batches: Iterator[BatchDir], where: str, exclude: frozenset[Path]) -> ResumeChoice:
    running: list[tuple[BatchDir, LockInfo]] = []
    for found in batches:
        batch = BatchDir(found.path.resolve())
        if batch.path in exclude:
            holder = batch.alive()
            if holder is not None:
                running.append((batch, holder))
            continue
        try:
            manifest = batch.read_manifest()
        except (FileNotFoundError, DamagedFile):
            continue
        totals = manifest.totals
        # A finished batch with items pending again (an offline `retry`) is unfinished too.
        if manifest.state == BatchState.FINISHED and not (totals.pending or totals.processing or _has_pending(batch)):
            continue
        holder = batch.alive()
        if holder is not None:
            running.append((batch, holder))
            continue
        return ResumeChoice(batch, manifest, tuple(running))
    if not running:
        raise NothingToResume(f"no unfinished batch in {where}")
    lines = [f"every unfinished batch in {where} is being run by an engine:"]
    lines += [f"  {batch.batch_id}: {_who(info)}" for batch, info in running]
    lines.append(f"watch one with `{shell_line('batchtui', 'watch', running[0][0].batch_id)}`")
    raise NothingToResume("\n".join(lines))


def _who(info: LockInfo) -> str:
    return f"pid {info.pid} on {info.host}" if info.pid else "another process"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _has_pending(batch: BatchDir) -> bool:
    live = batch.read_live()
    return bool(live and live.state in ACTIVE_STATES)


__all__ = ["NothingToResume", "ResumeChoice", "choose_resumable"]
