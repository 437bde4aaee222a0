"""Finding batches: where a command looks (:class:`BatchScope`: the output dir and the per-user
registry), in which order (newest first), and a batch by the handle a user gives (a path, an id,
a name, a unique part of an id)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .batchdir import BatchDir, has_manifest, is_batch_dir
from .errors import BatchtuiError, UserError
from .files import DamagedFile
from .fmt import clean

if TYPE_CHECKING:
    from .registry import RegistryEntry


class BatchScope(NamedTuple):
    """Where a command looks for batches.

    ``output_dir``: the configured output dir (``--output-dir``, batchtui.toml,
    ``BATCHTUI_OUTPUT_DIR``, else ``./batch_output``): new batches go there, and a bare
    ``watch`` / ``show`` / ``resume`` takes the latest batch there first. ``only`` (the user gave
    ``--output-dir``): that folder alone; otherwise every batch in the per-user registry
    (:mod:`.registry`) too, wherever it lives.
    """

    output_dir: Path
    only: bool = False

    def describe(self) -> str:
        """Where was looked, for messages."""
        if self.only:
            if not self.output_dir.exists():  # -o given a file to write to, or a typo
                return f"{self.output_dir}, which does not exist (-o/--output-dir is the folder of batches)"
            return str(self.output_dir)
        from .registry import registry_path

        return f"{self.output_dir} or among the batches registered in {registry_path()}"


def as_scope(where: Path | BatchScope) -> BatchScope:
    """A plain folder is that folder alone (the browser of one folder, tests, older callers)."""
    return where if isinstance(where, BatchScope) else BatchScope(where, only=True)


def _created_at(batch: BatchDir) -> str:
    """The manifest's creation time ('' when it cannot be read: such a batch sorts last of its
    second)."""
    try:
        return batch.read_manifest().created_at
    except (OSError, ValueError, BatchtuiError):  # damaged, newer, unreadable: listed all the same
        return ""


def newest_first(batches: list[BatchDir]) -> list[BatchDir]:
    """``batches`` newest first. An id starts with its creation second; batches made within the
    same second (a script, a test) are told apart by their manifests' millisecond times, read
    only for them, so "the latest batch" is the one made last, not the larger random suffix."""
    second: dict[str, int] = {}
    for b in batches:
        second[b.batch_id[:15]] = second.get(b.batch_id[:15], 0) + 1

    def key(b: BatchDir) -> tuple[str, str, str]:
        tie = second[b.batch_id[:15]] > 1
        return (b.batch_id[:15], _created_at(b) if tie else "", b.batch_id)

    return sorted(batches, key=key, reverse=True)


def _in_folder(output_dir: Path) -> Iterator[BatchDir]:
    try:
        names = [e.name for e in os.scandir(output_dir) if e.is_dir()]
    except FileNotFoundError:
        return
    except OSError as exc:  # a file, a folder we may not read, a name too long
        raise UserError(f"cannot list the output dir {output_dir}: {exc.strerror}") from None
    yield from newest_first([BatchDir(output_dir / name) for name in names if is_batch_dir(output_dir / name)])


def iter_batches(where: Path | BatchScope) -> Iterator[BatchDir]:
    """Batch directories, newest first: those in the output dir, and (unless the scope is
    ``only`` that folder) every registered one that still exists, each once."""
    scope = as_scope(where)
    local = list(_in_folder(scope.output_dir))
    if scope.only:
        yield from local
        return
    seen: set[str] = set()
    batches: list[BatchDir] = []
    from .registry import registered

    for batch in (*local, *(BatchDir(Path(e.path)) for e in registered() if e.present)):
        key = os.path.realpath(batch.path)
        if key not in seen:
            seen.add(key)
            batches.append(batch)
    yield from newest_first(batches)  # across folders as within one


def _holds_batch(path: Path) -> bool:
    """Whether ``path`` is a folder with a manifest; False for a name the OS refuses (too long,
    a loop of links, not readable): such an argument is no batch, never a traceback."""
    try:
        return path.is_dir() and has_manifest(path)
    except OSError:
        return False


class AmbiguousBatch(UserError):
    """A BATCH argument that names more than one batch; lists them and how to pick one."""


def _name_of(batch: BatchDir, names: dict[str, str]) -> str:
    if str(batch.path) in names:
        return names[str(batch.path)]
    try:
        return batch.read_manifest().name
    except (FileNotFoundError, DamagedFile, UserError):
        return ""


def _shown(arg: str) -> str:
    return repr(arg if len(arg) <= 80 else arg[:79] + "…")


def find_batch(arg: str, where: Path | BatchScope) -> BatchDir:
    """The one batch ``arg`` names: a path; else, among the batches of ``where``, the full id,
    then a name, then a unique id prefix or a unique part of the 8-hex suffix.

    Each step is taken only when the one before matched nothing, so an exact id or name always
    wins over a part of another id. :class:`AmbiguousBatch` (exit 2) lists the candidates.
    """
    scope = as_scope(where)
    for candidate in (Path(arg), scope.output_dir / arg):
        if _holds_batch(candidate):
            return BatchDir(candidate.resolve())
    from .registry import gone_batches, registered

    batches = list(iter_batches(scope))
    names = {e.path: e.name for e in registered()} if not scope.only else {}
    hexpart = re.fullmatch(r"[0-9a-f]+", arg) is not None
    steps: tuple[tuple[str, Callable[[BatchDir], bool]], ...] = (
        ("id", lambda b: b.batch_id == arg),
        ("name", lambda b: _name_of(b, names) == arg),
        (
            "part of their id",
            lambda b: b.batch_id.startswith(arg) or (hexpart and arg in b.batch_id.rsplit("_", 1)[-1]),
        ),
    )
    for how, matches in steps:
        found = [b for b in batches if matches(b)]
        if len(found) == 1:
            return BatchDir(found[0].path.resolve())
        if found:
            raise AmbiguousBatch(_candidates(arg, how, found, names))
    _refuse_gone(arg, scope, gone_batches(scope))
    raise UserError(
        f"no batch {_shown(arg)}: no such path, and none known by that id, name or part of an id"
        f" (in {scope.describe()})"
    )


def _refuse_gone(arg: str, scope: BatchScope, gone: list[RegistryEntry]) -> None:
    """Refuse a handle that names a registered batch whose folder is gone (moved or deleted),
    by the same handles as a batch that is there (its old path, id, name, a unique part of its
    id), saying where it was; nothing when none matches."""
    spelled = {os.path.abspath(arg), os.path.abspath(scope.output_dir / arg)}
    hexpart = re.fullmatch(r"[0-9a-f]+", arg) is not None
    steps: tuple[Callable[[RegistryEntry], bool], ...] = (
        lambda e: os.path.abspath(e.path) in spelled or e.batch_id == arg,
        lambda e: e.name == arg,
        lambda e: e.batch_id.startswith(arg) or (hexpart and arg in e.batch_id.rsplit("_", 1)[-1]),
    )
    for matches in steps:
        found = [e for e in gone if matches(e)]
        if len(found) == 1:
            e = found[0]
            name = f" ({clean(e.name)})" if e.name else ""
            raise UserError(
                f"batch {e.batch_id}{name}: its folder {clean(e.path)} is gone (moved or deleted); give its"
                " new path, or forget it with `batchtui cleanup`"
            )
        if found:
            lines = [f"{_shown(arg)} matches {len(found)} batches whose folders are gone (moved or deleted):"]
            lines += [f"  {e.batch_id}  {clean(e.name)[:40]:<40} {clean(e.path)}" for e in found[:10]]
            if len(found) > 10:
                lines.append(f"  ... and {len(found) - 10} more")
            lines.append("give the new path of the one you mean, or forget them with `batchtui cleanup`")
            raise AmbiguousBatch("\n".join(lines))


def _candidates(arg: str, how: str, found: list[BatchDir], names: dict[str, str]) -> str:
    from .summary import summarize  # summary reads batch dirs: imported here

    lines = [f"{_shown(arg)} matches {len(found)} batches by {how}:"]
    for batch in found[:10]:
        state = summarize(batch).state
        name = clean(_name_of(batch, names))[:40]
        lines.append(f"  {batch.batch_id}  {state:<11} {name:<40} {clean(str(batch.path.parent))}")
    if len(found) > 10:
        lines.append(f"  ... and {len(found) - 10} more")
    lines.append("pick one by its full id (or more of it), or by its path")
    return "\n".join(lines)


def latest_batch(where: Path | BatchScope) -> BatchDir:
    """The newest batch in the output dir; when it has none (and the scope is not ``only`` it),
    the newest registered one."""
    scope = as_scope(where)
    for batch in _in_folder(scope.output_dir):
        return BatchDir(batch.path.resolve())
    if not scope.only:
        for batch in iter_batches(scope):
            return BatchDir(batch.path.resolve())
    raise UserError(f"no batch in {scope.describe()}")


def resolve_batch(arg: str | None, where: Path | BatchScope, *, unfinished: bool = False) -> BatchDir:
    """A batch by path, id, name or part of an id (:func:`find_batch`), or (no arg) the latest
    one (:func:`latest_batch`).

    With ``unfinished`` and no arg: the newest batch that is resumable and that no engine runs
    now (:func:`.resumable.choose_resumable`, which also says why it chose it).
    """
    if arg == "":  # an unset shell variable, most often: never read as "the latest"
        raise UserError("the batch given is empty: give a batch id, path or name, or none for the latest")
    if arg:
        return find_batch(arg, where)
    if unfinished:
        from .resumable import choose_resumable  # it reads manifests and summaries

        return choose_resumable(where).batch
    return latest_batch(where)
