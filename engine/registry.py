"""The per-user registry of batch directories, so every verb finds every batch from any folder.

The batch directories stay where the user puts them (``--output-dir``, ``./batch_output``); this
is only an index of them: ``batches.jsonl`` in the state dir (``BATCHTUI_STATE_DIR``, else
``$XDG_STATE_HOME/batchtui``, else ``~/.local/state/batchtui``), one JSON line per batch created
with its path, id, name and creation time, never item data.

Writers take an ``flock`` on ``registry.lock`` beside it: an append is one ``write()`` on an
``O_APPEND`` descriptor, and :func:`forget` rewrites the file atomically (tmp, rename), so two
engines creating batches at once both land and a rewrite never drops an append made meanwhile.
The registry is never the truth about a batch (its directory is): a damaged line is skipped with
a warning, and a registry that cannot be written costs a warning, never a command.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson
from pydantic import ConfigDict, ValidationError

from .basemodel import Model
from .files import FILE_MODE, NOFOLLOW, atomic_write_bytes, write_all
from .fmt import count

if TYPE_CHECKING:
    from .batches import BatchScope

REGISTRY_NAME: Final = "batches.jsonl"
LOCK_NAME: Final = "registry.lock"

_warned: set[str] = set()


class RegistryEntry(Model):
    """One line of the registry: a batch directory that was created."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    path: str
    batch_id: str
    name: str = ""
    created_at: str = ""

    @property
    def present(self) -> bool:
        """Its directory is still there (not moved, not deleted)."""
        # os.path, not pathlib: every listing asks it of every registered batch, twice
        folder = self.path
        if os.path.basename(os.path.normpath(folder)) != self.batch_id or not os.path.isdir(folder):
            return False
        return os.path.exists(os.path.join(folder, "manifest.json")) or os.path.exists(
            os.path.join(folder, "manifest.json.bak")
        )


def state_dir() -> Path:
    """Where batchtui keeps per-user state: ``BATCHTUI_STATE_DIR``, else
    ``$XDG_STATE_HOME/batchtui``, else ``~/.local/state/batchtui``."""
    explicit = os.environ.get("BATCHTUI_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg) / "batchtui"
    return Path.home() / ".local" / "state" / "batchtui"


def registry_path() -> Path:
    return state_dir() / REGISTRY_NAME


def _warn(message: str) -> None:
    if message not in _warned:  # once a process: `ls` in a loop does not repeat itself
        _warned.add(message)
        import logging  # here, not at the top: `ls` loads the registry, and logging only to warn

        logging.getLogger("batchtui.engine").warning("warning: %s", message)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def register(path: Path, batch_id: str, name: str, created_at: str) -> None:
    """Record a new batch directory (one appended line). Never raises: a registry that cannot be
    written (a read-only home, a full disk) is a warning, and the batch is still found in its
    output dir."""
    from .batchdir import make_private_dirs  # batchdir imports this module

    entry = RegistryEntry(path=str(path), batch_id=batch_id, name=name, created_at=created_at)
    line = orjson.dumps(entry.model_dump()) + b"\n"
    folder = state_dir()
    try:
        make_private_dirs(folder)
        with _locked(folder):
            fd = os.open(
                folder / REGISTRY_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW | os.O_CLOEXEC, FILE_MODE
            )
            try:
                write_all(fd, line)
            finally:
                os.close(fd)
    except Exception as exc:  # any failure here must not cost the batch
        _warn(f"cannot record batch {batch_id} in the registry {folder / REGISTRY_NAME}: {exc}")


def registered() -> list[RegistryEntry]:
    """Every registered batch, oldest first, one entry per path (the last line for it wins).
    Lines that do not parse are skipped with a warning."""
    path = registry_path()
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:
        _warn(f"cannot read the batch registry {path}: {exc.strerror or exc}")
        return []
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder or a fifo: os.fdopen raises, read blocks
        os.close(fd)
        _warn(f"cannot read the batch registry {path}: not a regular file")
        return []
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    entries: dict[str, RegistryEntry] = {}
    damaged = 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            entry = RegistryEntry.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError):
            damaged += 1
            continue
        entries.pop(entry.path, None)
        entries[entry.path] = entry
    if damaged:
        _warn(f"skipped {count(damaged, 'damaged line')} in the batch registry {path}")
    return list(entries.values())


def gone_batches(where: Path | BatchScope) -> list[RegistryEntry]:
    """Registered batches whose directory was moved or deleted, newest first (for a scope
    ``only`` one folder: those that were in it)."""
    from .batches import as_scope

    scope = as_scope(where)
    folder = os.path.realpath(scope.output_dir)
    gone = [
        e for e in registered() if not e.present and (not scope.only or os.path.realpath(Path(e.path).parent) == folder)
    ]
    return sorted(gone, key=lambda e: e.batch_id, reverse=True)


def forget(paths: Iterable[str]) -> int:
    """Remove the entries of ``paths`` from the registry (rewritten atomically); the number of
    lines removed. Damaged lines go too (they name no batch anyone can find)."""
    gone = set(paths)
    folder = state_dir()
    path = folder / REGISTRY_NAME
    if not gone or not path.exists():
        return 0
    with _locked(folder):
        kept: list[bytes] = []
        removed = 0
        with open(path, "rb") as f:
            for raw in f.read().splitlines():
                try:
                    entry = RegistryEntry.model_validate(orjson.loads(raw))
                except (orjson.JSONDecodeError, ValidationError):
                    continue
                if entry.path in gone:
                    removed += 1
                else:
                    kept.append(raw + b"\n")
        atomic_write_bytes(path, b"".join(kept))
    return removed


__all__ = ["RegistryEntry", "forget", "gone_batches", "register", "registered", "registry_path", "state_dir"]
